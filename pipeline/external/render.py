"""Rendering the external family: tissue by painter's compositing of soft regions, vessels by
supersampling with flow profiles, then the scanner: point-spread blur, noise, bias field.

The acquisition grid is `pipeline.demo.render.Grid` (index -> patient affine; geometry
only). Tissue is evaluated on a copy of the grid about 1.5 mm apart and interpolated up;
vessels and domes are evaluated on 4 in-plane sub-samples per voxel and 2-12 along the
slice (a Gaussian slice profile wider than the slice), only in voxels near a vessel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from pipeline.demo.render import Grid, coarse_axes, upsample
from pipeline.external.anatomy import Dome

ARTERY, VEIN, DOME = 0, 1, 2


@dataclass
class Look:
    """What each tissue and vessel shows in one series (CT: HU; MR: arbitrary units before gain)."""

    air: float
    fat: float
    soft: float
    bone: float
    marrow: float
    csf: float
    grey: float
    white: float
    vitreous: float
    artery: float
    vein: float
    dome: float
    flow_profile: float  # how much darker an artery's edge is than its axis (laminar inflow)
    slow_flow: float  # how much darker a dome's core is than its rim
    psf: tuple[float, float]  # Gaussian blur, voxels: (along the slice, in plane)
    noise: float
    coils: int  # MR: noise is the magnitude over this many coils; CT: 0
    bias: float  # MR: amplitude of the smooth multiplicative field
    streak: float  # CT: darkening between the petrous ridges (beam hardening), HU


@dataclass
class HeadShape:
    """The head as a superellipsoid with a skull of varying thickness and a skull base."""

    axes: np.ndarray
    power: float
    scalp: float
    skull: float
    base: float
    circle: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, size: float, circle: np.ndarray) -> "HeadShape":
        axes = np.array([rng.uniform(72, 80), rng.uniform(90, 100), rng.uniform(84, 94)]) * size
        return cls(axes, rng.uniform(2.2, 2.8), rng.uniform(4, 7), rng.uniform(5, 9), rng.uniform(6, 11), circle)


def _soft(distance, width: float = 1.2):
    return np.clip(0.5 + distance / width, 0.0, 1.0).astype(np.float32)


def _depth(points, centre, axes, power) -> np.ndarray:
    """About how many mm inside a superellipsoid's surface each point lies."""
    q = np.abs((points - np.asarray(centre, np.float32)) / np.asarray(axes, np.float32))
    rho = (q[..., 0] ** power + q[..., 1] ** power + q[..., 2] ** power) ** (1.0 / power)
    return (1.0 - rho) * np.float32(np.mean(axes))


def _blob(points, centre, axes, edge: float = 1.0):
    """Membership of an ellipsoid (the superellipsoid of power 2, without fractional powers)."""
    q = (points - np.asarray(centre, np.float32)) / np.asarray(axes, np.float32)
    rho = np.sqrt(q[..., 0] ** 2 + q[..., 1] ** 2 + q[..., 2] ** 2)
    return _soft((1.0 - rho) * np.float32(np.mean(axes)), edge)


def fractal(rng: np.random.Generator, shape, octaves: int = 4, base: int = 4) -> np.ndarray:
    """Noise with energy at several scales, in about [-1, 1]."""
    total = np.zeros(shape, np.float32)
    for octave in range(octaves):
        cells = min(base * 2**octave, max(shape))
        total += 0.55**octave * upsample(rng.uniform(-1, 1, (cells,) * 3).astype(np.float32), shape)
    return total / np.float32(sum(0.55**o for o in range(octaves)))


def _floor(points, circle) -> np.ndarray:
    """Height (z, mm) of the skull base under each point: anterior, middle and posterior fossae,
    the sella raised in the middle, petrous ridges between middle and posterior fossae."""
    x, y = points[..., 0], points[..., 1] - np.float32(circle[1])
    anterior = 1.0 / (1.0 + np.exp((y + 18.0) / 3.0))
    posterior = 1.0 / (1.0 + np.exp(-(y - 18.0) / 4.0))
    middle = np.clip(1.0 - anterior - posterior, 0, 1)
    height = (anterior * -8.0 + middle * (-26.0 + 14.0 * np.exp(-(x / 13.0) ** 2)) + posterior * -50.0)
    # petrous ridge: a crest from (|x| 14, y 6) to (|x| 48, y 26) above the middle/posterior fossae
    ax, ay, bx, by = 14.0, 6.0, 48.0, 26.0
    t = np.clip(((np.abs(x) - ax) * (bx - ax) + (y - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    distance = np.hypot(np.abs(x) - (ax + t * (bx - ax)), y - (ay + t * (by - ay)))
    ridge = -20.0 - 0.35 * distance**2
    return (np.maximum(height, ridge) + np.float32(circle[2])).astype(np.float32)


def tissue(grid: Grid, to_head, shape: HeadShape, look: Look, rng: np.random.Generator, ct: bool) -> np.ndarray:
    """The tissue image on ``grid`` (vessels excluded); ``to_head`` maps patient to head mm."""
    axes = coarse_axes(grid.shape, grid.spacing, target_mm=1.5)
    p = to_head(grid.points(*axes)).astype(np.float32)
    c = shape.circle
    noise = fractal(rng, p.shape[:3])
    fine = fractal(rng, p.shape[:3], octaves=3, base=12)
    z = p[..., 2]

    depth = _depth(p, (0, 2, -4), shape.axes, shape.power)
    neck = _soft(_depth(p, (0, 18, -130), (46, 50, 90), 2.0)) * (z < c[2] - 30)
    head = np.maximum(_soft(depth), neck)
    inner = shape.scalp + shape.skull * (1 + 0.3 * noise)
    vault = _soft(depth - shape.scalp)
    cranium = _soft(depth - inner)
    floor = _floor(p, c)
    above = _soft(z - floor)
    base_bone = cranium * (1 - above) * _soft(z - (floor - shape.base))
    cavity = cranium * above
    brain = cranium * _soft(z - floor - 2.0) * _soft(depth - inner - 2.0 - 0.8 * (fine + 1))

    image = np.full(p.shape[:3], look.air, np.float32)

    def paint(weight, value):
        np.add(image, weight * (np.float32(value) - image), out=image, casting="unsafe")

    paint(head, look.soft)
    paint(_soft(shape.scalp * 0.45 - depth) * head, look.fat)  # subcutaneous fat
    diploe = _soft(np.minimum(depth - shape.scalp - 1.5, inner - 1.5 - depth))
    paint(vault, look.bone)
    paint(vault * diploe, look.marrow)
    paint(cranium * (1 - above), look.soft)  # below the skull base: face, pharynx, muscles
    paint(base_bone, look.bone * (1.0 + 0.15 * noise))
    spine = _blob(p, (0, c[1] + 32, c[2] - 110), (11, 10, 48))
    paint(spine, look.bone)
    paint(_blob(p, (0, c[1] + 32, c[2] - 110), (7, 6, 48)), look.marrow)
    paint(cavity, look.csf)

    white = _soft(_depth(p, (0, 4, 10), shape.axes * np.float32(0.58), 2.4) + 5 * noise, 2.5)
    cerebellum = _soft((p[..., 1] - c[1]) - 24, 4) * _soft((c[2] + 2) - z, 4)
    grey = look.grey * (1 + 0.04 * fine)
    paint(brain, grey)
    paint(brain * white * (1 - cerebellum), look.white * (1 + 0.03 * noise))
    paint(brain * cerebellum * _soft(fine * 6), look.white)  # folia
    sulci = brain * _soft((0.05 - np.abs(fine)) * 40) * _soft(8 - (depth - inner), 3)
    paint(sulci, look.csf)
    for side in (1, -1):
        paint(_blob(p, (side * 36, c[1], c[2] + 8), (16, 4, 8)), look.csf)  # Sylvian fissure
        for centre, size in (((10, 5, 18), (5, 24, 6)), ((9, -22, 12), (5, 9, 7)), ((18, 30, 8), (4, 10, 5)),
                             ((28, 10, -20), (4, 14, 4))):
            paint(_blob(p, (side * centre[0], *centre[1:]), size), look.csf)  # lateral ventricles
        paint(_blob(p, (side * 32, c[1] - 56, c[2] - 10), (17, 15, 14)), look.fat)  # orbit
        paint(_blob(p, (side * 32, c[1] - 60, c[2] - 10), (12, 12, 12)), look.vitreous)  # globe
        paint(_blob(p, (side * 46, c[1] + 22, c[2] - 38), (9, 10, 9)) * (0.5 + 0.5 * _soft(fine * 4)), look.air)  # mastoid
    paint(_blob(p, (0, 5, 0), (2, 12, 9)), look.csf)  # third ventricle
    paint(_blob(p, (0, c[1] + 38, c[2] - 22), (5, 4, 6)), look.csf)  # fourth ventricle
    paint(_blob(p, (0, c[1] - 14, c[2] - 26), (14, 10, 9)), look.air)  # sphenoid sinus
    if ct and look.streak:
        band = np.exp(-(((z - (c[2] - 30)) / 5.0) ** 2)) * _soft(40 - np.abs(p[..., 0]), 6) * _soft(p[..., 1] - c[1], 6)
        paint(band * cranium, image - look.streak)
    return upsample(image, grid.shape)


def bias_field(grid: Grid, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field exp(quadratic polynomial of position), mean about 1."""
    axes = coarse_axes(grid.shape, grid.spacing, target_mm=8.0)
    q = grid.points(*axes) / np.float32(90.0)
    terms = [q[..., 0], q[..., 1], q[..., 2], q[..., 0] * q[..., 1], q[..., 1] * q[..., 2], q[..., 2] ** 2]
    field = sum(np.float32(rng.normal(0, amplitude)) * t for t in terms)
    return upsample(np.exp(field).astype(np.float32), grid.shape)


def rasterise(grid: Grid, vessels: list[tuple[np.ndarray, np.ndarray, int]], domes: list[Dome], look: Look,
              slice_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels near vessels (M, 3), their occupancy per class (M, 3) and intensity weight per class
    (M, 3: occupancy times the flow profile). Vessels: (patient points, radii, class)."""
    points = np.vstack([v[0] for v in vessels])
    radii = np.concatenate([v[1] for v in vessels]).astype(np.float32)
    classes = np.concatenate([np.full(len(v[1]), v[2], np.int8) for v in vessels])
    mask = np.zeros(grid.shape, bool)
    spheres = [(points[::3], radii[::3])] + [
        (np.array([d.centre]), np.array([d.axes.max() + max([r for _, r in d.blebs], default=0) * 2])) for d in domes]
    for centres, sizes in spheres:
        index = grid.to_index(centres)
        for k in range(len(centres)):
            half = sizes[k] / grid.spacing + 1.2  # a voxel's reach beyond the wall
            low = np.maximum(np.floor(index[k] - half).astype(int), 0)
            high = np.minimum(np.ceil(index[k] + half).astype(int) + 1, grid.shape)
            if np.all(high > low):
                mask[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = True
    voxels = np.argwhere(mask)
    offsets, weights = _subsamples(slice_mm)
    tree = cKDTree(points)
    occupancy = np.zeros((len(voxels), 3), np.float32)
    intensity = np.zeros((len(voxels), 3), np.float32)
    for start in range(0, len(voxels), 40000):
        chunk = voxels[start:start + 40000]
        for offset, weight in zip(offsets, weights):
            where = (chunk + offset) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
            distance, nearest = tree.query(where, k=6, distance_upper_bound=float(radii.max()) + 0.5)
            valid = nearest < len(points)
            safe = np.where(valid, nearest, 0)
            u = np.where(valid, distance / radii[safe], np.inf)
            best = np.argmin(u, axis=1)
            u_best = u[np.arange(len(u)), best]
            kind = classes[safe[np.arange(len(u)), best]]
            inside = u_best < 1.0
            profile = np.where(kind == ARTERY, 1.0 - look.flow_profile * np.minimum(u_best, 1.0) ** 2, 1.0)
            dome_u = _inside_domes(where, domes)
            in_dome = dome_u < 1.0
            kind = np.where(in_dome, DOME, kind)
            profile = np.where(in_dome, 1.0 - look.slow_flow * (1.0 - np.minimum(dome_u, 1.0)), profile)
            inside |= in_dome
            cell = (np.arange(len(chunk)) * 3 + kind)[inside]
            size = len(chunk) * 3
            occupancy[start:start + len(chunk)] += np.bincount(cell, minlength=size).reshape(-1, 3) * weight
            intensity[start:start + len(chunk)] += np.bincount(
                cell, weights=profile[inside], minlength=size).reshape(-1, 3).astype(np.float32) * weight
    return voxels, occupancy, intensity


def _subsamples(slice_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel offsets (index units) and weights: 2 x 2 in plane; along the slice 2, or for
    thick slices a Gaussian profile about 1.2 slices wide."""
    in_plane = [(-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25)]
    if slice_mm <= 1.5:
        along, weight = np.array([-0.25, 0.25]), np.array([0.5, 0.5])
    else:
        along = np.linspace(-0.8, 0.8, int(np.ceil(slice_mm / 0.9)))
        weight = np.exp(-0.5 * (along / 0.5) ** 2)
        weight /= weight.sum()
    offsets = np.array([(a, j, i) for a in along for j, i in in_plane], np.float32)
    weights = np.array([w / 4 for w in weight for _ in in_plane], np.float32)
    return offsets, weights


def _inside_domes(points: np.ndarray, domes: list[Dome]) -> np.ndarray:
    """For each point, the smallest normalised radius over the domes and blebs (< 1: inside)."""
    best = np.full(len(points), np.inf, np.float32)
    for dome in domes:
        reach = float(dome.axes.max()) * 2.5
        near = np.flatnonzero(np.all(np.abs(points - dome.centre) < reach, axis=1))
        if not len(near):
            continue
        local = (points[near] - dome.centre) @ dome.frame / dome.axes
        rho = np.sqrt((local**2).sum(axis=1))
        for centre, radius in dome.blebs:
            rho = np.minimum(rho, np.linalg.norm(points[near] - centre, axis=1) / radius)
        best[near] = np.minimum(best[near], rho)
    return best


def composite(image: np.ndarray, voxels: np.ndarray, occupancy: np.ndarray, intensity: np.ndarray,
              values: tuple[float, float, float]) -> None:
    """Lay the vessels over ``image`` in place: each class's share of the voxel takes its value."""
    flat = (voxels[:, 0], voxels[:, 1], voxels[:, 2])
    total = np.clip(occupancy.sum(axis=1), 0.0, 1.0)  # each sub-sample counts for one class at most
    image[flat] = image[flat] * (1.0 - total) + (intensity * np.asarray(values, np.float32)).sum(axis=1)


def scanner(image: np.ndarray, look: Look, rng: np.random.Generator, ct: bool) -> np.ndarray:
    """Blur with the point-spread function, then add the modality's noise."""
    image = gaussian_filter(image, sigma=(look.psf[0], look.psf[1], look.psf[1]), truncate=3.0)
    if ct:  # reconstruction-kernel noise: white noise correlated in plane
        noise = gaussian_filter(rng.standard_normal(image.shape, dtype=np.float32), sigma=(0, 0.8, 0.8))
        return image + noise * np.float32(look.noise / max(float(noise.std()), 1e-6))
    per_coil = image / np.float32(np.sqrt(look.coils))
    power = np.zeros_like(image)
    for _ in range(look.coils):
        real = per_coil + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(look.noise)
        imaginary = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(look.noise)
        power += real * real + imaginary * imaginary
    return np.sqrt(power)
