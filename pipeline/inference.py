"""Inference: from a DICOM series to the 14 RSNA probabilities, a heatmap and candidates.

One path serves the CLI (``python -m pipeline predict``), evaluation and the dashboard:

1. read the series (a folder, files, ``(name, bytes)`` pairs or a ``.zip``);
2. preprocess it with the parameters stored in the checkpoint;
3. score the windows of the processed volume: 48-voxel cubes centred every 16 voxels
   (12.8 mm) inside the head (`head_interior`: the region the dataset builder draws its
   negatives from), cut exactly as the builder cuts training cubes (`extract_cube`) and
   scored in batches, so the model sees at inference exactly the kind of input it learnt
   from (a fully-convolutional pass was tried: its windows see context beyond the cube,
   which the cubes never show, and scored false positives the cube model had learnt to
   reject);
4. aggregate, the documented rule: ``Aneurysm Present`` is the highest window
   probability; a location's probability is the highest, over windows, of
   P(aneurysm in the window) x P(that location | aneurysm in the window);
5. candidates: local maxima of the window probabilities, their position refined by the
   probability-weighted centre of the neighbouring windows, given in patient mm, in the
   processed volume and in source-image terms (SOPInstanceUID, frame, x, y) like
   ``train_localizers.csv``.

With ``flip=True`` (test-time augmentation) every cube is also scored mirrored left-right
and the two are averaged after swapping the Left and Right location channels back.
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

from pipeline.cubes import extract_cube, head_interior
from pipeline.dicom import DEFAULT_MAX_VOXELS, load_series
from pipeline.errors import IngestError
from pipeline.locate import LocationPrior, head_centre
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
        prior = self.meta.get("location_prior")
        self.prior = LocationPrior.from_dict(prior) if prior else None
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
        windows = Windows.of(processed)
        presence, location = self.score(processed.array, windows.centres)
        timings["network"] = time.perf_counter() - network_start
        prediction = self._aggregate(processed, windows, presence, location, timings)
        timings["total"] = time.perf_counter() - start
        return prediction

    def score(self, array: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See `score_windows`."""
        return score_windows(self.model, array, centres, self.cube, self.device, self.autocast, self.flip)

    def _aggregate(self, volume: Volume, windows: "Windows", presence: np.ndarray, location: np.ndarray,
                   timings: dict) -> Prediction:
        if self.prior is not None:  # where in the head each window is: see pipeline.locate
            offsets = (windows.centres - head_centre(windows.interior, windows.stride)) * np.asarray(volume.spacing)
            location = self.prior.combine(location, offsets)
        scores = np.zeros(windows.grid)
        scores[windows.inside] = presence
        locations = np.full((len(LOCATIONS), *windows.grid), 1.0 / len(LOCATIONS))
        locations[:, windows.inside] = location
        joint = presence[None] * location
        probabilities = {name: float(joint[i].max(initial=0.0)) for i, name in enumerate(LOCATIONS)}
        probabilities[ANEURYSM_PRESENT] = float(presence.max(initial=0.0))
        affine = volume.affine.copy()
        affine[:3, :3] = volume.affine[:3, :3] * STRIDE
        candidates = _candidates(volume, scores, locations)
        return Prediction(volume.series_uid, volume.modality, probabilities, candidates, scores, affine, volume,
                          timings, list(volume.warnings))


@dataclass
class Windows:
    """The windows scored in a processed volume: grid point g is centred on voxel 16 g;
    those whose centre lies in the head's interior are scored."""

    grid: tuple[int, ...]
    inside: np.ndarray  # (gz, gy, gx) bool
    centres: np.ndarray  # (n, 3) voxels of the windows inside, in C order of the grid
    interior: np.ndarray  # `head_interior` mask and its stride
    stride: int

    @classmethod
    def of(cls, volume: Volume) -> "Windows":
        interior, stride = head_interior(volume)
        grid = tuple(-(-n // STRIDE) for n in volume.shape)
        centres = [STRIDE * np.arange(g) for g in grid]
        index = np.ix_(*[np.minimum(c // stride, n - 1) for c, n in zip(centres, interior.shape)])
        inside = interior[index]
        return cls(grid, inside, STRIDE * np.argwhere(inside), interior, stride)


@torch.no_grad()
def score_windows(model, array: np.ndarray, centres: np.ndarray, cube: int, device: torch.device,
                  autocast: torch.dtype | None = None, flip: bool = False,
                  batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Presence (n,) and location probabilities (13, n) of the cubes centred on ``centres``
    (n, 3), cut from ``array`` as the dataset builder cuts them; ``model`` in eval mode.
    With ``flip``, each cube's score is averaged with its left-right mirror's."""
    presence, location = [np.zeros(0)], [np.zeros((0, len(LOCATIONS)))]
    half = cube // 2
    # Padded once with the builder's fill (0), so that every cube is a plain view: the same
    # voxels `extract_cube` would give, without a new array per window.
    padded = np.pad(np.asarray(array, dtype=np.float32), half)
    corners = np.round(np.asarray(centres, dtype=float)).astype(int).reshape(-1, 3)
    buffer = torch.empty((min(batch, len(corners)), 1, cube, cube, cube))
    for start in range(0, len(corners), batch):
        chunk = corners[start:start + batch]
        for i, (z, y, x) in enumerate(chunk):
            buffer[i, 0] = torch.from_numpy(padded[z:z + cube, y:y + cube, x:x + cube])
        tensor = buffer[:len(chunk)]
        batch_presence, batch_location = _forward(model, tensor, device, autocast)
        if flip:
            mirrored_presence, mirrored_location = _forward(model, tensor.flip(-1), device, autocast)
            batch_presence = (batch_presence + mirrored_presence) / 2
            batch_location = (batch_location + mirrored_location[:, list(MIRROR_PERMUTATION)]) / 2
        presence.append(batch_presence.numpy())
        location.append(batch_location.numpy())
    return np.concatenate(presence), np.concatenate(location).T


def _forward(model, cubes: torch.Tensor, device: torch.device,
             autocast: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    cubes = cubes.to(device).contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        output = model(cubes)
    return torch.sigmoid(output["presence"].float()).cpu(), torch.softmax(output["location"].float(), dim=-1).cpu()


def _candidates(volume: Volume, scores: np.ndarray, location: np.ndarray, top: int = 5,
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
        voxel = STRIDE * centre_grid
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
