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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.files import write_json
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


def write_manifest(folder: Path, manifest: dict) -> None:
    write_json(Path(folder) / MANIFEST_NAME, manifest)


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


def series_labels(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Series and label of every cube of the datasets (what a split needs), without the cubes."""
    series, labels = [], []
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            series.append(data["patient_ids"])
            labels.append(data["labels"])
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
