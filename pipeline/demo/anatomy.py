"""Phantom anatomy: head compartments and the intracranial arteries, in a head frame.

The head frame is DICOM-like (mm, +x patient's Left, +y Posterior, +z Superior) with
its origin at the centre of the Circle of Willis. A series places the head in the
scanner with a rigid transform (`HeadPose`), so anatomy is always expressed in patient
LPS coordinates: a "Left Middle Cerebral Artery" lies at positive x whatever the
acquisition plane.

Every artery is a smooth tube (centre line + radius) tied to one of the 13 RSNA
locations, and offers *sites* where a saccular aneurysm can sit: bifurcations (the
dome points along the parent vessel, away from the branches) and walls (the dome
points sideways).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.labels import LOCATIONS

STEP_MM = 0.7  # centre-line sampling

LEFT, RIGHT = +1, -1


@dataclass
class Tube:
    """A vessel: centre line ``points`` (n, 3) mm and ``radii`` (n,) mm."""

    name: str
    points: np.ndarray
    radii: np.ndarray
    location: str | None = None
    kind: str = "artery"  # or "vein"


@dataclass
class Site:
    """Where an aneurysm may grow: a point on a vessel and the direction its dome points."""

    location: str
    point: np.ndarray
    direction: np.ndarray
    vessel_radius: float
    kind: str  # "bifurcation" or "wall"


@dataclass
class Ellipsoid:
    """An ellipsoidal compartment in the head frame (optionally rotated about z)."""

    centre: tuple[float, float, float]
    axes: tuple[float, float, float]
    yaw_deg: float = 0.0


@dataclass
class Head:
    """Everything a phantom is made of, in the head frame."""

    tubes: list[Tube]
    sites: dict[str, list[Site]]
    bulges: list[tuple[np.ndarray, float]] = field(default_factory=list)  # mimics: (centre, radius)
    variants: list[str] = field(default_factory=list)
    mimics: list[str] = field(default_factory=list)
    calcifications: list[tuple[np.ndarray, float]] = field(default_factory=list)  # off the vessels: (centre, radius)
    bones: list["Ellipsoid"] = field(default_factory=list)  # skull-base bone beyond SKULL_BASE, beside the arteries


# Head compartments (mm). The skull is the shell between SKULL_OUTER and SKULL_INNER.
HEAD_CENTRE = (0.0, 8.0, 18.0)
SCALP = Ellipsoid(HEAD_CENTRE, (74.0, 94.0, 86.0))
SKULL_OUTER = Ellipsoid(HEAD_CENTRE, (69.0, 89.0, 81.0))
SKULL_INNER = Ellipsoid(HEAD_CENTRE, (63.0, 83.0, 75.0))
BRAIN = Ellipsoid(HEAD_CENTRE, (61.0, 81.0, 73.0))
CSF_SPACES = [
    Ellipsoid((12.0, 4.0, 34.0), (6.0, 24.0, 9.0), -8.0),  # left lateral ventricle
    Ellipsoid((-12.0, 4.0, 34.0), (6.0, 24.0, 9.0), 8.0),  # right lateral ventricle
    Ellipsoid((0.0, 10.0, 16.0), (2.5, 12.0, 8.0)),  # third ventricle
    Ellipsoid((0.0, 4.0, -1.0), (20.0, 20.0, 7.0)),  # suprasellar / basal cisterns around the circle
    Ellipsoid((36.0, -1.0, 5.0), (20.0, 6.0, 5.0), 10.0),  # left Sylvian fissure
    Ellipsoid((-36.0, -1.0, 5.0), (20.0, 6.0, 5.0), -10.0),  # right Sylvian fissure
]
SKULL_BASE = [
    Ellipsoid((27.0, 14.0, -24.0), (24.0, 7.0, 7.0), 40.0),  # left petrous ridge
    Ellipsoid((-27.0, 14.0, -24.0), (24.0, 7.0, 7.0), -40.0),  # right petrous ridge
    Ellipsoid((0.0, -6.0, -25.0), (16.0, 10.0, 5.0)),  # sphenoid body, below the cavernous carotids
    Ellipsoid((0.0, 40.0, -45.0), (30.0, 25.0, 5.0)),  # occipital floor of the posterior fossa
]


# --------------------------------------------------------------------------------------
# Centre lines


def catmull_rom(control: np.ndarray, step: float = STEP_MM) -> np.ndarray:
    """A smooth curve through ``control`` points, resampled every ``step`` mm."""
    control = np.asarray(control, dtype=np.float64)
    padded = np.vstack([2 * control[0] - control[1], control, 2 * control[-1] - control[-2]])
    dense = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1 : i + 3]
        t = np.linspace(0.0, 1.0, 24, endpoint=False)[:, None]
        dense.append(
            0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    dense.append(control[-1:])
    curve = np.vstack(dense)
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    samples = np.linspace(0.0, length[-1], max(2, int(np.ceil(length[-1] / step)) + 1))
    return np.column_stack([np.interp(samples, length, curve[:, k]) for k in range(3)])


def _tube(name, control, radius, location, rng, wobble, end_radius=None, kind="artery") -> Tube:
    control = np.array(control, dtype=np.float64)
    wobble = max(wobble, 0.0)
    if wobble > 0 and len(control) > 2:
        control[1:-1] += rng.normal(0.0, wobble, size=control[1:-1].shape)
    points = catmull_rom(control)
    end_radius = radius if end_radius is None else end_radius
    radii = np.linspace(radius, end_radius, len(points))
    return Tube(name, points, radii, location, kind)


def _mirror(points, side: int) -> np.ndarray:
    points = np.array(points, dtype=np.float64)
    points[:, 0] *= side
    return points


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _perpendicular(tangent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    random = rng.normal(size=3)
    random -= (random @ tangent) * tangent
    return _unit(random)


# --------------------------------------------------------------------------------------
# The arteries


def build_head(rng: np.random.Generator, keep: set[str] = frozenset(), calibre: float = 1.0,
               randomised: bool = False) -> Head:
    """Draw one subject's arteries, variants and mimics.

    Args:
        rng: the only source of randomness.
        keep: locations that must stay available for an aneurysm (no variant removes them).
        calibre: every artery's radius times this (a controlled shift; veins keep theirs).
        randomised: draw calibre and tortuosity from the wide ranges of domain randomisation.
    """
    scale = rng.uniform(*((0.75, 1.3) if randomised else (0.88, 1.12))) * calibre  # this subject's calibre
    wobble = rng.uniform(*((0.2, 2.6) if randomised else (0.4, 1.6)))  # tortuosity
    tubes: list[Tube] = []
    sites: dict[str, list[Site]] = {name: [] for name in LOCATIONS}
    variants: list[str] = []

    def add(name, control, radius, location, end_radius=None, extra_wobble=0.0):
        tube = _tube(name, control, radius * scale, location, rng, wobble + extra_wobble,
                     None if end_radius is None else end_radius * scale)
        tubes.append(tube)
        return tube

    def wall_sites(tube: Tube, location: str, start=0.15, stop=0.85, count=4):
        n = len(tube.points)
        side = LEFT if location.startswith("Left") else RIGHT if location.startswith("Right") else 0
        for index in np.linspace(start * (n - 1), stop * (n - 1), count).astype(int):
            tangent = _unit(tube.points[min(index + 1, n - 1)] - tube.points[max(index - 1, 0)])
            direction = _perpendicular(tangent, rng)
            if side and direction[0] * side < 0:  # a lateral aneurysm never points across the midline
                direction[0] = -direction[0]
            sites[location].append(Site(location, tube.points[index], direction, float(tube.radii[index]), "wall"))

    def bifurcation_site(location: str, parent: Tube, branches: list[Tube]):
        point = parent.points[-1]
        direction = _unit(parent.points[-1] - parent.points[-6])  # along the parent, past the fork
        away = sum(_unit(b.points[min(6, len(b.points) - 1)] - b.points[0]) for b in branches)
        direction = _unit(direction - 0.3 * away / max(len(branches), 1))
        sites[location].append(Site(location, point, direction, float(parent.radii[-1]), "bifurcation"))

    # Posterior circulation: vertebral arteries -> basilar -> tip. Randomised: the junction moves
    # (the basilar's length and lean with it) and one vertebral artery may be hypoplastic.
    junction = np.array([0.0, 20.0, -41.0])
    vertebral_radius = {LEFT: 1.5, RIGHT: 1.5}
    if randomised:
        junction += rng.uniform([-4, -5, -10], [4, 16, 8])
        if rng.random() < 0.3:
            vertebral_radius[LEFT if rng.random() < 0.5 else RIGHT] = rng.uniform(0.6, 1.0)
    for side in (LEFT, RIGHT):
        way = _mirror([(9, 32, -78), (8, 28, -62), (5, 24, -50)], side) + (junction - (0.0, 20.0, -41.0)) * [0, 0.7, 0.5]
        add(f"vertebral {side}", np.vstack([way, junction + (side, 0, 0)]), vertebral_radius[side],
            "Other Posterior Circulation")
    moved = junction - (0.0, 20.0, -41.0)
    basilar = add("basilar", [junction, np.add((0, 17, -28), moved * 2 / 3), np.add((0, 14, -14), moved / 3),
                              (0, 12, -4)], 1.6, "Other Posterior Circulation", end_radius=1.5)
    wall_sites(basilar, "Other Posterior Circulation", count=3)
    tip_branches = []
    fetal_sides = set()
    for side in (LEFT, RIGHT):
        side_name = "Left" if side == LEFT else "Right"
        fetal = rng.random() < 0.08
        if fetal:
            fetal_sides.add(side)
        p1 = add(f"PCA P1 {side}", _mirror([(0, 12, -4), (5, 12.5, -3.5), (9, 13, -3)], side),
                 0.55 if fetal else 1.1, "Other Posterior Circulation")
        if fetal:
            variants.append(f"fetal {side_name.lower()} PCA")
        tip_branches.append(p1)
        p2 = add(f"PCA P2 {side}", _mirror([(9, 13, -3), (17, 19, -2), (25, 33, 2), (24, 52, 8), (15, 68, 12)], side),
                 1.1, "Other Posterior Circulation", end_radius=0.8)
        wall_sites(p2, "Other Posterior Circulation", stop=0.4, count=2)
        sca = add(f"SCA {side}", _mirror([(0, 13, -9), (8, 14, -10), (18, 23, -13), (22, 40, -20)], side), 0.8,
                  "Other Posterior Circulation", end_radius=0.6)
        sites["Other Posterior Circulation"].append(
            Site("Other Posterior Circulation", sca.points[2], _unit(_mirror([(0.3, -0.2, -1)], side)[0]),
                 float(sca.radii[2]), "wall"))
        _distal_branches(add, p2, rng, count=2)
        _distal_branches(add, sca, rng, count=1)
    bifurcation_site("Basilar Tip", basilar, tip_branches)

    # Anterior circulation, each side.
    for side in (LEFT, RIGHT):
        side_name = "Left" if side == LEFT else "Right"
        infra = add(f"ICA infraclinoid {side}",
                    _mirror([(22, 8, -85), (20, 12, -58), (18, 3, -41), (15, -7, -29), (14, -14, -19),
                             (13, -10, -11), (13, -5, -7)], side), 2.2, f"{side_name} Infraclinoid Internal Carotid Artery",
                    end_radius=2.0, extra_wobble=rng.uniform(0.0, 2.0) if randomised else -0.3)  # siphon shape
        wall_sites(infra, f"{side_name} Infraclinoid Internal Carotid Artery", start=0.45, stop=0.9, count=4)
        supra = add(f"ICA supraclinoid {side}", _mirror([(13, -5, -7), (13, -1, -3), (13.5, 0, 1), (14, -2, 4)], side),
                    2.0, f"{side_name} Supraclinoid Internal Carotid Artery", end_radius=1.8)
        wall_sites(supra, f"{side_name} Supraclinoid Internal Carotid Artery", start=0.2, stop=0.6, count=2)

        pcomm_location = f"{side_name} Posterior Communicating Artery"
        if rng.random() < 0.15 and pcomm_location not in keep:
            variants.append(f"no {side_name.lower()} posterior communicating artery")
        else:
            pcomm = add(f"PComm {side}", _mirror([(13, 0.5, -1), (11, 7, -2), (9, 13, -3)], side),
                        1.2 if side in fetal_sides else 0.7, pcomm_location)
            # Aneurysms of the PComm segment sit at its junction with the ICA, pointing back and down.
            sites[pcomm_location].append(
                Site(pcomm_location, pcomm.points[1], _unit(_mirror([(0.4, 0.7, -0.6)], side)[0]),
                     float(supra.radii[len(supra.radii) // 2]), "bifurcation"))

        m1 = add(f"MCA M1 {side}", _mirror([(14, -2, 4), (22, -3, 5), (30, -4, 6), (35, -3, 7)], side), 1.4,
                 f"{side_name} Middle Cerebral Artery", end_radius=1.3)
        m2s = [
            add(f"MCA M2 superior {side}", _mirror([(35, -3, 7), (42, 0, 20), (47, 8, 36), (50, 18, 48)], side), 1.0,
                f"{side_name} Middle Cerebral Artery", end_radius=0.7),
            add(f"MCA M2 inferior {side}", _mirror([(35, -3, 7), (44, 6, 1), (52, 20, -2), (55, 34, 0)], side), 1.0,
                f"{side_name} Middle Cerebral Artery", end_radius=0.7),
        ]
        bifurcation_site(f"{side_name} Middle Cerebral Artery", m1, m2s)
        wall_sites(m1, f"{side_name} Middle Cerebral Artery", count=2)
        for m2 in m2s:
            _distal_branches(add, m2, rng, count=3)

        aca_location = f"{side_name} Anterior Cerebral Artery"
        hypoplastic = rng.random() < 0.1 and aca_location not in keep
        a1 = add(f"ACA A1 {side}", _mirror([(14, -2, 4), (9, -8, 6), (3, -12, 8)], side), 0.55 if hypoplastic else 1.1,
                 aca_location)
        if hypoplastic:
            variants.append(f"hypoplastic {side_name.lower()} A1")
        bifurcation_site(f"{side_name} Supraclinoid Internal Carotid Artery", supra, [m1, a1])
        wall_sites(a1, aca_location, start=0.1, stop=0.5, count=3)  # the lateral part: left stays left
        a2 = add(f"ACA A2 {side}", _mirror([(2.5, -12, 8), (2.8, -22, 22), (3, -19, 40), (3, -3, 53), (3, 25, 57)], side),
                 1.0, aca_location, end_radius=0.7)
        _distal_branches(add, a2, rng, count=2)

    acomm = add("AComm", [(-3, -12, 8), (0, -12.5, 8.5), (3, -12, 8)], 0.8, "Anterior Communicating Artery")
    sites["Anterior Communicating Artery"].append(
        Site("Anterior Communicating Artery", acomm.points[len(acomm.points) // 2], _unit((0, -0.7, 0.7)),
             float(acomm.radii[0]), "bifurcation"))

    # Dural venous sinuses: bright in CTA and T1 post-contrast (mimics), suppressed in TOF MRA.
    if randomised:
        _more_arteries(add, tubes, junction, rng)
    _add_sinuses(tubes, rng)

    bulges, mimics = _mimics(tubes, sites, rng, add)
    head = Head(tubes, sites, bulges, variants, mimics)
    if randomised:
        _warp_arteries(head, rng)
        _deep_veins(tubes, rng)
        head.calcifications = _calcifications(rng, [t for t in tubes if t.kind == "artery"])
        head.bones = _skull_base_variants(rng)
    return head


# --------------------------------------------------------------------------------------
# Domain randomisation: anatomy the demo family lacks, so that a model cannot learn "a bright
# tube where the demo has none is an aneurysm" (it did: foreign veins, a vertebrobasilar
# junction elsewhere, bone beside the siphon drew its false positives).


def _more_arteries(add, tubes: list[Tube], junction: np.ndarray, rng: np.random.Generator) -> None:
    """Cerebellar arteries (PICA from each vertebral, AICA from the basilar) and ophthalmic
    arteries, each present or not, on a course of their own."""
    for side in (LEFT, RIGHT):
        if rng.random() < 0.8:  # PICA: around the medulla, back and down
            start = junction + (side * 2.5, 3.0, -6.0)
            add(f"PICA {side}", [start, start + (side * 7, 6, -8), start + (side * 11, 16, -6) + rng.normal(0, 3, 3),
                                 start + (side * 14, 28, -2) + rng.normal(0, 4, 3)], rng.uniform(0.6, 0.9),
                "Other Posterior Circulation", end_radius=0.5, extra_wobble=1.0)
        if rng.random() < 0.8:  # AICA: from the lower basilar, out towards the ear
            start = junction * 0.7 + np.array([0, 12, -4]) * 0.3 + (side, 0, 0)
            add(f"AICA {side}", [start, start + (side * 9, 1, 1), start + (side * 18, 6, 3) + rng.normal(0, 3, 3),
                                 start + (side * 24, 14, 2) + rng.normal(0, 3, 3)], rng.uniform(0.5, 0.8),
                "Other Posterior Circulation", end_radius=0.45, extra_wobble=0.8)
        if rng.random() < 0.7:  # ophthalmic: forward from the ICA above the clinoid
            start = np.array([side * 13.0, -4.0, -5.0])
            add(f"ophthalmic {side}", [start, start + (side * 3, -10, -2), start + (side * 10, -26, -3),
                                       start + (side * 16, -40, -6) + rng.normal(0, 3, 3)], rng.uniform(0.5, 0.8),
                None, end_radius=0.4, extra_wobble=1.0)


def _warp_arteries(head: Head, rng: np.random.Generator) -> None:
    """Stretch and shear the arterial tree about the circle of Willis (another subject's
    proportions, and another fit inside the skull): arteries, sites and mimics move together."""
    matrix = np.diag(rng.uniform(0.88, 1.14, 3)) + rng.uniform(-0.07, 0.07, (3, 3)) * (1 - np.eye(3))
    for tube in head.tubes:
        if tube.kind == "artery":
            tube.points = tube.points @ matrix.T
    for sites in head.sites.values():
        for site in sites:
            site.point = matrix @ site.point
            site.direction = _unit(matrix @ site.direction)
    head.bulges = [(matrix @ centre, radius) for centre, radius in head.bulges]


def _deep_veins(tubes: list[Tube], rng: np.random.Generator) -> None:
    """The deep venous system and cavernous sinuses, bright in CTA and T1 post-contrast: the
    internal cerebral veins, the vein of Galen, the straight sinus, the basal veins and a few
    cortical veins, each with its own calibre."""
    jitter = lambda scale=2.0: rng.normal(0, scale, 3)  # noqa: E731
    galen = np.array([0.0, 30.0, 20.0]) + jitter()
    torcula = np.array([0.0, 82.0, 8.0]) + jitter(3.0)

    def vein(name, control, radius):
        points = catmull_rom(np.asarray(control, float))
        tubes.append(Tube(name, points, np.full(len(points), radius), None, "vein"))

    vein("vein of Galen", [galen - (0, 6, -1), galen, galen + (0, 6, -3)], rng.uniform(2.0, 3.5))
    vein("straight sinus", [galen + (0, 6, -3), (galen + torcula) / 2 + jitter(), torcula], rng.uniform(1.8, 3.0))
    for side in (LEFT, RIGHT):
        vein(f"internal cerebral vein {side}", [(side * 3.0, -4.0, 24.0) + jitter(1.0), (side * 2.0, 14.0, 25.0),
                                               galen - (0, 6, -1)], rng.uniform(0.8, 1.5))
        if rng.random() < 0.8:
            vein(f"basal vein {side}", [(side * 15.0, -2.0, -3.0) + jitter(), (side * 18.0, 12.0, 4.0) + jitter(),
                                        (side * 8.0, 26.0, 16.0), galen - (0, 4, 0)], rng.uniform(0.8, 1.4))
        if rng.random() < 0.7:  # around the cavernous carotid, against the skull base
            centre = np.array([side * 16.0, -12.0, -20.0]) + jitter(1.5)
            vein(f"cavernous sinus {side}", [centre - (0, 8, 1), centre, centre + (0, 8, 2)], rng.uniform(2.0, 4.0))
    for index in range(int(rng.integers(2, 7))):  # cortical veins, on the brain's surface
        direction = _unit(rng.normal(0, 1, 3) + (0, 0, 0.8))
        ends = [direction, _unit(direction + rng.normal(0, 0.35, 3)), _unit(direction + rng.normal(0, 0.5, 3))]
        vein(f"cortical vein {index}", [_inside_brain(np.array(HEAD_CENTRE) + d * 90.0, 0.97) for d in ends],
             rng.uniform(0.8, 2.0))


def _calcifications(rng: np.random.Generator, arteries: list[Tube]) -> list[tuple[np.ndarray, float]]:
    """Round bright things away from the arteries (choroid plexus, pineal, falx): a dome must
    sit on a vessel to be an aneurysm, so one that would touch an artery is left out."""
    found = []
    for side in (LEFT, RIGHT):
        if rng.random() < 0.6:
            found.append((np.array([side * 24.0, 22.0, 24.0]) + rng.normal(0, 2.5, 3), rng.uniform(1.5, 4.0)))
    if rng.random() < 0.5:
        found.append((np.array([0.0, 34.0, 18.0]) + rng.normal(0, 1.5, 3), rng.uniform(1.2, 3.0)))
    for _ in range(int(rng.integers(0, 3))):
        found.append((np.array([rng.normal(0, 1), rng.uniform(-40, 60), rng.uniform(30, 70)]), rng.uniform(1.0, 3.0)))
    wall = np.vstack([t.points for t in arteries]), np.concatenate([t.radii for t in arteries])
    return [(centre, radius) for centre, radius in found
            if np.min(np.linalg.norm(wall[0] - centre, axis=1) - wall[1]) > radius + CALCIFICATION_GAP_MM]


CALCIFICATION_GAP_MM = 3.0  # least distance from a calcification's edge to an artery wall


def _skull_base_variants(rng: np.random.Generator) -> list[Ellipsoid]:
    """Anterior clinoid processes and dorsum sellae of each subject's size, against the ICA."""
    bones = [Ellipsoid((0.0, 4.0, -14.0), tuple(np.array([7.0, 2.0, 5.0]) * rng.uniform(0.6, 1.4)))]
    for side in (LEFT, RIGHT):
        centre = np.array([side * 12.0, -9.0, -8.0]) + rng.normal(0, 1.5, 3)
        bones.append(Ellipsoid(tuple(centre), tuple(np.array([5.0, 4.0, 2.5]) * rng.uniform(0.6, 1.5)),
                               side * rng.uniform(0, 30)))
    return bones


def _distal_branches(add, parent: Tube, rng: np.random.Generator, count: int) -> None:
    """Small cortical branches beyond the circle, kept inside the brain."""
    for _ in range(count):
        start_index = int(rng.uniform(0.5, 1.0) * (len(parent.points) - 1))
        start = parent.points[start_index]
        outward = _unit(start - np.array(HEAD_CENTRE) + rng.normal(0, 8, 3))
        length = rng.uniform(14, 30)
        control = [start, start + outward * length * 0.4 + rng.normal(0, 2, 3), start + outward * length]
        control = [_inside_brain(p) for p in control]
        add(f"branch of {parent.name}", control, float(parent.radii[start_index]) * 0.7, None,
            end_radius=0.45)


def _inside_brain(point: np.ndarray, margin: float = 0.93) -> np.ndarray:
    centre = np.array(BRAIN.centre)
    axes = np.array(BRAIN.axes)
    q = np.sqrt((((point - centre) / axes) ** 2).sum())
    return point if q <= margin else centre + (point - centre) * margin / q


def _add_sinuses(tubes: list[Tube], rng: np.random.Generator) -> None:
    centre, axes = np.array(HEAD_CENTRE), np.array(SKULL_INNER.axes) * 0.93

    def on_wall(direction):
        d = _unit(direction)
        return centre + d / np.sqrt(((d / axes) ** 2).sum())

    sagittal = [on_wall(v) for v in [(0, -1, 0.6), (0, -0.4, 1), (0, 0.4, 1), (0, 1, 0.5), (0, 1, -0.15)]]
    tubes.append(Tube("superior sagittal sinus", catmull_rom(np.array(sagittal)), np.full(1, 3.0), None, "vein"))
    for side in (LEFT, RIGHT):
        transverse = [sagittal[-1], on_wall((0.5 * side, 1, -0.2)), on_wall((1 * side, 0.4, -0.3)),
                      on_wall((0.9 * side, 0.3, -0.8))]
        tubes.append(Tube(f"transverse sinus {side}", catmull_rom(np.array(transverse)), np.full(1, 2.8), None, "vein"))
    for tube in tubes[-3:]:
        tube.radii = np.full(len(tube.points), tube.radii[0])


def _mimics(tubes, sites, rng, add) -> tuple[list[tuple[np.ndarray, float]], list[str]]:
    """Things that look a little like aneurysms and are not."""
    bulges: list[tuple[np.ndarray, float]] = []
    names: list[str] = []
    for location in ("Basilar Tip", "Left Middle Cerebral Artery", "Right Middle Cerebral Artery",
                     "Left Supraclinoid Internal Carotid Artery", "Right Supraclinoid Internal Carotid Artery"):
        for site in sites[location]:
            # A junctional widening, not a dome: wider than the vessel by a fraction of its radius
            # (a sphere as wide as a small aneurysm would be one, whatever the label says).
            if site.kind == "bifurcation" and rng.random() < 0.5:
                bulges.append((site.point.copy(), site.vessel_radius * rng.uniform(1.05, 1.25)))
                names.append(f"bifurcation bulge ({location})")
    # Infundibulum: a small funnel at the origin of a posterior communicating artery.
    for location in ("Left Posterior Communicating Artery", "Right Posterior Communicating Artery"):
        for site in sites[location]:
            if rng.random() < 0.3:
                size = rng.uniform(0.9, 1.3)
                for k, shrink in enumerate((1.0, 0.75, 0.5)):
                    bulges.append((site.point + site.direction * (site.vessel_radius + k * 0.6), size * shrink))
                names.append(f"infundibulum ({location})")
    # Vessel loops on distal branches: tight turns that look round in a projection.
    distal = [t for t in tubes if t.name.startswith("branch of")]
    for tube in rng.choice(distal, size=min(len(distal), int(rng.integers(1, 4))), replace=False):
        start = tube.points[len(tube.points) // 2]
        axis = _perpendicular(_unit(tube.points[-1] - tube.points[0]), rng)
        other = np.cross(axis, _unit(tube.points[-1] - tube.points[0]))
        radius = rng.uniform(1.8, 3.0)
        angles = np.linspace(0, 2 * np.pi, 9)
        loop = [start + radius * (np.cos(a) - 1) * axis + radius * np.sin(a) * other for a in angles]
        add(f"loop on {tube.name}", loop, float(tube.radii[len(tube.radii) // 2]), None)
        names.append(f"vessel loop ({tube.name})")
    return bulges, names


# --------------------------------------------------------------------------------------
# Aneurysms


@dataclass
class Aneurysm:
    """A saccular aneurysm: a dome (and maybe daughter blebs) on a vessel wall."""

    location: str
    centre: np.ndarray
    radius: float
    lobes: list[tuple[np.ndarray, float]]
    site_kind: str

    @property
    def diameter(self) -> float:
        return 2.0 * self.radius


def place_aneurysm(site: Site, diameter: float, rng: np.random.Generator, randomised: bool = False) -> Aneurysm:
    """Grow a dome of ``diameter`` mm at ``site``; its base overlaps the wall (the neck).
    Randomised: a neck from wide to narrow, and a third of the domes elongated."""
    radius = diameter / 2.0
    neck = rng.uniform(0.2, 0.9) if randomised else 0.55
    centre = site.point + site.direction * (site.vessel_radius + neck * radius)
    lobes = [(centre, radius)]
    if randomised and rng.random() < 0.35:  # elongated: a second, smaller sphere further out
        lobes.append((centre + _unit(site.direction + rng.normal(0, 0.3, 3)) * radius * rng.uniform(0.4, 0.8),
                      radius * rng.uniform(0.6, 0.9)))
    if rng.random() < 0.35:  # lobulated: one or two daughter blebs on the dome
        for _ in range(int(rng.integers(1, 3))):
            direction = _unit(site.direction + rng.normal(0, 0.7, 3))
            lobes.append((centre + direction * radius * 0.8, radius * rng.uniform(0.3, 0.5)))
    return Aneurysm(site.location, centre, radius, lobes, site.kind)
