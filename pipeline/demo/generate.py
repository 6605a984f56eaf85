"""The built-in demo dataset: synthetic head phantoms written as real DICOM, RSNA layout.

    python -m pipeline demo-data --out DIR [--series N] [--seed S] [--workers N]

writes ``DIR/series/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, ``DIR/train.csv``,
``DIR/train_localizers.csv`` (exactly the RSNA columns), each series' artery labels as
``DIR/segmentations/<SeriesInstanceUID>/<SeriesInstanceUID>_cowseg.nii.gz`` (NIfTI on the
acquisition grid, aligned by its affine; `pipeline.labels.VESSEL_LABELS`) and ``DIR/demo_manifest.json``
(the ground truth a real dataset does not have: aneurysm centres and sizes in patient
mm, variants, mimics, acquisition). Same seed, same bytes.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Collection, NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from pipeline import __version__
from pipeline.demo import DEMO_SERIES
from pipeline.demo.anatomy import (
    BRAIN, CSF_SPACES, SCALP, SKULL_BASE, SKULL_INNER, SKULL_OUTER, Aneurysm, Ellipsoid, Head, build_head,
    place_aneurysm,
)
from pipeline.demo.render import Grid, coarse_axes, render_spheres, render_tubes, smooth_noise, soft_ellipsoid, upsample
from pipeline.io.dicomwriter import SeriesGeometry, SeriesHeader, derived_uid, write_series
from pipeline.io.nifti import save_nifti
from pipeline.io.rsna import vessel_labels_path
from pipeline.labels import vessel_label
from pipeline.phantoms import (
    FAKE_PATIENT_TOKEN, PhantomSummary, deal_locations, localizer, modality_mix, stratified_positives, train_row,
    write_phantom_dataset,
)

# The origin project's demo mix (CTA 9, MRI T2 7, MRA 3, MRI T1post 1 of 20).
MODALITY_SHARE = {"CTA": 9, "MRI T2": 7, "MRA": 3, "MRI T1post": 1}
# Rough share of aneurysm locations in the real data, for aneurysms beyond two per location.
LOCATION_WEIGHT = np.array([4, 4, 10, 10, 12, 12, 14, 4, 4, 6, 6, 5, 9], dtype=float)

PLANES = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
# Head-frame extent covered along each patient axis (x, y, z), mm.
COVERAGE = {
    "CTA": (-72, 72, -80, 95, -50, 60),
    "MRA": (-70, 70, -75, 90, -38, 38),
    "MRI T2": (-72, 72, -85, 95, -55, 75),
    "MRI T1post": (-72, 72, -85, 95, -50, 65),
}


@dataclass
class Appearance:
    """Intensities of each compartment (CT: Hounsfield units; MR: scanner units)."""

    air: float
    soft: float
    bone: float
    csf: float
    brain: float
    artery: float
    vein: float
    aneurysm: float
    noise: float
    bias: float = 0.0
    calcification: float = 0.0  # round things off the vessels (domain randomisation only)


def appearance(modality: str, rng: np.random.Generator) -> Appearance:
    if modality == "CTA":
        artery = rng.uniform(280, 480)  # contrast timing varies
        return Appearance(-1000, 40, rng.uniform(950, 1350), 6, 36, artery, artery * rng.uniform(0.65, 0.95),
                          artery * rng.uniform(0.85, 1.0), rng.uniform(6, 14))
    if modality == "MRA":  # time of flight: inflowing blood bright, background and veins suppressed
        artery = rng.uniform(650, 950)
        return Appearance(0, 230, 15, 45, 170, artery, 110, artery * rng.uniform(0.55, 0.85), rng.uniform(10, 16),
                          rng.uniform(0.1, 0.25))
    if modality == "MRI T2":  # flow voids, bright CSF
        return Appearance(0, 260, 25, 950, 430, 60, 55, rng.uniform(90, 260), rng.uniform(12, 18),
                          rng.uniform(0.1, 0.2))
    return Appearance(0, 430, 30, 90, 330, rng.uniform(620, 760), rng.uniform(650, 800), rng.uniform(560, 700),
                      rng.uniform(10, 15), rng.uniform(0.1, 0.2))  # MRI T1post


def randomised_appearance(modality: str, rng: np.random.Generator) -> Appearance:
    """One series' intensities, drawn wide (domain randomisation): contrast level and timing,
    venous filling, bone density, slow flow in aneurysms, noise and bias vary as they do
    between scanners, protocols and patients; in MR the scalp and orbital fat may outshine
    the arteries (TOF and T1 fat is bright), so "brightest is vessel" does not hold."""
    u = rng.uniform
    if modality == "CTA":
        artery = u(150, 650)  # contrast dose and timing
        return Appearance(-1000, u(25, 60), u(700, 1900), u(0, 12), u(28, 48), artery,
                          artery * u(0.3, 1.05),  # venous filling: early arterial to late venous phase
                          artery * u(0.75, 1.0), u(3, 25), calcification=u(150, 900))
    if modality == "MRA":  # time of flight: inflowing blood bright, background and veins suppressed
        artery = u(450, 1200)
        return Appearance(0, u(150, 900), u(10, 40), u(25, 80), u(120, 260), artery, u(60, 400),
                          artery * u(0.45, 0.95),  # slow flow in the dome loses inflow signal
                          u(6, 24), u(0.0, 0.35), calcification=u(60, 600))
    if modality == "MRI T2":  # flow voids, bright CSF
        return Appearance(0, u(200, 700), u(15, 50), u(800, 1400), u(350, 600), u(30, 140), u(40, 160), u(80, 420),
                          u(8, 25), u(0.05, 0.3), calcification=u(30, 300))
    artery = u(450, 900)
    return Appearance(0, u(300, 1000), u(20, 50), u(60, 140), u(250, 420), artery, artery * u(0.8, 1.25),
                      u(420, 800), u(6, 20), u(0.05, 0.3), calcification=u(250, 900))  # MRI T1post


@dataclass
class Scanner:
    """How one series was acquired beyond its grid: point-spread blur (voxels, along the
    slice and in plane), in-plane correlated CT noise, and MR receiver gain."""

    blur: tuple[float, float]
    correlated_noise: bool
    gain: float

    @classmethod
    def none(cls) -> "Scanner":
        """The demo family's own scanner: no blur, white noise, unit gain."""
        return cls((0.0, 0.0), False, 1.0)

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Scanner":
        sharp = rng.random() < 0.3
        blur = (0.0, 0.0) if sharp else (float(rng.uniform(0.0, 0.5)), float(rng.uniform(0.2, 0.8)))
        return cls(blur, bool(rng.random() < 0.5), float(rng.uniform(0.4, 3.0)))


@dataclass(frozen=True)
class Shift:
    """A controlled change of the demo family, to measure what a model depends on.

    The identity shift (all defaults) generates the demo family itself, byte for byte.

    Attributes:
        calibre: vessel radii times this (aneurysms keep their size).
        contrast: how far vessels and aneurysms stand out from brain, times this.
        noise: the image noise's standard deviation times this.
        slice: slice thickness (and spacing) times this.
        pixel: in-plane pixel size times this (the matrix follows, so the field of view stays).
        rotation: head pose angles scaled so that the largest reaches this many degrees
            (default: the family's own, up to 18 degrees of pitch).
        head: head and anatomy size times this.
    """

    calibre: float = 1.0
    contrast: float = 1.0
    noise: float = 1.0
    slice: float = 1.0
    pixel: float = 1.0
    rotation: float | None = None
    head: float = 1.0

    def changes(self) -> dict[str, float]:
        """The fields that differ from the identity, in declaration order."""
        identity = Shift()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(identity, f.name)}

    @classmethod
    def parse(cls, text: str) -> "Shift":
        """``"calibre=0.7,noise=2"`` -> Shift; a clear ValueError for anything else."""
        names = [f.name for f in fields(cls)]
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = item.partition("=")
            if name.strip() not in names:
                raise ValueError(f"unknown shift {name.strip()!r}: the shifts are {', '.join(names)}")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"shift {item!r} needs a number, e.g. {name.strip()}=1.5") from None
            if not np.isfinite(number) or number <= 0 or (name.strip() == "rotation" and number > 45):
                raise ValueError(f"shift {item!r} is out of range (a positive factor; rotation at most 45 degrees)")
            values[name.strip()] = number
        return cls(**values)


# yaw, pitch, roll of the head in the scanner at most, degrees; and its offset, mm (the demo
# family's, and under domain randomisation)
POSE_DEG = {False: np.array([8.0, 12.0, 5.0]), True: np.array([12.0, 18.0, 8.0])}
POSE_OFFSET_MM = {False: 6.0, True: 10.0}

# The documented grid of controlled shifts (README, model card): each changes one thing.
SHIFT_GRID: tuple[Shift, ...] = (
    Shift(calibre=0.7), Shift(calibre=1.5), Shift(contrast=0.6), Shift(contrast=1.5), Shift(noise=2.5),
    Shift(slice=2.0), Shift(pixel=1.5), Shift(rotation=25.0), Shift(head=0.88), Shift(head=1.12),
)


@dataclass
class SeriesPlan:
    """Everything that decides one series; generated series are a pure function of it."""

    index: int
    seed: int
    modality: str
    locations: list[str]
    plane: str
    pixel_mm: float
    slice_mm: float
    matrix: int
    multiframe: bool
    transfer_syntax: str
    descending: bool
    age: int
    sex: str
    series_uid: str
    shift: Shift = field(default_factory=lambda: Shift())
    randomised: bool = False  # domain randomisation: wide ranges of anatomy, contrast and scanner


# --------------------------------------------------------------------------------------
# Planning


def plan_dataset(n_series: int = DEMO_SERIES, seed: int = 0, positive_share: float = 0.4,
                 shift: Shift = Shift(), randomised: bool = False) -> list[SeriesPlan]:
    """Choose modality, labels and acquisition of every series (deterministic in ``seed``;
    a ``shift`` changes what it names and nothing else; ``randomised`` draws anatomy, contrast
    and scanner from the wide ranges of domain randomisation)."""
    if n_series < 1:
        raise ValueError("n_series must be at least 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    modalities = modality_mix(n_series, MODALITY_SHARE)
    rng.shuffle(modalities)
    positive = stratified_positives(modalities, positive_share, rng, order=list(MODALITY_SHARE))
    counts = np.where(positive, rng.choice([1, 2, 3], size=n_series, p=[0.6, 0.3, 0.1]), 0)
    locations = deal_locations(counts, rng, LOCATION_WEIGHT)

    plans = []
    for index in range(n_series):
        modality = modalities[index]
        series_rng = np.random.default_rng(np.random.SeedSequence([seed, 1, index]))
        plans.append(_variant(_acquisition(index, seed, modality, locations[index], series_rng), shift, randomised))
    return plans


def _variant(plan: SeriesPlan, shift: Shift, randomised: bool) -> SeriesPlan:
    if shift == Shift() and not randomised:
        return plan
    matrix = int(round(plan.matrix / shift.pixel / 2)) * 2  # the same field of view
    # other pixels, other series: a variant never shares a UID (nor a cache entry) with the original
    changes = sorted(shift.changes().items()) + ([("randomised", True)] if randomised else [])
    uid = derived_uid("demo series", plan.seed, plan.index, changes)
    if randomised:
        plan = _randomised_acquisition(plan)
    return dataclasses.replace(plan, shift=shift, randomised=randomised, series_uid=uid,
                               pixel_mm=round(plan.pixel_mm * shift.pixel, 3),
                               slice_mm=round(plan.slice_mm * shift.slice, 3), matrix=matrix)


# Domain randomisation of the acquisition: (planes, their probabilities), slice thickness range mm.
RANDOMISED_ACQUISITION = {
    "CTA": ((("axial",), (1.0,)), (0.5, 1.25)),
    "MRA": ((("axial", "coronal"), (0.9, 0.1)), (0.5, 1.2)),
    "MRI T2": ((("axial", "coronal", "sagittal"), (0.5, 0.25, 0.25)), (2.5, 6.5)),
    "MRI T1post": ((("axial", "sagittal", "coronal"), (0.4, 0.35, 0.25)), (0.8, 1.6)),
}


def _randomised_acquisition(plan: SeriesPlan) -> SeriesPlan:
    """Another plane and slice thickness for the series (a sagittal T2 with 6 mm slices is
    blurred along the patient's left-right axis, which the demo family never shows)."""
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 3, plan.index]))
    (planes, shares), thickness = RANDOMISED_ACQUISITION[plan.modality]
    return dataclasses.replace(plan, plane=str(rng.choice(planes, p=shares)),
                               slice_mm=round(float(rng.uniform(*thickness)), 3))


def _acquisition(index: int, seed: int, modality: str, locations: list[str], rng: np.random.Generator) -> SeriesPlan:
    is_mr = modality != "CTA"
    if modality == "CTA":
        plane, pixel, slice_mm, matrix = "axial", rng.uniform(0.6, 0.7), rng.uniform(0.6, 1.0), 256
    elif modality == "MRA":
        plane, pixel, slice_mm, matrix = "axial", rng.uniform(0.5, 0.6), rng.uniform(0.55, 0.9), 256
    elif modality == "MRI T2":
        plane = str(rng.choice(["axial", "coronal"], p=[0.7, 0.3]))
        pixel, slice_mm, matrix = rng.uniform(0.6, 0.7), rng.uniform(4.0, 6.0), 256
    else:
        plane = str(rng.choice(["axial", "sagittal", "coronal"], p=[0.5, 0.25, 0.25]))
        pixel, slice_mm, matrix = rng.uniform(0.85, 1.0), rng.uniform(0.9, 1.2), 192
    syntax = ExplicitVRLittleEndian
    draw = rng.random()
    if draw < 0.2:
        syntax = RLELossless
    elif draw < 0.3 and modality in ("MRI T2", "MRI T1post"):
        syntax = JPEG2000Lossless
    return SeriesPlan(
        index=index, seed=seed, modality=modality, locations=list(locations), plane=plane,
        pixel_mm=round(float(pixel), 3), slice_mm=round(float(slice_mm), 3), matrix=matrix,
        multiframe=bool(is_mr and rng.random() < 0.3), transfer_syntax=str(syntax),
        descending=bool(rng.random() < 0.3), age=int(rng.integers(25, 86)), sex=str(rng.choice(["Female", "Male"])),
        series_uid=derived_uid("demo series", seed, index),
    )


# --------------------------------------------------------------------------------------
# One series


@dataclass
class HeadPose:
    """Placement of the head frame in patient coordinates: p = R @ (scale h) + t."""

    rotation: np.ndarray
    translation: np.ndarray
    scale: float = 1.0

    @classmethod
    def random(cls, rng: np.random.Generator, shift: Shift = Shift(), randomised: bool = False) -> "HeadPose":
        limits = POSE_DEG[randomised]
        angles = rng.uniform(-limits, limits)
        if shift.rotation is not None:
            angles = angles * (shift.rotation / limits.max())
        yaw, pitch, roll = np.radians(angles)
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
        ry = np.array([[np.cos(roll), 0, np.sin(roll)], [0, 1, 0], [-np.sin(roll), 0, np.cos(roll)]])
        offset = POSE_OFFSET_MM[randomised]
        return cls(rz @ rx @ ry, rng.uniform(-offset, offset, size=3), shift.head)

    def to_patient(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points) * self.scale) @ self.rotation.T + self.translation

    def to_head(self, points: np.ndarray) -> np.ndarray:
        return ((np.asarray(points) - self.translation) @ self.rotation) / self.scale


def acquisition_grid(plan: SeriesPlan, pose: HeadPose, rng: np.random.Generator) -> tuple[Grid, SeriesGeometry]:
    row, column = (np.array(v) for v in PLANES[plan.plane])
    normal = np.cross(row, column)
    x0, x1, y0, y1, z0, z1 = COVERAGE[plan.modality]
    box_centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2])
    centre = pose.to_patient(box_centre) + rng.uniform(-4, 4, size=3)
    extent = np.abs(normal) @ np.array([x1 - x0, y1 - y0, z1 - z0])
    n_slices = int(round(extent / plan.slice_mm)) + 1
    half = (plan.matrix - 1) / 2 * plan.pixel_mm
    first = centre - normal * extent / 2 - row * half - column * half
    positions = first + np.outer(np.arange(n_slices) * plan.slice_mm, normal)
    affine = np.eye(4)
    affine[:3, 0] = normal * plan.slice_mm
    affine[:3, 1] = column * plan.pixel_mm
    affine[:3, 2] = row * plan.pixel_mm
    affine[:3, 3] = first
    grid = Grid((n_slices, plan.matrix, plan.matrix), affine)
    return grid, SeriesGeometry(positions, tuple(row), tuple(column), (plan.pixel_mm, plan.pixel_mm))


def choose_aneurysms(head: Head, plan: SeriesPlan, rng: np.random.Generator) -> list[Aneurysm]:
    unshifted_slice = plan.slice_mm / plan.shift.slice  # a thicker-slice shift keeps the family's aneurysms
    minimum = max(2.0, unshifted_slice + 1.5)  # the localizer slice must cut through the dome
    aneurysms = []
    for location in plan.locations:
        sites = head.sites[location]
        site = sites[int(rng.integers(len(sites)))]
        spread, largest = (0.5, 15.0) if plan.randomised else (0.4, 12.0)
        diameter = float(np.clip(rng.lognormal(np.log(5.5), spread), minimum, largest))
        aneurysms.append(place_aneurysm(site, diameter, rng, plan.randomised))
    return aneurysms


class RenderedSeries(NamedTuple):
    """A rendered series: its stored pixels, what was drawn and how it was acquired."""

    stored: np.ndarray  # (slices, rows, columns) in the order of ``geometry.positions``
    geometry: SeriesGeometry
    aneurysms: list[Aneurysm]
    head: Head
    pose: HeadPose
    look: Appearance
    scanner: Scanner
    vessels: np.ndarray  # uint8 artery labels (`pipeline.labels.VESSEL_LABELS`) on the acquisition grid
    grid_affine: np.ndarray  # voxel (z, y, x) of ``vessels`` -> patient LPS mm


def render_series(plan: SeriesPlan) -> RenderedSeries:
    """The stored pixel values of a series, with what was drawn, how it was acquired and
    where each artery lies."""
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 2, plan.index]))
    head = build_head(rng, keep=set(plan.locations), calibre=plan.shift.calibre, randomised=plan.randomised)
    aneurysms = choose_aneurysms(head, plan, rng)
    pose = HeadPose.random(rng, plan.shift, plan.randomised)
    look = _shifted_look((randomised_appearance if plan.randomised else appearance)(plan.modality, rng), plan.shift)
    grid, geometry = acquisition_grid(plan, pose, rng)
    size = np.float64(pose.scale)  # radii follow the head size

    image = _tissue(grid, pose, look, plan.modality, rng, head, plan.randomised)
    thin = grid.thin(max(1, int(round(plan.slice_mm / 1.0))) if plan.slice_mm > 2 else 1)

    def composite(occupancy: np.ndarray, value: float) -> None:
        if thin is not grid:  # slice profile: the mean of the thin sub-slices
            occupancy = occupancy.reshape(grid.shape[0], -1, *grid.shape[1:]).mean(axis=1)
        image[:] += occupancy * (np.float32(value) - image)

    arteries = [t for t in head.tubes if t.kind == "artery"]
    veins = [(pose.to_patient(t.points), t.radii * size) for t in head.tubes if t.kind == "vein"]
    composite(render_tubes(thin, veins), look.vein)
    artery_occupancy, artery_labels = render_tubes(thin, [(pose.to_patient(t.points), t.radii * size) for t in arteries],
                                                   labels=[vessel_label(t.location) for t in arteries])
    vessels = _slice_labels(artery_occupancy, artery_labels, grid.shape)
    composite(np.maximum(artery_occupancy,
                         render_spheres(thin, [(pose.to_patient(c), r * size) for c, r in head.bulges])), look.artery)
    lobes = [(pose.to_patient(c), r * size) for a in aneurysms for c, r in a.lobes]
    composite(render_spheres(thin, lobes), look.aneurysm)
    if head.calcifications:
        composite(render_spheres(thin, [(pose.to_patient(c), r * size) for c, r in head.calcifications]),
                  look.calcification)

    if not plan.randomised:  # the demo family's own scanner, drawn exactly as it always was
        scanner = Scanner.none()
        if plan.modality == "CTA":
            image += rng.normal(0.0, look.noise, size=image.shape).astype(np.float32)
            stored = np.clip(np.round(image + 1024.0), 0, 4095).astype(np.int16)
        else:
            image *= 1.0 + look.bias * smooth_noise(rng, grid.shape, cells=4)
            real = image + rng.normal(0.0, look.noise, size=image.shape).astype(np.float32)
            imaginary = rng.normal(0.0, look.noise, size=image.shape).astype(np.float32)
            stored = np.clip(np.round(np.sqrt(real * real + imaginary * imaginary)), 0, 4095).astype(np.uint16)
    else:
        scanner = Scanner.random(rng)
        stored = _randomised_scanner(image, grid, look, scanner, plan.modality, rng)
    if plan.descending:
        stored = stored[::-1].copy()
        geometry.positions = geometry.positions[::-1].copy()
    return RenderedSeries(stored, geometry, aneurysms, head, pose, look, scanner, vessels, grid.affine)


def _slice_labels(occupancy: np.ndarray, labels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Labels of thin sub-slices (``occupancy`` and ``labels`` of the thin grid) on the
    acquisition grid of ``shape``: the label of each voxel's most filled sub-slice."""
    if occupancy.shape == tuple(shape):
        return labels
    sub = occupancy.shape[0] // shape[0]
    fullest = occupancy.reshape(shape[0], sub, *shape[1:]).argmax(axis=1)[:, None]
    return np.take_along_axis(labels.reshape(shape[0], sub, *shape[1:]), fullest, axis=1)[:, 0]


def _randomised_scanner(image: np.ndarray, grid: Grid, look: Appearance, scanner: Scanner, modality: str,
                        rng: np.random.Generator) -> np.ndarray:
    """Stored pixels through a randomised scanner: point-spread blur, white or correlated CT
    noise, MR bias, Rician noise and receiver gain."""
    if max(scanner.blur) > 0:
        image = gaussian_filter(image, sigma=(scanner.blur[0], scanner.blur[1], scanner.blur[1]), truncate=2.5)
    if modality == "CTA":
        noise = rng.normal(0.0, 1.0, size=image.shape).astype(np.float32)
        if scanner.correlated_noise:  # a smooth reconstruction kernel
            noise = gaussian_filter(noise, sigma=(0, 0.7, 0.7), truncate=2.5)
            noise /= max(float(noise.std()), 1e-6)
        image += np.float32(look.noise) * noise
        stored = np.clip(np.round(image + 1024.0), 0, 4095).astype(np.int16)
    else:
        image *= 1.0 + look.bias * smooth_noise(rng, grid.shape, cells=4)
        real = image + rng.normal(0.0, look.noise, size=image.shape).astype(np.float32)
        imaginary = rng.normal(0.0, look.noise, size=image.shape).astype(np.float32)
        magnitude = np.sqrt(real * real + imaginary * imaginary) * np.float32(scanner.gain)
        stored = np.clip(np.round(magnitude), 0, 65535).astype(np.uint16)
    return stored


def _shifted_look(look: Appearance, shift: Shift) -> Appearance:
    if shift.contrast == 1.0 and shift.noise == 1.0:
        return look

    def vessel(value: float) -> float:
        return look.brain + (value - look.brain) * shift.contrast

    return dataclasses.replace(look, artery=vessel(look.artery), vein=vessel(look.vein),
                               aneurysm=vessel(look.aneurysm), noise=look.noise * shift.noise)


def _tissue(grid: Grid, pose: HeadPose, look: Appearance, modality: str, rng: np.random.Generator,
            head: Head | None = None, randomised: bool = False) -> np.ndarray:
    """Scalp, skull, CSF and brain on a coarse grid, interpolated to the acquisition grid.
    Randomised: the head's extra skull-base bones, orbits (fat and globes), and brain texture
    of a random strength and grain."""
    axes = coarse_axes(grid.shape, grid.spacing)
    head_points = pose.to_head(grid.points(*axes)).astype(np.float32)
    scalp = soft_ellipsoid(head_points, SCALP)
    outer = soft_ellipsoid(head_points, SKULL_OUTER)
    inner = soft_ellipsoid(head_points, SKULL_INNER)
    brain = soft_ellipsoid(head_points, BRAIN)
    csf = np.max([soft_ellipsoid(head_points, e) for e in CSF_SPACES], axis=0)
    bones = head.bones if head is not None else []
    base = np.max([soft_ellipsoid(head_points, e, edge_mm=2.0) for e in [*SKULL_BASE, *bones]], axis=0) * outer
    if randomised:
        texture = 1.0 + rng.uniform(0.02, 0.12) * smooth_noise(rng, brain.shape, cells=7) \
            + rng.uniform(0.0, 0.08) * smooth_noise(rng, brain.shape, cells=int(rng.integers(12, 28)))
    else:
        texture = 1.0 + 0.06 * smooth_noise(rng, brain.shape, cells=7)
    brain_value = look.brain * texture * (1 - csf) + look.csf * csf
    bone = look.bone * (1.0 + 0.1 * smooth_noise(rng, brain.shape, cells=6))
    image = (look.air * (1 - scalp) + look.soft * (scalp - outer) + bone * (outer - inner)
             + look.csf * (inner - brain) + brain_value * brain)
    image = image * (1 - base) + bone * base
    if randomised:
        for side in (1, -1):
            fat = soft_ellipsoid(head_points, Ellipsoid((side * 31.0, -60.0, -8.0), (14.0, 16.0, 12.0)))
            globe = soft_ellipsoid(head_points, Ellipsoid((side * 31.0, -66.0, -8.0), (11.0, 11.0, 11.0)))
            image += fat * (look.soft - image)
            image += globe * (look.csf - image)
    return upsample(image, grid.shape)


def generate_series(plan: SeriesPlan, series_root: str) -> dict:
    """Render and write one series; returns its train.csv row, localizer rows and manifest entry."""
    stored, geometry, aneurysms, head, pose, look, scanner, vessels, grid_affine = render_series(plan)
    modality_tag = "CT" if plan.modality == "CTA" else "MR"
    header = SeriesHeader(
        modality=modality_tag,
        series_uid=plan.series_uid,
        study_uid=derived_uid("demo study", plan.seed, plan.index),
        patient_name=f"{FAKE_PATIENT_TOKEN}^PHANTOM{plan.index:03d}",
        patient_id=f"{FAKE_PATIENT_TOKEN}-{plan.seed}-{plan.index:04d}",
        patient_birth_date=f"{2026 - plan.age}0101",
        patient_age=f"{plan.age:03d}Y",
        patient_sex=plan.sex[0],
        series_description=f"{plan.modality} phantom",
        protocol=plan.modality,
    )
    paths = write_series(
        Path(series_root) / plan.series_uid, stored, geometry, header,
        rescale_intercept=-1024.0 if modality_tag == "CT" else 0.0,
        multiframe=plan.multiframe, transfer_syntax=plan.transfer_syntax, seed=("demo", plan.seed, plan.index),
    )
    save_nifti(vessel_labels_path(Path(series_root).parent, plan.series_uid), vessels, grid_affine, dtype=np.uint8)
    sops = [p.stem for p in paths]
    localizers = []
    for aneurysm in aneurysms:
        sop, coordinates = localizer(geometry, sops, plan.multiframe, pose.to_patient(aneurysm.centre))
        localizers.append({"SeriesInstanceUID": plan.series_uid, "SOPInstanceUID": sop,
                           "coordinates": coordinates, "location": aneurysm.location})
    row = train_row(plan.series_uid, plan.age, plan.sex, plan.modality, plan.locations)
    manifest = {
        "plan": {**asdict(plan), "shift": plan.shift.changes()},
        "files": len(paths),
        "shape": list(stored.shape),
        "aneurysms": [
            {"location": a.location, "centre_mm": [round(float(v), 3) for v in pose.to_patient(a.centre)],
             "diameter_mm": round(a.diameter * pose.scale, 2), "lobulated": len(a.lobes) > 1, "site": a.site_kind}
            for a in aneurysms
        ],
        "head_origin_mm": [round(float(v), 3) for v in pose.translation],  # centre of the circle of Willis
        "scanner": asdict(scanner),
        "variants": head.variants,
        "mimics": head.mimics,
    }
    return {"row": row, "localizers": localizers, "manifest": manifest}


# --------------------------------------------------------------------------------------
# The dataset


def generate_demo_data(
    out: str | os.PathLike,
    n_series: int = DEMO_SERIES,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    only: Collection[str] | None = None,
    shift: Shift = Shift(),
    randomised: bool = False,
    scheduler: str | None = None,
) -> PhantomSummary:
    """Write the demo dataset into ``out`` (which must not exist yet), atomically
    (`pipeline.phantoms.write_phantom_dataset`).

    Args:
        out: destination folder.
        n_series: number of series (about 40 % positive).
        seed: same seed, same bytes.
        workers: processes (default: the number of cores, at most 4).
        progress: called with (series done, total) after each series.
        only: write just these series (SeriesInstanceUIDs) of the dataset, e.g. a model's
            held-out series; the tables then list only them.
        shift: a controlled change of the family (`Shift`); the identity by default.
        randomised: domain randomisation (wide ranges of anatomy, contrast and scanner).
        scheduler: a Dask scheduler (`pipeline.executor`); default this machine's processes.
    """
    plans = plan_dataset(n_series, seed, shift=shift, randomised=randomised)
    if only is not None:
        plans = [plan for plan in plans if plan.series_uid in set(only)]
    header = {"family": "demo", "generator": "pipeline.demo", "version": __version__, "seed": seed,
              "shift": shift.changes(), **({"randomised": True} if randomised else {})}
    return write_phantom_dataset(out, plans, generate_series, header, workers, progress, scheduler)
