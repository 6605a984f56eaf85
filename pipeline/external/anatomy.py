"""The external family's subject: arteries, veins and aneurysm domes in a head frame.

Head frame: mm, +x the subject's Left, +y Posterior, +z Superior, origin at the centre of
the brain (not at the circle of Willis). Each vessel is a centre line through anatomical
way-points, densely resampled, made tortuous by two perpendicular sinusoids and smoothed
along its length; its radius tapers exponentially. Aneurysms are ellipsoidal domes on a
vessel wall with an adjustable neck, sometimes with blebs or a second lobe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from pipeline.labels import LOCATIONS

SAMPLE_MM = 0.25  # centre-line sampling: the rasteriser takes the nearest samples


@dataclass
class Vessel:
    name: str
    points: np.ndarray  # (n, 3) head mm
    radii: np.ndarray  # (n,) mm
    location: str | None
    kind: str = "artery"  # "artery" or "vein"


@dataclass
class Site:
    """A place for an aneurysm: a wall point, the direction its dome grows, the parent's radius."""

    location: str
    point: np.ndarray
    direction: np.ndarray
    parent_radius: float


@dataclass
class Dome:
    """An ellipsoidal aneurysm dome: ``axes`` (semi-axes, mm) along the columns of ``frame``
    (the first is the growth direction); ``blebs`` are (centre, radius) spheres."""

    location: str
    centre: np.ndarray
    axes: np.ndarray
    frame: np.ndarray
    blebs: list[tuple[np.ndarray, float]] = field(default_factory=list)

    @property
    def diameter(self) -> float:
        return float(2 * self.axes.max())


@dataclass
class Subject:
    vessels: list[Vessel]
    sites: dict[str, list[Site]]
    circle: np.ndarray  # centre of the circle of Willis, head mm
    size: float  # head size factor
    mimics: list[Dome] = field(default_factory=list)  # dome-like shapes that are no aneurysm
    notes: list[str] = field(default_factory=list)


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def orthonormal_frame(direction: np.ndarray) -> np.ndarray:
    """Columns: ``direction`` and two unit vectors perpendicular to it."""
    d = unit(direction)
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = unit(np.cross(d, helper))
    return np.column_stack([d, u, np.cross(d, u)])


def vessel_path(way_points, rng: np.random.Generator, tortuosity: float) -> np.ndarray:
    """A smooth tortuous centre line through the first and last of ``way_points``."""
    way = np.asarray(way_points, dtype=np.float64)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(way, axis=0), axis=1))])
    s = np.append(np.arange(0.0, arc[-1], SAMPLE_MM), arc[-1])
    points = np.column_stack([np.interp(s, arc, way[:, k]) for k in range(3)])
    t = s / max(arc[-1], 1e-6)
    if tortuosity > 0 and arc[-1] > 8:
        frame = orthonormal_frame(way[-1] - way[0])
        envelope = np.sin(np.pi * t)[:, None]
        wave = (np.sin(2 * np.pi * s / rng.uniform(14, 36) + rng.uniform(0, 2 * np.pi))[:, None] * frame[:, 1]
                + 0.6 * np.sin(2 * np.pi * s / rng.uniform(10, 28) + rng.uniform(0, 2 * np.pi))[:, None] * frame[:, 2])
        points = points + tortuosity * rng.uniform(0.5, 1.5) * envelope * wave
    smooth = gaussian_filter1d(points, sigma=2.0 / SAMPLE_MM, axis=0, mode="nearest")
    # pin both ends where they were: branches stay attached to their parents
    smooth += (1 - t)[:, None] * (way[0] - smooth[0]) + t[:, None] * (way[-1] - smooth[-1])
    return smooth


def taper(n: int, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    ripple = 1.0 + 0.06 * gaussian_filter1d(rng.normal(size=n), sigma=max(n / 12, 1.0), mode="nearest") * np.sqrt(n / 12)
    return start * (end / start) ** t * np.clip(ripple, 0.85, 1.15)


# Way-points of the left-side arteries relative to the circle of Willis (mm); the right side
# mirrors x. Names: segment, location, (start radius, end radius) in mm.
LEFT_ARTERIES = {
    "ICA cervical": ([(21, 20, -85), (22, 19, -60), (21, 18, -42)], "Infraclinoid Internal Carotid Artery", (2.4, 2.3)),
    "ICA petrous": ([(21, 18, -42), (22, 12, -36), (18, 2, -33)], "Infraclinoid Internal Carotid Artery", (2.3, 2.2)),
    "ICA cavernous": ([(18, 2, -33), (17, -6, -30), (16, -14, -24), (15, -16, -16), (14, -11, -10)],
                      "Infraclinoid Internal Carotid Artery", (2.2, 2.0)),
    "ICA supraclinoid": ([(14, -11, -10), (14, -6, -5), (14, -2, 0)], "Supraclinoid Internal Carotid Artery", (2.0, 1.8)),
    "PComm": ([(14, -5, -4), (11, 6, -4), (8, 14, -3)], "Posterior Communicating Artery", (0.7, 0.6)),
    "MCA M1": ([(14, -2, 0), (24, -3, 1), (33, -2, 3), (38, 0, 4)], "Middle Cerebral Artery", (1.45, 1.3)),
    "MCA M2 superior": ([(38, 0, 4), (44, -2, 14), (50, 4, 28), (54, 14, 42)], "Middle Cerebral Artery", (1.0, 0.7)),
    "MCA M2 inferior": ([(38, 0, 4), (46, 5, 2), (54, 18, -2), (58, 32, 2)], "Middle Cerebral Artery", (0.95, 0.7)),
    "ACA A1": ([(14, -2, 0), (9, -10, 3), (1.5, -17, 5.5)], "Anterior Cerebral Artery", (1.05, 0.95)),
    "ACA A2": ([(1.5, -17, 5.5), (2, -22, 14), (3, -30, 28), (3, -30, 46), (3, -12, 62), (3, 14, 68)],
               "Anterior Cerebral Artery", (0.95, 0.6)),
    "vertebral": ([(12, 40, -100), (14, 36, -78), (9, 32, -62), (3, 27, -50), (0, 25, -46)],
                  "Other Posterior Circulation", (1.6, 1.5)),
    "PCA P1": ([(0, 16, -6), (5, 15, -5), (8, 14, -3)], "Other Posterior Circulation", (1.05, 1.0)),
    "PCA P2": ([(8, 14, -3), (18, 20, -2), (25, 36, 2), (22, 56, 8), (14, 70, 12)], "Other Posterior Circulation",
               (1.0, 0.65)),
    "SCA": ([(0, 18, -14), (9, 20, -15), (17, 28, -18), (20, 42, -22)], "Other Posterior Circulation", (0.75, 0.55)),
    "PICA": ([(9, 32, -62), (16, 42, -66), (12, 56, -60)], "Other Posterior Circulation", (0.65, 0.5)),
}
MIDLINE_ARTERIES = {
    "basilar": ([(0, 25, -46), (0, 22, -32), (0, 19, -18), (0, 16, -6)], "Other Posterior Circulation", (1.6, 1.35)),
    "AComm": ([(-1.5, -17, 5.5), (0, -17.5, 6), (1.5, -17, 5.5)], "Anterior Communicating Artery", (0.75, 0.75)),
}
ATTACH = {"PComm": "ICA supraclinoid", "SCA": "basilar", "PICA": "vertebral"}  # branch -> parent segment
# Aneurysm sites: (location without side, segment, position along it 0-1, growth direction in the
# left side's frame or None for "along the segment's end").
SITES = [
    ("Infraclinoid Internal Carotid Artery", "ICA cavernous", 0.35, (0.8, -0.3, 0.5)),
    ("Infraclinoid Internal Carotid Artery", "ICA cavernous", 0.6, (0.6, -0.7, 0.1)),
    ("Infraclinoid Internal Carotid Artery", "ICA petrous", 0.7, (0.3, -0.2, 0.9)),
    ("Supraclinoid Internal Carotid Artery", "ICA supraclinoid", 0.15, (0.1, -0.5, 0.85)),
    ("Supraclinoid Internal Carotid Artery", "ICA supraclinoid", 1.0, (0.2, 0.1, 1.0)),
    ("Posterior Communicating Artery", "PComm", 0.0, (0.5, 0.6, -0.6)),
    ("Middle Cerebral Artery", "MCA M1", 1.0, None),
    ("Middle Cerebral Artery", "MCA M1", 0.45, (0.0, -0.6, 0.8)),
    ("Anterior Cerebral Artery", "ACA A2", 0.42, (0.3, -0.9, 0.3)),
    ("Anterior Cerebral Artery", "ACA A1", 0.4, (0.1, -0.3, 0.95)),
    ("Anterior Communicating Artery", "AComm", 0.5, (0.0, -0.75, 0.65)),
    ("Basilar Tip", "basilar", 1.0, None),
    ("Other Posterior Circulation", "SCA", 0.05, (0.5, -0.3, -0.8)),
    ("Other Posterior Circulation", "PICA", 0.05, (0.6, 0.4, -0.7)),
    ("Other Posterior Circulation", "basilar", 0.15, (0.2, -0.95, 0.1)),
    ("Other Posterior Circulation", "PCA P2", 0.3, (0.4, 0.2, 0.9)),
]


def sided(location: str, side: int) -> str:
    if location in ("Anterior Communicating Artery", "Basilar Tip", "Other Posterior Circulation"):
        return location
    return ("Left " if side > 0 else "Right ") + location


def build_subject(rng: np.random.Generator, keep: set[str] = frozenset()) -> Subject:
    """One subject's vessels, aneurysm sites and mimics.

    Args:
        rng: the only source of randomness.
        keep: locations that must stay available for an aneurysm (no variant removes them).
    """
    size = rng.uniform(0.92, 1.08)
    circle = np.array([0.0, -6.0, -24.0]) * size + rng.normal(0, 2.0, 3)
    calibre = rng.lognormal(0.0, 0.12)
    tortuosity = rng.uniform(0.3, 2.5)
    jitter = rng.uniform(1.0, 3.0)
    vessels: list[Vessel] = []
    by_name: dict[str, Vessel] = {}
    notes: list[str] = []
    dominant = rng.choice([-1, 0, 1], p=[0.25, 0.5, 0.25])  # vertebral dominance
    moved: dict[tuple[float, ...], np.ndarray] = {}  # shared way-points move together

    def place(point, side):
        key = (float(point[0]) * side, float(point[1]), float(point[2]))
        if key not in moved:
            moved[key] = circle + np.array(key) * size + rng.normal(0, jitter, 3)
        return moved[key]

    def add(name, way, location, radii, side, kind="artery", scale=1.0):
        way = [place(p, side) for p in way]
        parent = by_name.get(f"{ATTACH.get(name.rsplit(' ', 1)[0], '')} {name.rsplit(' ', 1)[-1]}") or by_name.get(
            ATTACH.get(name.rsplit(" ", 1)[0], ""))
        if parent is not None:  # a branch leaves its parent's actual wall, wherever the parent went
            way[0] = parent.points[np.argmin(np.linalg.norm(parent.points - way[0], axis=1))]
        points = vessel_path(way, rng, tortuosity)
        start, end = (r * calibre * scale for r in radii)
        vessel = Vessel(name, points, taper(len(points), start, end, rng), location, kind)
        vessels.append(vessel)
        by_name[name] = vessel
        return vessel

    for name, (way, location, radii) in MIDLINE_ARTERIES.items():
        add(name, way, location, radii, +1)
    for side in (+1, -1):
        tag = "left" if side > 0 else "right"
        for name, (way, location, radii) in LEFT_ARTERIES.items():
            scale = 1.0
            if name == "vertebral" and dominant:
                scale = 1.25 if dominant == side else 0.7
            if name == "ACA A1" and rng.random() < 0.1 and sided(location, side) not in keep:
                scale = 0.45
                notes.append(f"hypoplastic {tag} A1")
            if name == "PComm":
                if rng.random() < 0.12 and sided(location, side) not in keep:
                    notes.append(f"absent {tag} PComm")
                    continue
                scale = rng.uniform(0.7, 1.3)
            add(f"{name} {tag}", way, sided(location, side), radii, side, scale=scale)
        if rng.random() < 0.3:
            add(f"MCA M2 middle {tag}", [(38, 0, 4), (50, 8, 12), (57, 22, 18)], sided("Middle Cerebral Artery", side),
                (0.85, 0.6), side)
            notes.append(f"{tag} MCA trifurcation")

    sites = {name: [] for name in LOCATIONS}
    for location, segment, where, direction in SITES:
        for side in ((+1, -1) if sided(location, 1) != location else (+1,)):
            vessel = by_name.get(f"{segment} {'left' if side > 0 else 'right'}") or by_name.get(segment)
            if vessel is None:
                continue
            k = int(round(where * (len(vessel.points) - 1)))
            if direction is None:  # a terminal bifurcation: the dome continues the parent's course
                grow = unit(vessel.points[-1] - vessel.points[max(0, len(vessel.points) - 20)])
            else:
                grow = unit(np.array(direction) * np.array([side, 1, 1]) + rng.normal(0, 0.15, 3))
            sites[sided(location, side)].append(Site(sided(location, side), vessel.points[k].copy(), grow,
                                                     float(vessel.radii[k])))

    branches(vessels, rng)
    veins(vessels, circle, size, rng)
    mimics = junction_mimics(sites, rng)
    return Subject(vessels, sites, circle, size, mimics, notes)


def branches(vessels: list[Vessel], rng: np.random.Generator) -> None:
    """Cortical branches, two generations, radii by Murray's law (r_child = 0.79 r_parent)."""
    parents = [v for v in vessels if v.name.split()[0] in ("MCA", "ACA", "PCA") and v.name.split()[1] in ("M2", "A2", "P2")]
    for parent in parents:
        for _ in range(int(rng.integers(2, 5))):
            k = int(rng.uniform(0.35, 1.0) * (len(parent.points) - 1))
            _grow(vessels, parent.points[k], parent.radii[k] * 0.79, rng, generation=0)


def _grow(vessels, start, radius, rng, generation):
    outward = unit(start - np.array([0.0, 5.0, 8.0]) + rng.normal(0, 12, 3))
    length = rng.uniform(12, 28) * (0.7 ** generation)
    way = [start, start + outward * length * 0.5 + rng.normal(0, 3, 3), start + outward * length]
    way = [_inside(p) for p in way]
    points = vessel_path(way, rng, tortuosity=rng.uniform(0.5, 2.0))
    radii = taper(len(points), max(radius, 0.35), max(radius * 0.6, 0.3), rng)
    vessels.append(Vessel(f"branch g{generation}", points, radii, None))
    if generation == 0 and rng.random() < 0.6:
        _grow(vessels, points[len(points) // 2], radius * 0.79, rng, generation + 1)


def _inside(point, axes=(62.0, 80.0, 66.0), centre=(0.0, 2.0, 6.0)) -> np.ndarray:
    q = (np.asarray(point) - centre) / axes
    norm = np.sqrt((q**2).sum())
    return point if norm < 0.9 else np.asarray(centre) + (np.asarray(point) - centre) * 0.9 / norm


def veins(vessels: list[Vessel], circle: np.ndarray, size: float, rng: np.random.Generator) -> None:
    """Dural sinuses along the inner table, deep veins, and the cavernous sinuses beside the siphons."""
    s = size

    def vein(name, way, radius):
        points = vessel_path([np.array(p, float) * s for p in way], rng, tortuosity=0.3)
        vessels.append(Vessel(name, points, np.full(len(points), radius * rng.uniform(0.85, 1.2)), None, "vein"))

    vein("superior sagittal sinus", [(0, -72, 20), (0, -50, 58), (0, -5, 76), (0, 45, 66), (0, 78, 20), (0, 84, -8)], 2.8)
    vein("straight sinus", [(0, 30, 12), (0, 55, 2), (0, 82, -8)], 2.0)
    for side in (+1, -1):
        vein(f"transverse sinus {side}", [(0, 84, -8), (side * 35, 78, -16), (side * 55, 52, -26),
                                          (side * 48, 32, -46), (side * 40, 28, -78)], 3.0)
        vein(f"internal cerebral vein {side}", [(side * 3, -2, 8), (side * 3, 16, 10), (0, 30, 12)], 1.1)
        # cavernous sinus: a venous plexus around the cavernous carotid
        centre = circle + np.array([side * 17.0, -8.0, -26.0]) * s
        vein(f"cavernous sinus {side}", [centre + (0, -9, -1), centre, centre + (0, 8, 1)], rng.uniform(3.5, 5.5))


def junction_mimics(sites: dict[str, list[Site]], rng: np.random.Generator) -> list[Dome]:
    """Junctional dilatations and infundibula: round widenings no wider than 1.4 times their vessel."""
    mimics = []
    for location in ("Left Middle Cerebral Artery", "Right Middle Cerebral Artery", "Basilar Tip",
                     "Left Posterior Communicating Artery", "Right Posterior Communicating Artery"):
        for site in sites[location][:1]:
            if rng.random() < 0.35:
                radius = site.parent_radius * rng.uniform(1.05, 1.35)
                mimics.append(Dome(location, site.point + site.direction * site.parent_radius * 0.3,
                                   np.array([radius, radius * 0.9, radius * 0.9]), orthonormal_frame(site.direction)))
    return mimics


def grow_dome(site: Site, diameter: float, rng: np.random.Generator) -> Dome:
    """An aneurysm of greatest diameter ``diameter`` at ``site``: elongated or round, a narrow or
    broad neck (how deep the dome sits in the wall), sometimes blebs or a second lobe."""
    elongation = rng.uniform(1.0, 1.6)
    long_axis = diameter / 2
    across = long_axis / elongation
    frame = orthonormal_frame(site.direction)
    depth = rng.uniform(0.7, 1.0)  # 1: narrow neck, the dome sits on the wall; 0.7: broad neck
    centre = site.point + site.direction * (0.5 * site.parent_radius + depth * long_axis)
    axes = np.array([long_axis, across, across * rng.uniform(0.8, 1.0)])
    blebs = []
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 3))):
            direction = unit(site.direction + rng.normal(0, 0.6, 3))
            blebs.append((centre + direction * long_axis * 0.85, long_axis * rng.uniform(0.25, 0.45)))
    elif rng.random() < 0.2:  # bilobed
        direction = unit(site.direction + rng.normal(0, 0.8, 3))
        blebs.append((centre + direction * across * 0.7, across * rng.uniform(0.6, 0.85)))
    return Dome(site.location, centre, axes, frame, blebs)
