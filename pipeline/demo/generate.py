"""The built-in demo dataset: synthetic head phantoms written as real DICOM, RSNA layout.

    python -m pipeline demo-data --out DIR [--series N] [--seed S] [--workers N]

writes ``DIR/series/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, ``DIR/train.csv``,
``DIR/train_localizers.csv`` (exactly the RSNA columns) and ``DIR/demo_manifest.json``
(the ground truth a real dataset does not have: aneurysm centres and sizes in patient
mm, variants, mimics, acquisition). Same seed, same bytes.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Collection

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from pipeline import __version__
from pipeline.demo import DEMO_SERIES, MANIFEST
from pipeline.demo.anatomy import (
    BRAIN, CSF_SPACES, SCALP, SKULL_BASE, SKULL_INNER, SKULL_OUTER, Aneurysm, Head, build_head, place_aneurysm,
)
from pipeline.demo.render import Grid, coarse_axes, render_spheres, render_tubes, smooth_noise, soft_ellipsoid, upsample
from pipeline.files import write_json
from pipeline.io.dicomwriter import SeriesGeometry, SeriesHeader, derived_uid, write_series
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS, MODALITIES
from pipeline.pool import process_pool

TRAIN_COLUMNS = ["SeriesInstanceUID", "PatientAge", "PatientSex", "Modality", *LABEL_COLUMNS]
LOCALIZER_COLUMNS = ["SeriesInstanceUID", "SOPInstanceUID", "coordinates", "location"]
FAKE_PATIENT_TOKEN = "ZZFAKE"  # in every fake patient field, so tests can prove they are never shown

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


@dataclass
class DemoSummary:
    """What `generate_demo_data` wrote."""

    root: Path
    n_series: int
    n_positive: int
    n_files: int
    seconds: float
    per_modality: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Planning


def plan_dataset(n_series: int = DEMO_SERIES, seed: int = 0, positive_share: float = 0.4) -> list[SeriesPlan]:
    """Choose modality, labels and acquisition of every series (deterministic in ``seed``)."""
    if n_series < 1:
        raise ValueError("n_series must be at least 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    modalities = _modality_mix(n_series)
    rng.shuffle(modalities)
    positive = _positives(modalities, positive_share, rng)
    counts = np.where(positive, rng.choice([1, 2, 3], size=n_series, p=[0.6, 0.3, 0.1]), 0)
    locations = _deal_locations(counts, rng)

    plans = []
    for index in range(n_series):
        modality = modalities[index]
        series_rng = np.random.default_rng(np.random.SeedSequence([seed, 1, index]))
        plans.append(_acquisition(index, seed, modality, locations[index], series_rng))
    return plans


def _modality_mix(n_series: int) -> list[str]:
    total = sum(MODALITY_SHARE.values())
    counts = {m: max(1 if n_series >= len(MODALITIES) else 0, int(round(n_series * s / total)))
              for m, s in MODALITY_SHARE.items()}
    while sum(counts.values()) > n_series:
        counts[max(counts, key=counts.get)] -= 1
    while sum(counts.values()) < n_series:
        counts["CTA"] += 1
    return [m for m in MODALITY_SHARE for _ in range(counts[m])]


def _positives(modalities: list[str], share: float, rng: np.random.Generator) -> np.ndarray:
    """About ``share`` of the series positive, stratified so that every modality has positives."""
    modalities_array = np.array(modalities)
    positive = np.zeros(len(modalities), dtype=bool)
    target = int(round(share * len(modalities)))
    per_modality = {m: max(1, int(round(share * np.sum(modalities_array == m)))) for m in MODALITY_SHARE
                    if np.any(modalities_array == m)}
    while sum(per_modality.values()) > target and max(per_modality.values()) > 1:
        per_modality[max(per_modality, key=per_modality.get)] -= 1
    for modality, count in per_modality.items():
        members = np.flatnonzero(modalities_array == modality)
        positive[rng.choice(members, size=min(count, len(members)), replace=False)] = True
    return positive


def _deal_locations(counts: np.ndarray, rng: np.random.Generator) -> list[list[str]]:
    """Aneurysm locations per series: every location twice first (when there are enough
    aneurysms), then by real-world frequency; no location twice in one series."""
    total = int(counts.sum())
    pool = [LOCATIONS[i % 13] for i in range(min(total, 26))]
    pool += [str(name) for name in rng.choice(LOCATIONS, size=total - len(pool), p=LOCATION_WEIGHT / LOCATION_WEIGHT.sum())]
    rng.shuffle(pool)
    dealt: list[list[str]] = [[] for _ in counts]
    for index in np.argsort(-counts, kind="stable"):
        for _ in range(counts[index]):
            choice = next((name for name in pool if name not in dealt[index]), None)
            if choice is None:
                choice = next(name for name in LOCATIONS if name not in dealt[index])
            else:
                pool.remove(choice)
            dealt[index].append(choice)
    return dealt


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
    """Rigid placement of the head frame in patient coordinates: p = R @ h + t."""

    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator) -> "HeadPose":
        yaw, pitch, roll = np.radians(rng.uniform([-8, -12, -5], [8, 12, 5]))
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
        ry = np.array([[np.cos(roll), 0, np.sin(roll)], [0, 1, 0], [-np.sin(roll), 0, np.cos(roll)]])
        return cls(rz @ rx @ ry, rng.uniform(-6, 6, size=3))

    def to_patient(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points) @ self.rotation.T + self.translation

    def to_head(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points) - self.translation) @ self.rotation


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
    minimum = max(2.0, plan.slice_mm + 1.5)  # the localizer slice must cut through the dome
    aneurysms = []
    for location in plan.locations:
        sites = head.sites[location]
        site = sites[int(rng.integers(len(sites)))]
        diameter = float(np.clip(rng.lognormal(np.log(5.5), 0.4), minimum, 12.0))
        aneurysms.append(place_aneurysm(site, diameter, rng))
    return aneurysms


def render_series(plan: SeriesPlan) -> tuple[np.ndarray, SeriesGeometry, list[Aneurysm], Head, HeadPose, Appearance]:
    """The stored pixel values of a series, with what was drawn."""
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 2, plan.index]))
    head = build_head(rng, keep=set(plan.locations))
    aneurysms = choose_aneurysms(head, plan, rng)
    pose = HeadPose.random(rng)
    look = appearance(plan.modality, rng)
    grid, geometry = acquisition_grid(plan, pose, rng)

    image = _tissue(grid, pose, look, plan.modality, rng)
    thin = grid.thin(max(1, int(round(plan.slice_mm / 1.0))) if plan.slice_mm > 2 else 1)

    def composite(occupancy: np.ndarray, value: float) -> None:
        if thin is not grid:  # slice profile: the mean of the thin sub-slices
            occupancy = occupancy.reshape(grid.shape[0], -1, *grid.shape[1:]).mean(axis=1)
        image[:] += occupancy * (np.float32(value) - image)

    arteries = [(pose.to_patient(t.points), t.radii) for t in head.tubes if t.kind == "artery"]
    veins = [(pose.to_patient(t.points), t.radii) for t in head.tubes if t.kind == "vein"]
    composite(render_tubes(thin, veins), look.vein)
    composite(np.maximum(render_tubes(thin, arteries),
                         render_spheres(thin, [(pose.to_patient(c), r) for c, r in head.bulges])), look.artery)
    lobes = [(pose.to_patient(c), r) for a in aneurysms for c, r in a.lobes]
    composite(render_spheres(thin, lobes), look.aneurysm)

    if plan.modality == "CTA":
        image += rng.normal(0.0, look.noise, size=image.shape).astype(np.float32)
        stored = np.clip(np.round(image + 1024.0), 0, 4095).astype(np.int16)
    else:
        image *= 1.0 + look.bias * smooth_noise(rng, grid.shape, cells=4)
        real = image + rng.normal(0.0, look.noise, size=image.shape).astype(np.float32)
        imaginary = rng.normal(0.0, look.noise, size=image.shape).astype(np.float32)
        stored = np.clip(np.round(np.sqrt(real * real + imaginary * imaginary)), 0, 4095).astype(np.uint16)
    if plan.descending:
        stored = stored[::-1].copy()
        geometry.positions = geometry.positions[::-1].copy()
    return stored, geometry, aneurysms, head, pose, look


def _tissue(grid: Grid, pose: HeadPose, look: Appearance, modality: str, rng: np.random.Generator) -> np.ndarray:
    """Scalp, skull, CSF and brain on a coarse grid, interpolated to the acquisition grid."""
    axes = coarse_axes(grid.shape, grid.spacing)
    head_points = pose.to_head(grid.points(*axes)).astype(np.float32)
    scalp = soft_ellipsoid(head_points, SCALP)
    outer = soft_ellipsoid(head_points, SKULL_OUTER)
    inner = soft_ellipsoid(head_points, SKULL_INNER)
    brain = soft_ellipsoid(head_points, BRAIN)
    csf = np.max([soft_ellipsoid(head_points, e) for e in CSF_SPACES], axis=0)
    base = np.max([soft_ellipsoid(head_points, e, edge_mm=2.0) for e in SKULL_BASE], axis=0) * outer
    texture = 1.0 + 0.06 * smooth_noise(rng, brain.shape, cells=7)
    brain_value = look.brain * texture * (1 - csf) + look.csf * csf
    bone = look.bone * (1.0 + 0.1 * smooth_noise(rng, brain.shape, cells=6))
    image = (look.air * (1 - scalp) + look.soft * (scalp - outer) + bone * (outer - inner)
             + look.csf * (inner - brain) + brain_value * brain)
    image = image * (1 - base) + bone * base
    return upsample(image, grid.shape)


def localizer(geometry: SeriesGeometry, sops: list[str], multiframe: bool, centre: np.ndarray) -> tuple[str, str]:
    """(SOPInstanceUID, coordinates) of the slice nearest to ``centre``, as in train_localizers.csv."""
    row, column = np.array(geometry.row_cosine), np.array(geometry.column_cosine)
    normal = np.cross(row, column)
    k = int(np.argmin(np.abs((centre - geometry.positions) @ normal)))
    offset = centre - geometry.positions[k]
    x = float(offset @ row) / geometry.pixel_spacing[1]
    y = float(offset @ column) / geometry.pixel_spacing[0]
    if multiframe:
        return sops[0], f"{{'x': {x:.2f}, 'y': {y:.2f}, 'f': {k}}}"
    return sops[k], f"{{'x': {x:.2f}, 'y': {y:.2f}}}"


def generate_series(plan: SeriesPlan, series_root: str) -> dict:
    """Render and write one series; returns its train.csv row, localizer rows and manifest entry."""
    stored, geometry, aneurysms, head, pose, look = render_series(plan)
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
    )
    paths = write_series(
        Path(series_root) / plan.series_uid, stored, geometry, header,
        rescale_intercept=-1024.0 if modality_tag == "CT" else 0.0,
        multiframe=plan.multiframe, transfer_syntax=plan.transfer_syntax, seed=("demo", plan.seed, plan.index),
    )
    sops = [p.stem for p in paths]
    localizers = []
    for aneurysm in aneurysms:
        sop, coordinates = localizer(geometry, sops, plan.multiframe, pose.to_patient(aneurysm.centre))
        localizers.append({"SeriesInstanceUID": plan.series_uid, "SOPInstanceUID": sop,
                           "coordinates": coordinates, "location": aneurysm.location})
    row = {"SeriesInstanceUID": plan.series_uid, "PatientAge": plan.age, "PatientSex": plan.sex,
           "Modality": plan.modality}
    row.update({name: int(name in plan.locations) for name in LOCATIONS})
    row[ANEURYSM_PRESENT] = int(bool(aneurysms))
    manifest = {
        "plan": asdict(plan),
        "files": len(paths),
        "shape": list(stored.shape),
        "aneurysms": [
            {"location": a.location, "centre_mm": [round(float(v), 3) for v in pose.to_patient(a.centre)],
             "diameter_mm": round(a.diameter, 2), "lobulated": len(a.lobes) > 1, "site": a.site_kind}
            for a in aneurysms
        ],
        "head_origin_mm": [round(float(v), 3) for v in pose.translation],  # centre of the circle of Willis
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
) -> DemoSummary:
    """Write the demo dataset into ``out`` (which must not exist yet), atomically.

    The series are written into a hidden sibling folder renamed to ``out`` at the end,
    so an interrupted run never leaves a half-written dataset behind.

    Args:
        out: destination folder.
        n_series: number of series (about 40 % positive).
        seed: same seed, same bytes.
        workers: processes (default: the number of cores, at most 4).
        progress: called with (series done, total) after each series.
        only: write just these series (SeriesInstanceUIDs) of the dataset, e.g. a model's
            held-out series; the tables then list only them.
    """
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty.")
    plans = plan_dataset(n_series, seed)
    if only is not None:
        plans = [plan for plan in plans if plan.series_uid in set(only)]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    partial.chmod(0o755)  # mkdtemp makes it private; the dataset is not
    (partial / "series").mkdir()
    workers = max(1, min(workers or min(os.cpu_count() or 1, 4), len(plans)))
    results: dict[int, dict] = {}
    try:
        if workers == 1:
            for done, plan in enumerate(plans, start=1):
                results[plan.index] = generate_series(plan, str(partial / "series"))
                if progress:
                    progress(done, len(plans))
        else:
            with process_pool(workers) as pool:
                futures = {pool.submit(generate_series, plan, str(partial / "series")): plan.index for plan in plans}
                for done, future in enumerate(as_completed(futures), start=1):
                    results[futures[future]] = future.result()
                    if progress:
                        progress(done, len(plans))
        _write_tables(partial, [results[i] for i in sorted(results)], seed)
        try:
            if out.exists():
                out.rmdir()  # only an empty folder may be replaced
            os.replace(partial, out)
        except OSError:
            raise FileExistsError(f"{out} was filled by someone else meanwhile.") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    per_modality = {m: sum(p.modality == m for p in plans) for m in MODALITIES}
    return DemoSummary(
        root=out, n_series=len(plans), n_positive=sum(bool(p.locations) for p in plans),
        n_files=sum(r["manifest"]["files"] for r in results.values()),
        seconds=time.perf_counter() - start, per_modality=per_modality,
    )


def _write_tables(root: Path, results: list[dict], seed: int) -> None:
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRAIN_COLUMNS)
        writer.writeheader()
        writer.writerows(r["row"] for r in results)
    with open(root / "train_localizers.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOCALIZER_COLUMNS)
        writer.writeheader()
        writer.writerows(row for r in results for row in r["localizers"])
    manifest = {
        "generator": "pipeline.demo", "version": __version__, "seed": seed,
        "note": "Synthetic phantoms, not patients.",
        "series": {r["row"]["SeriesInstanceUID"]: r["manifest"] for r in results},
    }
    write_json(root / MANIFEST, manifest)
