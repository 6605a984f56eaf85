"""The built datasets on disk: one owner for their file names, manifest and readers.

A build's output folder holds one ``.npz`` per modality (`DATASET_FILES`, the origin
project's contract: ``cubes``, ``labels``, ``positions``, ``patient_ids``, plus
``centres_voxel``, ``centres_mm`` and ``kinds``), ``build_manifest.json`` (parameters, each
series' outcome, counts) and the cache of processed volumes (`pipeline.preprocess.cache`).
Training reads them through `dataset_source`, which also holds the preprocessing contract:
datasets processed with different parameters are never mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.files import npz_member_header, storage_error, temporary_beside
from pipeline.labels import LOCATIONS
from pipeline.preprocess.cache import ProcessedCache
from pipeline.preprocess.config import PreprocessConfig

DATASET_FILES = {
    "CTA": "cta_dataset.npz",
    "MRA": "mra_dataset.npz",
    "MRI T2": "mri_t2_dataset.npz",
    "MRI T1post": "mri_t1post_dataset.npz",
}
MANIFEST_NAME = "build_manifest.json"
CUBE_DTYPE = np.float16

#: The arrays of a dataset file, their shapes for N cubes of shape ``cube`` and their dtype kinds.
DATASET_ARRAYS = ("cubes", "labels", "positions", "patient_ids", "centres_voxel", "centres_mm", "kinds")
DATASET_SHAPES = {
    "cubes": lambda n, cube: (n, *cube[1:]) if len(cube) == 4 and len(set(cube[1:])) == 1 else ("N", "s", "s", "s"),
    "labels": lambda n, cube: (n,),
    "positions": lambda n, cube: (n, len(LOCATIONS)),
    "patient_ids": lambda n, cube: (n,),
    "centres_voxel": lambda n, cube: (n, 3),
    "centres_mm": lambda n, cube: (n, 3),
    "kinds": lambda n, cube: (n,),
}
DATASET_KINDS = {"cubes": "f", "labels": "biu", "positions": "biu", "patient_ids": "U", "centres_voxel": "iu",
                 "centres_mm": "f", "kinds": "U"}


def manifest_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / MANIFEST_NAME


def stage_manifest(folder: Path, manifest: dict) -> Path:
    """Write the manifest beside its place under a temporary name (a build renames it there
    together with its datasets, once all of them are complete); returns that name."""
    temporary = temporary_beside(manifest_path(folder))
    temporary.write_text(json.dumps(manifest, indent=1))
    return temporary


def discard_staged_manifest(folder: Path) -> None:
    """Remove what `stage_manifest` wrote, if it was not renamed."""
    temporary_beside(manifest_path(folder)).unlink(missing_ok=True)


def read_manifest(folder: str | os.PathLike) -> dict:
    """The ``build_manifest.json`` of a dataset folder.

    Raises:
        FileNotFoundError: the folder has none (not a build's output).
        ValueError: it is not the JSON a build writes.
    """
    return _parse_manifest(Path(folder) / MANIFEST_NAME, _manifest_bytes(folder))


def _manifest_bytes(folder: str | os.PathLike) -> bytes:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {MANIFEST_NAME}: it is not the output of `python -m pipeline build`.")
    return path.read_bytes()


def _parse_manifest(path: Path, content: bytes) -> dict:
    try:
        manifest = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("series"), dict) or \
            not isinstance(manifest.get("config"), dict) or not isinstance(manifest["config"].get("preprocess"), dict):
        raise ValueError(f"{path} is damaged or not a build manifest: rebuild the datasets.")
    return manifest


def resolve_datasets(paths) -> tuple[str, ...]:
    """Dataset files from folders (every ``*_dataset.npz`` inside) or files."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(str(path / name) for name in DATASET_FILES.values() if (path / name).is_file())
        elif path.is_file():
            files.append(str(path))
        else:
            raise FileNotFoundError(f"{path} is neither a dataset file nor a folder of datasets.")
    if not files:
        raise FileNotFoundError("No dataset (*_dataset.npz) found: build one first with `python -m pipeline build`.")
    return tuple(files)


def dataset_files(paths, modalities=None) -> tuple[str, ...]:
    """`resolve_datasets`, narrowed to the files of ``modalities`` (names of `DATASET_FILES`;
    None: all)."""
    files = resolve_datasets(paths)
    if modalities is None:
        return files
    wanted = {DATASET_FILES[m] for m in modalities if m in DATASET_FILES}
    return tuple(f for f in files if Path(f).name in wanted)


def check_dataset(file: str | os.PathLike) -> int:
    """The number of cubes of ``file``, once its arrays are those a build writes (names,
    shapes and dtypes from the headers; the labels and positions themselves).

    Raises:
        ValueError: the file is damaged, truncated or not such a dataset (the message names
            the file and what is wrong).
    """
    try:
        n = _check_headers(file)
    except DatasetError as exc:
        raise ValueError(_unusable(file, str(exc))) from None
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        if storage_error(exc, f"reading {file}"):
            raise
        raise ValueError(_damaged(file, exc)) from None
    labels, positions = read_arrays(file, ("labels", "positions"))
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(_unusable(file, "its labels are not all 0 or 1"))
    if not (np.isin(positions, (0, 1)).all() and (positions.sum(axis=1) == labels).all()):
        raise ValueError(_unusable(file, "its positions are not one location per positive cube and none per negative"))
    return n


def read_arrays(file: str | os.PathLike, names) -> list[np.ndarray]:
    """Arrays ``names`` of a dataset file.

    Raises:
        ValueError: the file is damaged or truncated, or lacks one of them.
    """
    try:
        with np.load(file, allow_pickle=False) as data:
            return [data[name] for name in names]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        if storage_error(exc, f"reading {file}"):
            raise
        raise ValueError(_damaged(file, exc)) from None


class DatasetError(Exception):
    """What is wrong in a dataset file, in words for the user."""


def _check_headers(file) -> int:
    with zipfile.ZipFile(file) as archive:
        names = {name[:-4] for name in archive.namelist() if name.endswith(".npy")}
    missing = [name for name in DATASET_ARRAYS if name not in names]
    if missing:
        raise DatasetError(f"it has no {', '.join(missing)} (a build writes {', '.join(DATASET_ARRAYS)})")
    headers = {name: npz_member_header(file, name) for name in DATASET_ARRAYS}
    cube = headers["cubes"][0]
    n = cube[0] if cube else 0
    for name, (shape, dtype) in headers.items():
        expected = DATASET_SHAPES[name](n, cube)
        if shape != expected:
            raise DatasetError(f"its {name} have the shape {shape} where {expected} was expected")
        if dtype.kind not in DATASET_KINDS[name]:
            raise DatasetError(f"its {name} are of type {dtype}")
    return n


def _unusable(file, what: str) -> str:
    return f"{file} cannot be trained on: {what}; rebuild it with `python -m pipeline build`."


def _damaged(file, exc: BaseException) -> str:
    text = str(exc).strip()
    reason = text.splitlines()[0][:200] if text else type(exc).__name__
    return f"{file} is damaged or truncated ({reason}); rebuild it with `python -m pipeline build`."


def series_labels(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Series and label of every cube of the datasets (what a split needs), without the cubes.

    Raises:
        ValueError: a file is not a dataset a build writes (see `check_dataset`).
    """
    series, labels = [], []
    for file in files:
        check_dataset(file)
        file_series, file_labels = read_arrays(file, ("patient_ids", "labels"))
        series.append(file_series)
        labels.append(file_labels)
    return np.concatenate(series), np.concatenate(labels)


@dataclass(frozen=True)
class DatasetSource:
    """What the dataset files were made with, and where their series' processed volumes are."""

    preprocess: PreprocessConfig
    manifest_sha256: str  # of every manifest involved: identifies the data a model learnt from
    volumes: dict[str, Path]  # series -> cached processed volume


def dataset_source(files: tuple[str, ...]) -> DatasetSource:
    """The preprocessing and processed volumes behind dataset ``files``.

    Raises:
        FileNotFoundError: a file's folder has no build manifest.
        ValueError: the folders were built with different preprocessing parameters (their
            cubes and volumes are not on one scale: a model cannot learn from both).
    """
    folders = sorted({Path(file).parent for file in files})
    digest, volumes, configs = hashlib.sha256(), {}, {}
    for folder in folders:
        content = _manifest_bytes(folder)
        manifest = _parse_manifest(folder / MANIFEST_NAME, content)
        digest.update(content)
        preprocess = PreprocessConfig.from_dict(manifest["config"]["preprocess"])
        configs[preprocess.key()] = (folder, preprocess)
        volumes.update(ProcessedCache(folder, preprocess).volumes(manifest["series"]))
    if len(configs) > 1:
        described = "; ".join(f"{folder}: {config.to_dict()}" for folder, config in configs.values())
        raise ValueError(f"the datasets were built with different preprocessing parameters ({described}): "
                         "train on datasets built with the same parameters.")
    (_, preprocess), = configs.values()
    return DatasetSource(preprocess, digest.hexdigest(), volumes)
