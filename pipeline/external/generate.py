"""Writing the external family: plans, acquisitions and DICOM, in the RSNA layout.

    python -m pipeline demo-data --family external --out DIR [--series N] [--seed S]

Acquisitions differ from the demo family on purpose: other fields of view and matrices,
oblique slice planes for MR, larger head movements, other CT rescale and MR scanner gain,
one to four receive coils. The manifest marks the family validation-only.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Collection

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from scipy.spatial.transform import Rotation

from pipeline import __version__
from pipeline.demo.render import Grid
from pipeline.external import EXTERNAL_SERIES, FAMILY
from pipeline.external.anatomy import Dome, Subject, build_subject, grow_dome
from pipeline.external.render import ARTERY, VEIN, HeadShape, Look, bias_field, composite, rasterise, scanner, tissue
from pipeline.io.dicomwriter import SeriesGeometry, SeriesHeader, derived_uid, write_series
from pipeline.phantoms import (
    FAKE_PATIENT_TOKEN, VALIDATION_ONLY, PhantomSummary, deal_locations, localizer, modality_mix, stratified_positives,
    train_row, write_phantom_dataset,
)

MODALITY_SHARE = {"CTA": 16, "MRA": 16, "MRI T2": 8, "MRI T1post": 8}
LOCATION_WEIGHT = np.array([3, 3, 9, 9, 11, 11, 13, 4, 4, 8, 8, 6, 11], dtype=float)


@dataclass
class ExternalPlan:
    index: int
    seed: int
    modality: str
    locations: list[str]
    pixel_mm: float
    slice_mm: float
    matrix: int
    tilt_deg: float
    plane: str
    age: int
    sex: str
    series_uid: str


def plan_external(n_series: int = EXTERNAL_SERIES, seed: int = 0) -> list[ExternalPlan]:
    """Modality, labels and acquisition of every series (deterministic in ``seed``); half positive."""
    if n_series < 1:
        raise ValueError("n_series must be at least 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 77]))
    modalities = modality_mix(n_series, MODALITY_SHARE)
    rng.shuffle(modalities)
    positive = stratified_positives(modalities, 0.5, rng)
    counts = np.where(positive, rng.choice([1, 2], size=n_series, p=[0.7, 0.3]), 0)
    locations = deal_locations(counts, rng, LOCATION_WEIGHT)
    plans = []
    for index, modality in enumerate(modalities):
        r = np.random.default_rng(np.random.SeedSequence([seed, 78, index]))
        if modality == "CTA":
            plane, fov, matrix, slice_mm, tilt = "axial", r.uniform(190, 230), 320, r.uniform(0.625, 1.25), 0.0
        elif modality == "MRA":
            plane, fov, matrix, slice_mm, tilt = "axial", r.uniform(180, 210), 384, r.uniform(0.5, 1.0), r.uniform(-12, 12)
        elif modality == "MRI T2":
            plane = str(r.choice(["axial", "coronal", "sagittal"], p=[0.5, 0.3, 0.2]))
            fov, matrix, slice_mm, tilt = r.uniform(200, 240), int(r.choice([320, 384, 448])), r.uniform(3.0, 6.0), r.uniform(-18, 18)
        else:
            plane = str(r.choice(["sagittal", "axial"], p=[0.6, 0.4]))
            fov, matrix, slice_mm, tilt = r.uniform(220, 250), 224, r.uniform(0.85, 1.3), r.uniform(-10, 10)
        plans.append(ExternalPlan(index, seed, modality, list(locations[index]), round(float(fov / matrix), 4),
                                  round(float(slice_mm), 3), matrix, round(float(tilt), 2), plane,
                                  int(r.integers(20, 90)), str(r.choice(["Female", "Male"])),
                                  derived_uid("external series", seed, index)))
    return plans


def random_look(modality: str, rng: np.random.Generator) -> Look:
    """Intensities and scanner behaviour of one series."""
    u = rng.uniform
    psf = (u(0.25, 0.5), u(0.35, 0.7))
    if modality == "CTA":
        artery = u(200, 620)
        return Look(-1000, u(-110, -70), u(35, 60), u(900, 1900), u(250, 500), u(0, 12), u(36, 46), u(24, 32), u(5, 15),
                    artery, artery * u(0.3, 1.05), artery * u(0.8, 1.0), 0.0, u(0.0, 0.15), psf, u(5, 22), 0, 0.0,
                    u(0, 45))
    if modality == "MRA":
        artery = u(450, 1100)
        return Look(0, u(300, 480), u(110, 160), u(15, 40), u(180, 300), u(25, 70), u(120, 190), u(150, 230),
                    u(40, 80), artery, u(60, 160), artery * u(0.75, 1.0), u(0.1, 0.45), u(0.1, 0.45), psf, u(8, 22),
                    int(rng.choice([1, 2, 4], p=[0.3, 0.5, 0.2])), u(0.05, 0.25), 0.0)
    if modality == "MRI T2":
        grey = u(480, 650)
        return Look(0, u(350, 600), u(220, 320), u(20, 50), u(150, 260), u(900, 1400), grey, grey * u(0.6, 0.8),
                    u(1000, 1500), u(30, 110), u(40, 160), u(120, 420), 0.0, 0.0, psf, u(10, 25),
                    int(rng.choice([1, 2, 4], p=[0.3, 0.5, 0.2])), u(0.05, 0.25), 0.0)
    white = u(420, 520)
    return Look(0, u(600, 820), u(280, 360), u(25, 60), u(350, 520), u(70, 140), white * u(0.7, 0.85), white,
                u(60, 120), u(480, 820), u(550, 950), u(420, 760), 0.0, u(0.0, 0.3), psf, u(8, 18),
                int(rng.choice([1, 2, 4], p=[0.3, 0.5, 0.2])), u(0.05, 0.25), 0.0)


PLANE_AXES = {  # (row, column) direction cosines before the tilt
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
# Head-frame centre of the covered slab and its extent along the slice normal, mm.
COVER = {"CTA": ((0, 0, -10), 170), "MRA": ((0, 0, -20), 80), "MRI T2": ((0, 0, 0), 165), "MRI T1post": ((0, 0, 0), 170)}
COVER_PLANE = {"coronal": ((0, 0, -5), 180), "sagittal": ((0, 0, -5), 144)}


def acquisition(plan: ExternalPlan, to_patient, circle: np.ndarray, rng: np.random.Generator) -> tuple[Grid, SeriesGeometry]:
    """The slice grid: the plane tilted about the left-right axis, centred on the head (the MRA
    slab on the circle of Willis) give or take the technologist's placement."""
    tilt = Rotation.from_euler("x", plan.tilt_deg, degrees=True)
    row, column = (tilt.apply(np.array(v)) for v in PLANE_AXES[plan.plane])
    normal = np.cross(row, column)
    centre, extent = COVER_PLANE.get(plan.plane) or COVER[plan.modality]
    centre = np.array(centre, float) + (circle + (0, 0, 10) if plan.modality == "MRA" else 0)
    centre = to_patient(centre) + rng.uniform(-6, 6, 3)
    n_slices = int(round(extent / plan.slice_mm)) + 1
    half = (plan.matrix - 1) / 2 * plan.pixel_mm
    first = centre - normal * extent / 2 - row * half - column * half
    positions = first + np.outer(np.arange(n_slices) * plan.slice_mm, normal)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = (normal * plan.slice_mm, column * plan.pixel_mm,
                                                                  row * plan.pixel_mm, first)
    return Grid((n_slices, plan.matrix, plan.matrix), affine), SeriesGeometry(
        positions, tuple(row), tuple(column), (plan.pixel_mm, plan.pixel_mm))


def choose_domes(subject: Subject, plan: ExternalPlan, rng: np.random.Generator) -> list[Dome]:
    minimum = max(2.5, plan.slice_mm + 1.0)  # the localizer slice must cut through the dome
    domes = []
    for location in plan.locations:
        sites = subject.sites[location]
        site = sites[int(rng.integers(len(sites)))]
        diameter = float(np.clip(rng.lognormal(np.log(5.0), 0.45), minimum, 14.0))
        domes.append(grow_dome(site, diameter, rng))
    return domes


def render_external(plan: ExternalPlan):
    """Stored pixels, geometry, domes (patient mm), the subject, the look and the centre of the
    circle of Willis (patient mm) of one series."""
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 79, plan.index]))
    subject = build_subject(rng, keep=set(plan.locations))
    domes = choose_domes(subject, plan, rng)
    pose = Rotation.from_euler("zxy", rng.uniform([-10, -20, -8], [10, 20, 8]), degrees=True)
    offset = rng.uniform([-15, -15, -12], [15, 15, 12])
    look = random_look(plan.modality, rng)
    ct = plan.modality == "CTA"

    def to_patient(points):
        return pose.apply(np.asarray(points, float)) + offset

    def to_head(points):
        flat = np.asarray(points, np.float64).reshape(-1, 3)
        return pose.inv().apply(flat - offset).reshape(np.shape(points))

    grid, geometry = acquisition(plan, to_patient, subject.circle, rng)
    shape = HeadShape.random(rng, subject.size, subject.circle)
    image = tissue(grid, to_head, shape, look, rng, ct)
    kinds = {"artery": ARTERY, "vein": VEIN}
    vessels = [(to_patient(v.points), v.radii, kinds[v.kind]) for v in subject.vessels]
    vessels += [(to_patient(m.centre[None]), np.array([m.axes.max()]), ARTERY) for m in subject.mimics]
    placed = [Dome(d.location, to_patient(d.centre), d.axes, pose.as_matrix() @ d.frame,
                   [(to_patient(c), r) for c, r in d.blebs]) for d in domes]
    voxels, occupancy, intensity = rasterise(grid, vessels, placed, look, plan.slice_mm)
    composite(image, voxels, occupancy, intensity, (look.artery, look.vein, look.dome))
    if not ct:
        image *= bias_field(grid, look.bias, rng)
    image = scanner(image, look, rng, ct)
    if ct:
        stored = np.clip(np.round(image + 1000.0), 0, 4095).astype(np.int16)
    else:
        gain = rng.uniform(0.4, 3.0)  # scanners differ in their arbitrary units
        stored = np.clip(np.round(image * gain), 0, 65535).astype(np.uint16)
    return stored, geometry, placed, subject, look, to_patient(subject.circle)


def generate_external_series(plan: ExternalPlan, series_root: str) -> dict:
    """Render and write one series; its train.csv row, localizer rows and manifest entry."""
    stored, geometry, domes, subject, look, circle = render_external(plan)
    tag = "CT" if plan.modality == "CTA" else "MR"
    header = SeriesHeader(
        modality=tag, series_uid=plan.series_uid, study_uid=derived_uid("external study", plan.seed, plan.index),
        patient_name=f"{FAKE_PATIENT_TOKEN}^EXTERNAL{plan.index:03d}",
        patient_id=f"{FAKE_PATIENT_TOKEN}-X{plan.seed}-{plan.index:04d}",
        patient_birth_date=f"{2026 - plan.age}0615", patient_age=f"{plan.age:03d}Y", patient_sex=plan.sex[0],
        series_description=f"{plan.modality} external phantom", protocol=plan.modality,
        extra={"Manufacturer": "EXTERNAL PHANTOM WORKS"},
    )
    syntax = RLELossless if plan.index % 3 == 0 else ExplicitVRLittleEndian
    paths = write_series(Path(series_root) / plan.series_uid, stored, geometry, header,
                         rescale_intercept=-1000.0 if tag == "CT" else 0.0, transfer_syntax=syntax,
                         seed=("external", plan.seed, plan.index))
    sops = [p.stem for p in paths]
    localizers = []
    for dome in domes:
        sop, coordinates = localizer(geometry, sops, False, dome.centre)
        localizers.append({"SeriesInstanceUID": plan.series_uid, "SOPInstanceUID": sop, "coordinates": coordinates,
                           "location": dome.location})
    manifest = {
        "plan": asdict(plan), "files": len(paths), "shape": list(stored.shape),
        "aneurysms": [{"location": d.location, "centre_mm": [round(float(v), 3) for v in d.centre],
                       "diameter_mm": round(d.diameter, 2), "blebs": len(d.blebs)} for d in domes],
        "circle_of_willis_mm": [round(float(v), 3) for v in circle],
        "variants": subject.notes, "mimics": [m.location for m in subject.mimics],
    }
    return {"row": train_row(plan.series_uid, plan.age, plan.sex, plan.modality, plan.locations),
            "localizers": localizers, "manifest": manifest}


def generate_external_data(out: str | os.PathLike, n_series: int = EXTERNAL_SERIES, seed: int = 0,
                           workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                           only: Collection[str] | None = None, scheduler: str | None = None) -> PhantomSummary:
    """Write the external validation set into ``out`` (must not exist yet, or be empty), atomically.

    Args:
        only: write just these series (SeriesInstanceUIDs) of the set; the tables list only them.
        scheduler: a Dask scheduler (`pipeline.executor`); default this machine's processes.
    """
    plans = plan_external(n_series, seed)
    if only is not None:
        plans = [plan for plan in plans if plan.series_uid in set(only)]
    header = {"family": FAMILY, "generator": "pipeline.external", "version": __version__, "seed": seed,
              VALIDATION_ONLY: True}
    return write_phantom_dataset(out, plans, generate_external_series, header, workers, progress, scheduler)
