"""What every phantom family shares: the RSNA tables, the label plan and the atomic dataset folder.

A phantom family is a generator of synthetic head series in the RSNA layout
(``series/<SeriesInstanceUID>/*.dcm``, ``train.csv``, ``train_localizers.csv``) with its
ground truth in ``demo_manifest.json`` (`MANIFEST`; no torch here). Two families exist:

* ``demo`` (`pipeline.demo`): the built-in training data, optionally with a controlled
  `pipeline.demo.generate.Shift`;
* ``external`` (`pipeline.external`): written independently, for validation only: the
  builder refuses it, so no model ever trains on it.

The image model of a family (anatomy, textures, noise, acquisition) is its own; only the
bookkeeping below is common, so that both write the same tables the same way.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.files import remove_leftovers, temporary_beside, write_json
from pipeline.io.dicomwriter import SeriesGeometry
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS, MODALITIES
from pipeline.executor import executor, say

TRAIN_COLUMNS = ["SeriesInstanceUID", "PatientAge", "PatientSex", "Modality", *LABEL_COLUMNS]
LOCALIZER_COLUMNS = ["SeriesInstanceUID", "SOPInstanceUID", "coordinates", "location"]
MANIFEST = "demo_manifest.json"  # in a phantom folder's root: what the generator wrote, and its ground truth
FAKE_PATIENT_TOKEN = "ZZFAKE"  # in every fake patient field, so tests can prove they are never shown
VALIDATION_ONLY = "validation_only"  # manifest key: the family must never be trained on


@dataclass
class PhantomSummary:
    """What a family's generator wrote."""

    root: Path
    n_series: int
    n_positive: int
    n_files: int
    seconds: float
    per_modality: dict[str, int] = field(default_factory=dict)


def _read_manifest(root: str | os.PathLike) -> dict | None:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def aneurysm_diameters(root: str | os.PathLike) -> dict[str, dict[str, list[float]]]:
    """The diameter (mm) of each aneurysm of a phantom folder, by series and location, in the
    order of its localizers; empty for a folder that is not a phantom dataset."""
    manifest = _read_manifest(root) or {}
    sizes: dict[str, dict[str, list[float]]] = {}
    for uid, entry in (manifest.get("series") or {}).items():
        for aneurysm in (entry.get("aneurysms") or []) if isinstance(entry, dict) else []:
            if isinstance(aneurysm, dict) and isinstance(aneurysm.get("diameter_mm"), (int, float)):
                sizes.setdefault(uid, {}).setdefault(str(aneurysm.get("location")), []).append(
                    float(aneurysm["diameter_mm"]))
    return sizes


def read_family(root: str | os.PathLike) -> dict | None:
    """The family record of a phantom folder (``family``, ``shift``, ``seed``, ...), without its
    per-series ground truth; None for a folder that is not a phantom dataset."""
    manifest = _read_manifest(root)
    if manifest is None:
        return None
    record = {key: value for key, value in manifest.items() if key != "series"}
    record.setdefault("family", "demo" if manifest.get("generator") == "pipeline.demo" else "unknown")
    return record


def family_label(record: dict | None, root: str | os.PathLike) -> str:
    """How a test set is named in evaluations: ``demo``, ``demo, calibre x0.7``, ``external``,
    or the folder's name for data that is not a phantom family."""
    if record is None:
        return Path(root).name
    shift = record.get("shift") or {}
    family = str(record["family"]) + (" randomised" if record.get("randomised") else "")
    return ", ".join([family, *(f"{k} x{v:g}" if k != "rotation" else f"rotation {v:g} deg" for k, v in shift.items())])


# --------------------------------------------------------------------------------------
# The label plan


def modality_mix(n_series: int, shares: dict[str, float]) -> list[str]:
    """``n_series`` modalities in the proportions of ``shares``, every one present when there
    are enough series."""
    total = sum(shares.values())
    counts = {m: max(1 if n_series >= len(shares) else 0, int(round(n_series * s / total))) for m, s in shares.items()}
    while sum(counts.values()) > n_series:
        counts[max(counts, key=counts.get)] -= 1
    first = next(iter(shares))
    while sum(counts.values()) < n_series:
        counts[first] += 1
    return [m for m in shares for _ in range(counts[m])]


def stratified_positives(modalities: Sequence[str], share: float, rng: np.random.Generator,
                         order: Sequence[str] = MODALITIES) -> np.ndarray:
    """About ``share`` of the series positive, stratified so that every modality has positives
    (drawn modality by modality in ``order``)."""
    modalities_array = np.array(modalities)
    positive = np.zeros(len(modalities), dtype=bool)
    target = int(round(share * len(modalities)))
    present = [m for m in order if np.any(modalities_array == m)]
    per_modality = {m: max(1, int(round(share * np.sum(modalities_array == m)))) for m in present}
    while sum(per_modality.values()) > target and max(per_modality.values()) > 1:
        per_modality[max(per_modality, key=per_modality.get)] -= 1
    for modality, count in per_modality.items():
        members = np.flatnonzero(modalities_array == modality)
        positive[rng.choice(members, size=min(count, len(members)), replace=False)] = True
    return positive


def deal_locations(counts: np.ndarray, rng: np.random.Generator, weights: np.ndarray) -> list[list[str]]:
    """Aneurysm locations per series: every location twice first (when there are enough
    aneurysms), then by ``weights`` (13, RSNA order); no location twice in one series."""
    total = int(counts.sum())
    pool = [LOCATIONS[i % 13] for i in range(min(total, 26))]
    pool += [str(name) for name in rng.choice(LOCATIONS, size=total - len(pool), p=weights / weights.sum())]
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


def train_row(series_uid: str, age: int, sex: str, modality: str, locations: Sequence[str]) -> dict:
    row = {"SeriesInstanceUID": series_uid, "PatientAge": age, "PatientSex": sex, "Modality": modality}
    row.update({name: int(name in locations) for name in LOCATIONS})
    row[ANEURYSM_PRESENT] = int(bool(locations))
    return row


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


# --------------------------------------------------------------------------------------
# The dataset folder


def write_phantom_dataset(
    out: str | os.PathLike,
    plans: Sequence,
    generate_series: Callable[[object, str], dict],
    header: dict,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    scheduler: str | None = None,
) -> PhantomSummary:
    """Write a family's series into ``out`` (which must not exist yet, or be empty), atomically.

    The series go into a hidden sibling folder renamed to ``out`` at the end, so an
    interrupted run never leaves a half-written dataset behind.

    Args:
        out: destination folder.
        plans: one picklable plan per series, each with ``index`` and ``modality``.
        generate_series: ``(plan, series_root) -> {"row", "localizers", "manifest"}``; a
            module-level function (it runs in worker processes).
        header: the manifest's family record (``family``, ``generator``, ``seed``, ...).
        workers: processes (default: the number of cores, at most 4).
        progress: called with (series done, total) after each series.
        scheduler: a Dask scheduler (`pipeline.executor`; workers write into ``out``'s
            hidden sibling, so on a cluster it must be on a shared file system).
    """
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty.")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out.parent, {out.name})  # what a killed generation left
    partial = temporary_beside(out)
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "series").mkdir(parents=True)
    results: dict[int, dict] = {}
    try:
        with executor(scheduler, workers, announce=say) as run:
            tasks = [(generate_series, plan, str(partial / "series")) for plan in plans]
            for done, (position, result) in enumerate(run(_generate, tasks), start=1):
                results[plans[position].index] = result
                if progress:
                    progress(done, len(plans))
        _write_tables(partial, [results[i] for i in sorted(results)], header)
        try:
            if out.exists():
                out.rmdir()  # only an empty folder may be replaced
            os.replace(partial, out)
        except OSError:
            raise FileExistsError(f"{out} was filled by someone else meanwhile.") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return PhantomSummary(
        root=out, n_series=len(plans), n_positive=sum(r["row"][ANEURYSM_PRESENT] for r in results.values()),
        n_files=sum(r["manifest"]["files"] for r in results.values()), seconds=time.perf_counter() - start,
        per_modality={m: sum(p.modality == m for p in plans) for m in MODALITIES},
    )


def _generate(task: tuple) -> dict:
    generate_series, plan, series_root = task
    return generate_series(plan, series_root)


def _write_tables(root: Path, results: list[dict], header: dict) -> None:
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRAIN_COLUMNS)
        writer.writeheader()
        writer.writerows(r["row"] for r in results)
    with open(root / "train_localizers.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOCALIZER_COLUMNS)
        writer.writeheader()
        writer.writerows(row for r in results for row in r["localizers"])
    manifest = {**header, "note": "Synthetic phantoms, not patients.",
                "series": {r["row"]["SeriesInstanceUID"]: r["manifest"] for r in results}}
    write_json(root / MANIFEST, manifest)
