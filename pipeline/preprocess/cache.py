"""The cache of processed volumes: one owner for where they live and how they are stored.

A build writes every series it preprocessed to ``DATASETS/cache/preprocessed-KEY/UID.npz``
(KEY: `PreprocessConfig.key`), float16 values with the source geometry (each source image's
position, orientation and pixel spacing, so localizers and candidates map back to the
images); training draws its crops from these volumes and scores its held-out series on them.
Each entry records a fingerprint of the series folder it was made from (`source_fingerprint`),
and of its vessel label map if it has one: a build reuses it only while those files are
unchanged. A series with a vessel label map also keeps it on the processed grid (uint8,
`pipeline.preprocess.vessels`): the vessel-aware training's auxiliary target. Files load with
``np.load(..., allow_pickle=False)`` and are written atomically.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from pipeline.files import npz_member_header, remove_leftovers, temporary_beside
from pipeline.preprocess.config import PreprocessConfig
from pipeline.volume import SourceImage, Volume

CACHE_DTYPE = np.float16
VESSELS = "vessels"  # the member holding a volume's vessel labels
UNREADABLE = (OSError, ValueError, KeyError, zipfile.BadZipFile)  # what a damaged cache file raises


class ProcessedCache:
    """The processed volumes of one dataset folder under one preprocessing.

    Args:
        datasets_folder: the build's output folder.
        preprocess: the parameters the volumes were (or are to be) processed with.
    """

    def __init__(self, datasets_folder: str | os.PathLike, preprocess: PreprocessConfig):
        self.preprocess = preprocess
        self.folder = Path(datasets_folder) / "cache" / f"preprocessed-{preprocess.key()}"

    def path(self, series_uid: str) -> Path:
        """Where the processed volume of ``series_uid`` is (or goes)."""
        return self.folder / f"{series_uid}.npz"

    def volumes(self, series_uids) -> dict[str, Path]:
        """The cached volume of each of ``series_uids`` that has one."""
        return {uid: self.path(uid) for uid in series_uids if self.path(uid).is_file()}

    def remove_leftovers(self) -> None:
        """Remove the half-written entries of killed builds."""
        remove_leftovers(self.folder)


def source_fingerprint(folder: str | os.PathLike, also: str | os.PathLike | None = None) -> str:
    """A digest of the name, size and modification time of every file under a series folder
    (and of the file ``also``, its vessel label map): it changes when a file is added,
    removed, replaced or rewritten."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = [(p, p.relative_to(folder)) for p in sorted(p for p in folder.rglob("*") if p.is_file())]
    for path, name in files + ([(Path(also), Path("vessel labels") / Path(also).name)] if also else []):
        stat = path.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def save_processed(path: Path, volume: Volume, source: str = "", vessels: np.ndarray | None = None) -> None:
    """Write a processed volume (float16) and its source geometry to ``path``, atomically;
    ``source``: the `source_fingerprint` of the folder it was read from; ``vessels``: its
    vessel labels on the volume's grid (uint8), if it has any."""
    if vessels is not None and vessels.shape != volume.shape:
        raise ValueError(f"vessel labels of shape {vessels.shape} for a volume of shape {volume.shape}")
    keys = list(volume.sources)
    sources = [volume.sources[k] for k in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(path, ".npz")  # np.savez adds ".npz" to a name without it
    try:
        np.savez(
            temporary,
            array=volume.array.astype(CACHE_DTYPE),
            affine=volume.affine,
            modality=np.array(volume.modality),
            series_uid=np.array(volume.series_uid),
            warnings=np.array(volume.warnings, dtype=str),
            sop=np.array([k[0] for k in keys], dtype=str),
            frame=np.array([k[1] for k in keys], dtype=np.int64),
            position=np.array([s.position for s in sources]).reshape(-1, 3),
            row=np.array([s.row_cosine for s in sources]).reshape(-1, 3),
            column=np.array([s.column_cosine for s in sources]).reshape(-1, 3),
            pixel_spacing=np.array([s.pixel_spacing for s in sources]).reshape(-1, 2),
            source=np.array(source),
            **({} if vessels is None else {VESSELS: vessels.astype(np.uint8, copy=False)}),
        )
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load_processed(path: Path) -> Volume:
    """A processed volume written by `save_processed`.

    Raises:
        one of `UNREADABLE`: the file is missing, truncated or not a cached volume.
    """
    with np.load(path, allow_pickle=False) as data:
        sources = {
            (str(sop), int(frame)): SourceImage(str(sop), int(frame), position, row, column, tuple(spacing))
            for sop, frame, position, row, column, spacing in zip(
                data["sop"], data["frame"], data["position"], data["row"], data["column"], data["pixel_spacing"]
            )
        }
        return Volume(
            array=data["array"], affine=data["affine"], modality=str(data["modality"]),
            series_uid=str(data["series_uid"]), sources=sources, warnings=[str(w) for w in data["warnings"]],
        )


def load_vessels(path: Path) -> np.ndarray | None:
    """The vessel labels of a cached volume (uint8, its grid), None if it has none.

    Raises:
        one of `UNREADABLE`: the file is missing, truncated or not a cached volume.
    """
    with np.load(path, allow_pickle=False) as data:
        return data[VESSELS] if VESSELS in data.files else None


def has_vessels(path: Path) -> bool:
    """Whether a cached volume has vessel labels (read from the file's directory only).

    Raises:
        one of `UNREADABLE`: the file is missing or not a zip archive.
    """
    with zipfile.ZipFile(path) as archive:
        return f"{VESSELS}.npy" in archive.namelist()


def cached_source(path: Path) -> str:
    """The `source_fingerprint` a cached volume was made from ("" for an entry without one).

    Raises:
        one of `UNREADABLE`: the file is missing, truncated or not a cached volume.
    """
    with np.load(path, allow_pickle=False) as data:
        return str(data["source"]) if "source" in data.files else ""


def processed_nbytes(path: Path) -> int:
    """Bytes a cached processed volume takes as float16, read from the file's array header."""
    return 2 * int(np.prod(npz_member_header(path, "array")[0]))
