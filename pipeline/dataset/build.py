"""DatasetBuilder: 48-voxel training cubes per modality, in the origin project's ``.npz`` contract.

For each series of a data folder (RSNA layout): read, preprocess with the default chain
(or a cached result of it), then extract cubes:

* positives: one cube centred on each localizer point, plus jittered copies; the
  position vector is the one-hot of the localizer's location (13 columns, RSNA order);
* negatives: cubes inside the head, at least ``min_distance_mm`` from every aneurysm,
  a share of them "hard" (on vessels: bright lumen, or flow voids in T2);
* every cube has exactly the requested shape: centred on its point, padded with 0
  (background) where it leaves the volume.

One ``.npz`` per modality holds ``cubes`` (N, s, s, s) float16 in [0, 1], ``labels`` (N,),
``positions`` (N, 13), ``patient_ids`` (N,) SeriesInstanceUID strings, and to trace a
cube back: ``centres_voxel`` (N, 3) in the processed volume, ``centres_mm`` (N, 3) in
patient LPS, ``kinds`` (N,) positive / jittered / negative / hard negative. All of it loads
with ``np.load(path, allow_pickle=False)``. ``build_manifest.json`` beside them records the
parameters, each series' outcome and the counts (`balance_table`).
"""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.dataset.config import BuildConfig
from pipeline.dataset.cubes import extract_cube, sample_points, vessel_candidates, vessel_density
from pipeline.dataset.store import CUBE_DTYPE, DATASET_FILES, MANIFEST_NAME, discard_staged_manifest, manifest_path, stage_manifest
from pipeline.errors import IngestError, StorageError
from pipeline.files import remove_leftovers, storage_error, temporary_beside
from pipeline.io.dicom import load_series
from pipeline.labels import ANEURYSM_PRESENT, LOCATIONS, MODALITIES
from pipeline.phantoms import VALIDATION_ONLY, read_family
from pipeline.executor import executor, in_order, say
from pipeline.io.rsna import Localizer, find_vessel_labels, read_localizers, read_train, unknown_modality
from pipeline.io.nifti import load_label_map
from pipeline.preprocess.cache import (UNREADABLE, ProcessedCache, cached_source, has_vessels, load_processed,
                                      save_processed, source_fingerprint)
from pipeline.preprocess.vessels import labels_on_grid
from pipeline.preprocess.head import head_interior
from pipeline.preprocess.transforms import preprocess
from pipeline.volume import Volume



@dataclass
class SeriesTask:
    series_uid: str
    modality: str
    positive: bool
    localizers: list[Localizer]
    folder: str
    cache: str | None
    config: BuildConfig
    vessel_labels: str | None = None  # the series' vessel label map, if the data folder has one


@dataclass
class SeriesResult:
    """Cubes of one series and what happened to it."""

    series_uid: str
    modality: str
    status: str  # "ok" or "skipped"
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    from_cache: bool = False
    vessel_labels: bool = False  # the cached volume keeps vessel labels
    cubes: np.ndarray | None = None
    labels: np.ndarray | None = None
    positions: np.ndarray | None = None
    centres_voxel: np.ndarray | None = None
    centres_mm: np.ndarray | None = None
    kinds: list[str] = field(default_factory=list)

    def outcome(self) -> dict:
        labels = self.labels if self.labels is not None else np.zeros(0)
        return {
            "modality": self.modality, "status": self.status, "reason": self.reason, "warnings": self.warnings,
            "positive_cubes": int(labels.sum()), "negative_cubes": int((labels == 0).sum()),
            "from_cache": self.from_cache, "vessel_labels": self.vessel_labels, "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------------------
# One series


def process_series(task: SeriesTask) -> SeriesResult:
    """Read (or reuse the cached) processed volume of one series and cut its cubes.

    A series that cannot be used is skipped with its reason; only a failing disk stops the
    build.

    Raises:
        StorageError: the machine could not read or store the series' files.
    """
    start = time.perf_counter()
    result = SeriesResult(task.series_uid, task.modality, "skipped")
    try:
        volume, result.from_cache, result.vessel_labels = _processed_volume(task)
        result.warnings = list(volume.warnings)
        _cut_cubes(task, volume, result)
    except IngestError as exc:
        result.reason = str(exc)
    except Exception as exc:  # a broken series never stops the build; a broken disk does
        if error := storage_error(exc, f"processing series {task.series_uid}"):
            raise error from None
        result.reason = f"unexpected error: {type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - start
    return result


def _processed_volume(task: SeriesTask) -> tuple[Volume, bool, bool]:
    """The cached processed volume while the series folder (and its vessel label map) are
    the ones it was made from, else a fresh one (cached in turn, with the vessel labels on
    its grid); whether it came from the cache, and whether it has vessel labels."""
    cache = Path(task.cache) if task.cache else None
    source = source_fingerprint(task.folder, task.vessel_labels)
    if cache is not None and cache.is_file():
        try:
            if cached_source(cache) == source:
                return load_processed(cache), True, has_vessels(cache)
        except UNREADABLE:
            pass
        cache.unlink(missing_ok=True)  # a damaged or outdated entry is recomputed
    volume = preprocess(load_series(task.folder), task.config.preprocess)
    vessels = None
    if task.vessel_labels and cache is not None:
        try:
            vessels = labels_on_grid(load_label_map(task.vessel_labels), volume)
        except IngestError as exc:
            volume.warnings.append(f"Vessel labels not used: {exc}")
    if cache is not None:
        save_processed(cache, volume, source, vessels)
    return volume, False, vessels is not None


def _cut_cubes(task: SeriesTask, volume: Volume, result: SeriesResult) -> None:
    config = task.config
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, int.from_bytes(task.series_uid.encode()[-8:], "little")]))
    spacing = np.asarray(volume.spacing)
    points, labels, positions, kinds = [], [], [], []

    aneurysms = []
    for localizer in task.localizers:
        try:
            voxel = volume.source_to_voxel(localizer.sop_uid, localizer.x, localizer.y, localizer.frame)
        except IngestError:
            result.warnings.append(
                f"A localizer names image {localizer.sop_uid} (frame {localizer.frame}), which is not in the series; skipped."
            )
            continue
        if np.any(voxel < -0.5) or np.any(voxel > np.array(volume.shape) - 0.5):
            result.warnings.append(f"A localizer ({localizer.location}) falls outside the processed volume; skipped.")
            continue
        aneurysms.append(voxel)
        one_hot = np.zeros(len(LOCATIONS), dtype=np.uint8)
        one_hot[LOCATIONS.index(localizer.location)] = 1
        for copy in range(config.jitter + 1):
            shift = 0.0 if copy == 0 else rng.uniform(-config.jitter_mm, config.jitter_mm, 3) / spacing
            points.append(voxel + shift)
            labels.append(1)
            positions.append(one_hot)
            kinds.append("positive" if copy == 0 else "jittered")
    if task.positive and not aneurysms:
        result.reason = "positive series without a usable localizer: its aneurysms cannot be placed"
        return

    interior, stride = head_interior(volume, config.preprocess)
    n_hard = int(round(config.negatives * config.hard_share))
    spread = config.cube * float(spacing.mean()) / 4
    vessels = vessel_candidates(volume, task.modality, interior, stride, config.preprocess)
    density = vessel_density(vessels, stride, spacing) ** 2  # favour the vessel-dense core: where aneurysms are
    hard = sample_points(vessels, stride, n_hard, rng, spacing, aneurysms, config.min_distance_mm, spread, density)
    easy = sample_points(interior, stride, config.negatives - len(hard), rng, spacing,
                         aneurysms + hard, config.min_distance_mm, spread)
    if len(hard) + len(easy) < config.negatives:
        result.warnings.append(f"Only {len(hard) + len(easy)} of {config.negatives} negative cubes fitted in the head.")
    for point, kind in [(p, "hard negative") for p in hard] + [(p, "negative") for p in easy]:
        points.append(point)
        labels.append(0)
        positions.append(np.zeros(len(LOCATIONS), dtype=np.uint8))
        kinds.append(kind)

    centres = np.round(np.array(points, dtype=float)).reshape(-1, 3).astype(np.int32)
    cubes = [extract_cube(volume.array, c, config.cube).astype(CUBE_DTYPE) for c in centres]
    result.cubes = np.stack(cubes) if cubes else np.zeros((0, config.cube, config.cube, config.cube), CUBE_DTYPE)
    result.labels = np.array(labels, dtype=np.uint8)
    result.positions = np.array(positions, dtype=np.uint8).reshape(-1, len(LOCATIONS))
    result.centres_voxel = centres
    result.centres_mm = volume.voxel_to_patient(centres).astype(np.float32).reshape(-1, 3)
    result.kinds = kinds
    result.status = "ok"


# --------------------------------------------------------------------------------------
# Streaming .npz writer: memory stays bounded whatever the number of cubes


class _ModalityWriter:
    """Appends cubes to a temporary raw file; `finish` packs everything into one ``.npz``."""

    def __init__(self, folder: Path, name: str, cube: int):
        self.target = folder / name
        self.cube = cube
        self.raw_path = temporary_beside(self.target, ".raw")
        self.raw = open(self.raw_path, "wb")
        self.count = 0
        self.series: set[str] = set()
        self.small: dict[str, list] = {k: [] for k in ("labels", "positions", "patient_ids", "centres_voxel",
                                                       "centres_mm", "kinds")}

    def add(self, result: SeriesResult) -> None:
        self.raw.write(np.ascontiguousarray(result.cubes, dtype=CUBE_DTYPE).tobytes())
        self.count += len(result.cubes)
        self.series.add(result.series_uid)
        self.small["labels"].append(result.labels)
        self.small["positions"].append(result.positions)
        self.small["patient_ids"].append(np.array([result.series_uid] * len(result.cubes), dtype=str))
        self.small["centres_voxel"].append(result.centres_voxel)
        self.small["centres_mm"].append(result.centres_mm)
        self.small["kinds"].append(np.array(result.kinds, dtype=str))

    def finish(self) -> Path:
        """Write ``<name>.tmp`` next to the target; the caller renames it."""
        self.raw.close()
        arrays = {
            "labels": _concat(self.small["labels"], np.uint8, (0,)),
            "positions": _concat(self.small["positions"], np.uint8, (0, len(LOCATIONS))),
            "patient_ids": _concat(self.small["patient_ids"], "<U64", (0,)),
            "centres_voxel": _concat(self.small["centres_voxel"], np.int32, (0, 3)),
            "centres_mm": _concat(self.small["centres_mm"], np.float32, (0, 3)),
            "kinds": _concat(self.small["kinds"], "<U16", (0,)),
        }
        temporary = temporary_beside(self.target)
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            shape = (self.count, self.cube, self.cube, self.cube)
            with archive.open("cubes.npy", "w", force_zip64=True) as entry:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(CUBE_DTYPE)), "fortran_order": False,
                          "shape": shape}
                np.lib.format.write_array_header_2_0(entry, header)
                with open(self.raw_path, "rb") as raw:
                    while chunk := raw.read(1 << 24):
                        entry.write(chunk)
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)
        os.unlink(self.raw_path)
        return temporary

    def discard(self) -> None:
        self.raw.close()
        for path in (self.raw_path, temporary_beside(self.target)):
            path.unlink(missing_ok=True)


def _concat(parts: list[np.ndarray], dtype, empty_shape) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(empty_shape, dtype=dtype)


# --------------------------------------------------------------------------------------
# The build


def build_datasets(
    data_root: str | os.PathLike,
    out: str | os.PathLike,
    config: BuildConfig | None = None,
    workers: int | None = None,
    progress: Callable[[int, int, SeriesResult], None] | None = None,
    use_cache: bool = True,
    scheduler: str | None = None,
    announce: Callable[[str], None] = say,
) -> dict:
    """Build one ``.npz`` per modality from a data folder; returns the manifest.

    Args:
        data_root: a folder in the RSNA layout (real or demo).
        out: where the datasets, the manifest and the cache of processed volumes go.
        config: build parameters (defaults if None).
        workers: processes (default: cores, at most 4); 1 runs in this process.
        progress: called with (series done, total, that series' result).
        use_cache: reuse and fill the cache of preprocessed volumes (``out/cache``).
        scheduler: a Dask scheduler (`pipeline.executor`: ``local:N`` or an address; default
            ``ANEURYSM_DASK_SCHEDULER``, else this machine's pool of ``workers``).
        announce: told where a Dask build runs (workers, the Dask dashboard's address).
    """
    start = time.perf_counter()
    config = config or BuildConfig()
    data_root, out = Path(data_root), Path(out)
    family = read_family(data_root)
    if family and family.get(VALIDATION_ONLY):
        raise ValueError(f"{data_root} holds the {family['family']} phantom family, which is for validation only: "
                         "no model may train on it. Score a run on it with "
                         f"'python -m pipeline evaluate --run RUN --test-set {data_root}'.")
    out.mkdir(parents=True, exist_ok=True)
    tasks, problems = _tasks(data_root, out, config, use_cache)
    _remove_leftovers(out, config)
    writers: dict[str, _ModalityWriter] = {}
    outcomes: dict[str, dict] = {}
    try:
        writers = {m: _ModalityWriter(out, DATASET_FILES[m], config.cube) for m in config.modalities}
        for done, result in enumerate(_run(tasks, workers, scheduler, announce), start=1):
            outcomes[result.series_uid] = result.outcome()
            if result.status == "ok":
                writers[result.modality].add(result)
            if progress:
                progress(done, len(tasks), result)
        finished = {writer.target: writer.finish() for writer in writers.values()}
        manifest = {
            "version": __version__,
            "data_root": str(data_root),
            "config": config.to_dict(),
            "preprocess_key": config.preprocess.key(),
            "problems": problems,
            "series": {uid: outcomes[uid] for uid in sorted(outcomes)},
            "datasets": {m: _counts(m, w) for m, w in writers.items()},
            "seconds": round(time.perf_counter() - start, 2),
        }
        finished[manifest_path(out)] = stage_manifest(out, manifest)
        for target, temporary in finished.items():  # only complete outputs replace the previous ones
            os.replace(temporary, target)
    except Exception as exc:
        if error := storage_error(exc, f"writing to {out}"):
            cached = ": the series processed so far are cached" if use_cache else ""
            raise StorageError(f"{error}: the build stopped after {len(outcomes)} of {len(tasks)} series and "
                               f"the datasets in {out} are as they were. Free some space (or build into another --out) "
                               f"and run it again{cached}.") from None
        raise
    finally:
        for writer in writers.values():
            writer.discard()
        discard_staged_manifest(out)
    return manifest


def _remove_leftovers(out: Path, config: BuildConfig) -> None:
    """What killed builds left: half-written datasets and manifest, half-written cache entries."""
    remove_leftovers(out, {*DATASET_FILES.values(), MANIFEST_NAME})
    ProcessedCache(out, config.preprocess).remove_leftovers()


def _tasks(data_root: Path, out: Path, config: BuildConfig, use_cache: bool) -> tuple[list[SeriesTask], list[str]]:
    table = read_train(data_root)
    localizers, problems = read_localizers(data_root)
    cache = ProcessedCache(out, config.preprocess)
    tasks = []
    for row in table.to_dict("records"):
        uid, modality = str(row["SeriesInstanceUID"]), str(row["Modality"])
        if modality not in MODALITIES:
            problems.append(unknown_modality(uid, modality))
            continue
        if modality not in config.modalities:
            continue
        folder = data_root / "series" / uid
        if not folder.is_dir():
            problems.append(f"Series {uid} is listed in train.csv but has no folder under series/.")
            continue
        labels = find_vessel_labels(data_root, uid)
        tasks.append(SeriesTask(uid, modality, bool(row[ANEURYSM_PRESENT]), localizers.get(uid, []), str(folder),
                                str(cache.path(uid)) if use_cache else None, config, labels and str(labels)))
    return tasks, problems


def _run(tasks: list[SeriesTask], workers: int | None, scheduler: str | None = None,
         announce: Callable[[str], None] = say):
    """Results in task order (memory stays bounded: results are consumed as they come), on
    this machine's pool or a Dask cluster (`pipeline.executor`)."""
    with executor(scheduler, workers, announce=announce) as run:
        yield from in_order(run(process_series, tasks))


def _counts(modality: str, writer: _ModalityWriter) -> dict:
    labels = _concat(writer.small["labels"], np.uint8, (0,))
    positive = int(labels.sum())
    return {
        "file": DATASET_FILES[modality], "series": len(writer.series), "positive_cubes": positive,
        "negative_cubes": int(len(labels) - positive), "total": int(len(labels)),
        "positive_share": round(positive / len(labels), 4) if len(labels) else 0.0,
    }


def balance_table(manifest: dict) -> pd.DataFrame:
    """The origin project's table: series, positive, negative and total cubes, positive share."""
    rows = [
        {"Modality": m, "Series": c["series"], "Positive cubes": c["positive_cubes"],
         "Negative cubes": c["negative_cubes"], "Total": c["total"], "Positive share": c["positive_share"]}
        for m, c in manifest["datasets"].items()
    ]
    table = pd.DataFrame(rows)
    if len(table):
        total = table[["Series", "Positive cubes", "Negative cubes", "Total"]].sum()
        table.loc[len(table)] = {"Modality": "All", **total.to_dict(),
                                 "Positive share": round(total["Positive cubes"] / max(total["Total"], 1), 4)}
    return table
