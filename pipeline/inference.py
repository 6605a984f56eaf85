"""Inference: from a DICOM series to the 14 RSNA probabilities, a heatmap and candidates.

One path serves the CLI (``python -m pipeline predict``), evaluation and the dashboard:

1. read the series (a folder, files, ``(name, bytes)`` pairs or a ``.zip``);
2. preprocess it with the parameters stored in the checkpoint;
3. score the whole processed volume with the cube model in one fully-convolutional
   pass: the network's features are computed once for the volume (padded by half a
   cube), averaged over every 48-voxel window (3 x 3 x 3 feature cells) and fed to the
   two heads, which is the sliding window of the cube model at a stride of 16 voxels
   (12.8 mm) without recomputing the overlaps;
4. aggregate, the documented rule: ``Aneurysm Present`` is the highest window
   probability; a location's probability is the highest, over windows, of
   P(aneurysm in the window) x P(that location | aneurysm in the window);
5. candidates: local maxima of the window probabilities, their position refined by the
   probability-weighted centre of the neighbouring windows, given in patient mm, in the
   processed volume and in source-image terms (SOPInstanceUID, frame, x, y) like
   ``train_localizers.csv``.

With ``flip=True`` (test-time augmentation) the volume is also scored mirrored left-right
and the maps are averaged after swapping the Left and Right location channels back.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.cubes import head_interior
from pipeline.dicom import DEFAULT_MAX_VOXELS, load_series
from pipeline.errors import IngestError
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS, MIRROR_PERMUTATION
from pipeline.preprocess import PreprocessConfig, preprocess
from pipeline.volume import Volume

STRIDE = 16  # total stride of the network: one window every 16 voxels
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "demo" / "best.pt"
MAX_ZIP_BYTES = 4 << 30  # decompressed
MAX_ZIP_FILES = 20_000


@dataclass
class Prediction:
    """What `Predictor.predict` returns."""

    series_uid: str
    modality: str
    probabilities: dict[str, float]
    candidates: list[dict]
    heatmap: np.ndarray  # window probabilities, grid (gz, gy, gx)
    heatmap_affine: np.ndarray  # grid index -> patient mm
    volume: Volume  # the processed volume
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "series_uid": self.series_uid,
            "modality": self.modality,
            "probabilities": {name: round(float(self.probabilities[name]), 6) for name in LABEL_COLUMNS},
            "candidates": self.candidates,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": self.warnings,
        }

    def heatmap_on_volume(self) -> np.ndarray:
        """The window probabilities interpolated onto the processed volume's grid."""
        grid = torch.from_numpy(self.heatmap.astype(np.float32))[None, None]
        # grid point g sits at voxel STRIDE * g: sample it at every voxel (align_corners on the grid span)
        span = [(n - 1) * STRIDE + 1 for n in self.heatmap.shape]
        dense = F.interpolate(grid, size=span, mode="trilinear", align_corners=True)[0, 0]
        out = torch.zeros(self.volume.shape)
        box = tuple(slice(0, min(a, b)) for a, b in zip(span, self.volume.shape))
        out[box] = dense[box]
        return out.numpy()


def read_source(source) -> object:
    """A ``.zip`` (path or bytes) becomes a list of (name, bytes); anything else is passed on."""
    if isinstance(source, (bytes, bytearray)):
        return _unzip(io.BytesIO(source), "upload")
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file() and zipfile.is_zipfile(source):
        with open(source, "rb") as handle:
            return _unzip(handle, Path(source).name)
    return source


def _unzip(handle, name: str) -> list[tuple[str, bytes]]:
    """Members of a zip, in memory, within caps; nothing touches the file system."""
    try:
        with zipfile.ZipFile(handle) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_FILES:
                raise IngestError(f"{name} holds {len(members)} files, more than the limit of {MAX_ZIP_FILES}.")
            if any(m.flag_bits & 0x1 for m in members):
                raise IngestError(f"{name} is encrypted; upload the files without a password.")
            if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise IngestError(f"{name} decompresses to more than {MAX_ZIP_BYTES >> 30} GiB.")
            files = []
            for member in members:
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    continue  # a symbolic link: never followed
                files.append((member.filename, archive.read(member)))
            return files
    except zipfile.BadZipFile:
        raise IngestError(f"{name} is not a readable zip archive.") from None
    except (RuntimeError, NotImplementedError) as exc:  # unsupported compression or encryption
        raise IngestError(f"{name} cannot be unpacked: {exc}.") from None


class Predictor:
    """A loaded model and its preprocessing, ready to score series."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str | None = None, flip: bool = False):
        from pipeline.train import load_model

        path = Path(checkpoint) if checkpoint else SHIPPED_MODEL
        if not path.is_file():
            raise FileNotFoundError(
                f"No model at {path}: train one (python -m pipeline train) and pass --model RUN/best.pt."
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.meta = load_model(path, device=str(self.device))
        self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.preprocess = PreprocessConfig.from_dict(self.meta["preprocess"]) if self.meta.get("preprocess") else \
            PreprocessConfig()
        self.cube = int(self.meta["model"]["cube"])
        self.flip = flip
        bf16 = self.device.type == "cuda" or torch.cpu._is_avx512_bf16_supported()
        self.autocast = torch.bfloat16 if bf16 else None

    def predict(self, source, series_uid: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS) -> Prediction:
        timings = {}
        start = time.perf_counter()
        volume = load_series(read_source(source), series_uid=series_uid, max_voxels=max_voxels)
        timings["read"] = time.perf_counter() - start
        processed = preprocess(volume, self.preprocess)
        timings["preprocess"] = time.perf_counter() - start - timings["read"]
        network_start = time.perf_counter()
        presence, location, origin = self.score(processed.array)
        timings["network"] = time.perf_counter() - network_start
        prediction = self._aggregate(processed, presence, location, origin, timings)
        timings["total"] = time.perf_counter() - start
        return prediction

    @torch.no_grad()
    def score(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Window probabilities (gz, gy, gx), location probabilities (13, gz, gy, gx), and
        the voxel of grid point 0 (``origin``: grid point g is centred on voxel origin + 16 g)."""
        pad = self.cube // 2
        padded = [n + 2 * pad for n in array.shape]
        extra = [(-(n - self.cube)) % STRIDE for n in padded]  # so the last window fits exactly
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
        tensor = F.pad(tensor, (pad, pad + extra[2], pad, pad + extra[1], pad, pad + extra[0]))
        presence, location = self._maps(tensor)
        if self.flip:
            # (width - cube) is a multiple of the stride, so window j of the mirrored tensor is
            # window (last - j) of the original: flipping the maps back aligns them exactly.
            flipped_presence, flipped_location = self._maps(tensor.flip(-1))
            presence = (presence + flipped_presence.flip(-1)) / 2
            location = (location + flipped_location.flip(-1)[list(MIRROR_PERMUTATION)]) / 2
        return presence.numpy(), location.numpy(), pad - self.cube // 2

    def _maps(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tensor = tensor.to(self.device).contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            features = self.model.features(tensor)
        windows = F.avg_pool3d(features.float(), kernel_size=self.cube // STRIDE, stride=1)[0]  # (C, gz, gy, gx)
        cells = windows.permute(1, 2, 3, 0)
        presence = torch.sigmoid(self.model.presence(cells).squeeze(-1))
        location = torch.softmax(self.model.location(cells), dim=-1).permute(3, 0, 1, 2)
        return presence.cpu(), location.cpu()

    def _aggregate(self, volume: Volume, presence: np.ndarray, location: np.ndarray, origin: int,
                   timings: dict) -> Prediction:
        inside = _grid_inside(presence.shape, volume, origin)
        scores = np.where(inside, presence, 0.0)
        joint = scores[None] * location
        probabilities = {name: float(joint[i].max()) for i, name in enumerate(LOCATIONS)}
        probabilities[ANEURYSM_PRESENT] = float(scores.max())
        affine = volume.affine.copy()
        affine[:3, :3] = volume.affine[:3, :3] * STRIDE
        affine[:3, 3] = volume.voxel_to_patient([origin] * 3)
        candidates = _candidates(volume, scores, location, origin)
        return Prediction(volume.series_uid, volume.modality, probabilities, candidates, scores, affine, volume,
                          timings, list(volume.warnings))


def _grid_inside(grid_shape, volume: Volume, origin: int) -> np.ndarray:
    """Grid points whose window centre lies in the head's interior: the same region the
    dataset builder draws negative cubes from, so the model is only asked about windows
    like those it learnt from."""
    interior, stride = head_interior(volume)
    centres = [origin + STRIDE * np.arange(g) for g in grid_shape]
    valid = [(c >= 0) & (c // stride < n) for c, n in zip(centres, interior.shape)]
    index = np.ix_(*[np.clip(c // stride, 0, n - 1) for c, n in zip(centres, interior.shape)])
    return interior[index] & valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]


def _candidates(volume: Volume, scores: np.ndarray, location: np.ndarray, origin: int, top: int = 5,
                floor: float = 0.05) -> list[dict]:
    tensor = torch.from_numpy(scores.astype(np.float32))[None, None]
    peaks = (F.max_pool3d(tensor, 3, stride=1, padding=1)[0, 0].numpy() == scores) & (scores >= floor)
    found = []
    for index in sorted(map(tuple, np.argwhere(peaks)), key=lambda g: -scores[g])[:top]:
        box = tuple(slice(max(i - 1, 0), i + 2) for i in index)
        weights = scores[box]
        grid = np.stack(np.meshgrid(*[np.arange(s.start, s.start + n) for s, n in zip(box, weights.shape)],
                                    indexing="ij"), axis=-1)
        centre_grid = (grid * weights[..., None]).sum(axis=(0, 1, 2)) / max(weights.sum(), 1e-9)
        voxel = origin + STRIDE * centre_grid
        voxel = np.clip(voxel, 0, np.array(volume.shape) - 1)
        patient = volume.voxel_to_patient(voxel)
        sop, frame, x, y = volume.voxel_to_source(voxel)
        probabilities = location[(slice(None), *index)]
        best = int(np.argmax(probabilities))
        found.append({
            "probability": round(float(scores[index]), 6),
            "location": LOCATIONS[best],
            "location_probability": round(float(probabilities[best]), 6),
            "position_mm": [round(float(v), 2) for v in patient],
            "voxel": [round(float(v), 2) for v in voxel],
            "SOPInstanceUID": sop,
            "frame": int(frame),
            "coordinates": {"x": round(float(x), 2), "y": round(float(y), 2), **({"f": int(frame)} if frame else {})},
        })
    return found


# --------------------------------------------------------------------------------------
# The challenge's interface

_DEFAULT: dict[str, Predictor] = {}


def predict_series(series_path, checkpoint: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row with the 14 RSNA columns, in challenge order (the challenge's ``predict``)."""
    key = str(checkpoint or SHIPPED_MODEL)
    if key not in _DEFAULT:
        _DEFAULT[key] = Predictor(checkpoint)
    prediction = _DEFAULT[key].predict(series_path)
    return pd.DataFrame([[prediction.probabilities[name] for name in LABEL_COLUMNS]], columns=list(LABEL_COLUMNS))
