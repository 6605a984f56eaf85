"""Helpers the tests share: pydicom's real scanner files, synthetic geometry and volumes, and
an unseen dataset for test-set evaluation (the fixtures are in conftest.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pydicom

from pipeline.demo.generate import PLANES  # noqa: F401  (direction cosines (row, column) of each plane, LPS)
from pipeline.io.dicomwriter import derived_uid

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def slice_stack_shown(app) -> dict:
    """The data the last slice viewer of an AppTest page sent to the browser
    (`dashboard.viewer.slice_stack`: pictures, markers, the slice it opens on)."""
    return json.loads(app.get("bidi_component")[-1].proto.json)



def oblique_cosines(angles_deg=(25.0, -15.0, 10.0)):
    """Row and column cosines of an axial plane rotated about x, y, then z."""
    a, b, c = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    rotation = rz @ ry @ rx
    return tuple(rotation[:, 0]), tuple(rotation[:, 1])


def ramp_pixels(n: int, rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """Distinct, recognisable int16 slices: slice k has a plateau of value 100*k."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(-50, 50, size=(n, rows, columns)).astype(np.int16)
    for k in range(n):
        pixels[k, rows // 4 : rows // 2, columns // 3 :] += np.int16(100 * (k + 1))
    return pixels


def pydicom_file(name: str) -> Path:
    path = PYDICOM_FILES / name
    assert path.exists(), f"pydicom test file {name} missing"
    return path


def two_slice_copy(source: Path, folder: Path, step_mm: float = 2.0) -> list[Path]:
    """A 2-slice series from one real file: the original and a copy moved along the normal.

    The pixel data (compressed or not) are kept byte for byte.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(source)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    paths = []
    for k in range(2):
        copy_ds = copy.deepcopy(ds)
        copy_ds.SOPInstanceUID = derived_uid(source.name, k)
        copy_ds.file_meta.MediaStorageSOPInstanceUID = copy_ds.SOPInstanceUID
        copy_ds.ImagePositionPatient = [f"{v:.4f}" for v in np.array(ds.ImagePositionPatient, float) + k * step_mm * normal]
        path = folder / f"{k}.dcm"
        copy_ds.save_as(path)
        paths.append(path)
    return paths


def make_volume(array, spacing=(1.0, 1.0, 1.0), modality="CT", affine=None, origin=(0.0, 0.0, 0.0)):
    """An in-memory `Volume` (no source images), canonical (z, y, x -> S, P, L) unless an affine is given."""
    from pipeline.volume import Volume

    if affine is None:
        affine = np.eye(4)
        affine[:3, :3] = 0.0
        affine[2, 0], affine[1, 1], affine[0, 2] = spacing
        affine[:3, 3] = origin
    return Volume(np.asarray(array, dtype=np.float32), np.asarray(affine, float), modality, "1.2.3")


def patient_grid(volume):
    """Patient coordinates of every voxel centre, shape (z, y, x, 3)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1)
    return volume.voxel_to_patient(index.reshape(-1, 3)).reshape(*volume.shape, 3)


def unseen_dataset(root: Path, run: Path, out: Path) -> Path:
    """A dataset in the RSNA layout holding only ``run``'s held-out series of ``root``: data
    the run never trained on, for ``evaluate --test-set``."""
    import json
    import shutil

    import pandas as pd

    validation = json.loads((run / "split.json").read_text())["validation"]
    (out / "series").mkdir(parents=True)
    table = pd.read_csv(root / "train.csv", dtype={"SeriesInstanceUID": str})
    table[table.SeriesInstanceUID.isin(validation)].to_csv(out / "train.csv", index=False)
    for uid in validation:
        shutil.copytree(root / "series" / uid, out / "series" / uid)
    return out


def train_and_stop_after_first_epoch(config: dict, run: str) -> None:
    """One rank of a data-parallel run (started by torch's elastic launcher in the tests):
    rank 0 creates the run's STOP file as soon as the first epoch is logged; each rank then
    writes the digest of its network's parameters as it stopped (``params-<rank>.txt``)."""
    import hashlib

    import torch

    from pipeline.runs import STOP_FILE
    from pipeline.training.config import TrainConfig
    from pipeline.training.distributed import current_world, join, leave
    from pipeline.training.trainer import open_trainer

    torch.set_num_threads(1)

    def stop(record: dict) -> None:
        if record["kind"] == "epoch":
            (Path(run) / STOP_FILE).touch()

    world = current_world()
    join(world, world.device())
    try:
        trainer = open_trainer(TrainConfig.from_dict(config), run, False, stop, world)
        trainer.fit()
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in trainer.state.model.parameters()))
        (Path(run) / f"params-{world.rank}.txt").write_text(digest.hexdigest())
    finally:
        leave()
