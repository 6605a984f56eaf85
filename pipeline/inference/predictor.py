"""Inference: from a DICOM series to the 14 RSNA probabilities, a heatmap and candidates.

One path serves the CLI (``python -m pipeline predict``), evaluation and the dashboard:

1. read the series (a folder, files, ``(name, bytes)`` pairs or a ``.zip``);
2. preprocess it with the parameters stored in the checkpoint;
3. one pass of the fully-convolutional network over the whole processed volume (padded with
   0, the builder's fill, to multiples of 16) gives a heatmap at stride 4, as in training,
   where the network learnt from large crops of whole volumes; the windows are the points
   every 16 voxels (12.8 mm) inside the head (`head_interior`), each taking the highest
   heatmap value within 8 voxels of it and the location probabilities of that cell;
4. aggregate, the documented rule: ``Aneurysm Present`` is the highest window
   probability (calibrated on held-out series when the checkpoint has a calibration,
   `pipeline.model.calibration`); a location's probability is the highest, over windows, of
   P(aneurysm at the window) x P(that location | aneurysm there);
5. candidates: local maxima of the window probabilities, each placed on its window's best
   heatmap cell (4-voxel precision), maxima within 10 mm of a stronger one left out, given
   in patient mm, in the processed volume and in source-image terms (SOPInstanceUID, frame,
   x, y) like ``train_localizers.csv``.

Test-time augmentation, on by default (``flip=True``; ``--no-flip`` on the command line):
the volume is also scored mirrored left-right (shifted so that its heatmap cells fall on
the same voxels) and the two heatmaps are averaged after mirroring back and swapping the
Left and Right location channels. It doubles the network's time and, measured on the
demo, raised the final score of the same checkpoints by 0.01-0.03 on held-out series and
0.00-0.02 on the 150-series test set (mostly the location AUCs).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.io.dicom import DEFAULT_MAX_VOXELS
from pipeline.io.image import read_image
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS, MIRROR_PERMUTATION, MIRRORED_VESSEL_LABELS
from pipeline.model.calibration import Calibration
from pipeline.model.checkpoint import TrainedModel, load_checkpoint
from pipeline.model.config import CENTRE_REACH, INPUT_MULTIPLE, OUTPUT_STRIDE
from pipeline.model.locate import LocationPrior, head_centre
from pipeline.model.precision import Precision, choose_precision
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.head import head_interior
from pipeline.preprocess.transforms import preprocess
from pipeline.volume import Volume

STRIDE = INPUT_MULTIPLE  # one window per encoder cell (16 voxels); padding to windows also fits the encoder
VESSEL_REACH = 2  # cells (8 voxels, 6.4 mm) around a window's best cell searched for a vessel
# The channels a left-right mirror swaps, per map.
MIRRORED_CHANNELS = {"location": MIRROR_PERMUTATION, "artery": tuple(v - 1 for v in MIRRORED_VESSEL_LABELS[1:])}
VESSEL_EVIDENCE = ("gate", "artery")  # the uses of a vessel head's output (`Predictor`)
ARTERY_FLOOR = 0.01  # keeps a location the artery head rules out from vanishing altogether
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo" / "best.pt"


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

    def heatmap_on_source(self) -> tuple[np.ndarray, np.ndarray]:
        """The window probabilities interpolated (trilinear) onto the grid the image was read
        on, 0 outside the windows' span (as `heatmap_on_volume`), and that grid's affine
        (voxel (z, y, x) -> LPS mm).

        Raises:
            ValueError: the processed volume does not know its source grid.
        """
        if self.volume.source_grid is None:
            raise ValueError("this prediction's volume does not record the grid it was read on")
        shape, affine = self.volume.source_grid
        to_grid = np.linalg.solve(self.heatmap_affine, affine)  # source voxel -> heatmap grid index
        linear = to_grid[:3, :3]
        axes = np.argmax(np.abs(linear), axis=0)  # the grid axis each source axis runs along
        aligned = len(set(axes)) == 3 and np.allclose(
            linear, np.eye(3)[:, axes] * linear[axes, range(3)], atol=1e-6 * np.abs(linear).max())
        if aligned:  # the usual case (the processed volume is the source reoriented): separable
            out = self._separable(shape, to_grid, axes)
        else:  # an oblique source
            out = self._sampled(shape, to_grid)
        return out, np.asarray(affine, dtype=np.float64)

    def _separable(self, shape, to_grid: np.ndarray, axes: np.ndarray) -> np.ndarray:
        """Trilinear interpolation as three 1-D ones, source axis a running along grid axis
        ``axes[a]``: a product of small weight matrices (fast, exact)."""
        weights = []
        for a, n in enumerate(shape):
            g = axes[a]
            position = to_grid[g, a] * np.arange(n) + to_grid[g, 3]
            cells = np.arange(self.heatmap.shape[g])
            w = np.clip(1.0 - np.abs(position[:, None] - cells[None]), 0.0, None)
            w[(position < -1e-3) | (position > len(cells) - 1 + 1e-3)] = 0.0
            weights.append(torch.from_numpy(w.astype(np.float32)))
        grid = torch.from_numpy(self.heatmap.astype(np.float32)).permute(*[int(g) for g in axes])
        along_x = torch.einsum("abc,kc->abk", grid, weights[2])
        along_y = torch.einsum("abk,jb->ajk", along_x, weights[1])
        return (weights[0] @ along_y.reshape(len(along_y), -1)).reshape(shape).numpy()

    def _sampled(self, shape, to_grid: np.ndarray) -> np.ndarray:
        """Trilinear sampling at every source voxel (any orientation), a few slices at a time."""
        grid = torch.from_numpy(self.heatmap.astype(np.float32))[None, None]
        sizes = torch.tensor(self.heatmap.shape, dtype=torch.float32)
        # grid_sample's coordinates are (x, y, z) in [-1, 1] over the grid span (align_corners)
        scale = torch.where(sizes > 1, 2.0 / (sizes - 1).clamp(min=1), torch.zeros(3))
        rows = torch.cartesian_prod(torch.arange(shape[1]), torch.arange(shape[2])).float()
        m = torch.from_numpy(to_grid.astype(np.float32))
        plane = rows @ m[:3, 1:3].T + m[:3, 3]  # (y, x) of a slice -> grid index, before z
        out = torch.empty(shape)
        step = max(1, 2_000_000 // len(rows))  # slices per batch: bounded memory
        for start in range(0, shape[0], step):
            z = torch.arange(start, min(start + step, shape[0])).float()
            index = plane[None] + z[:, None, None] * m[:3, 0]
            inside = ((index > -1e-3) & (index < sizes - 1 + 1e-3)).all(-1)
            normalised = (index * scale - (sizes > 1).float()).flip(-1)
            sampled = F.grid_sample(grid, normalised.reshape(1, len(z), shape[1], shape[2], 3), mode="bilinear",
                                    padding_mode="border", align_corners=True)[0, 0]
            out[start:start + len(z)] = sampled * inside.reshape(sampled.shape)
        return out.numpy()


class Predictor:
    """A trained model and its preprocessing, ready to score series.

    Args:
        checkpoint: a checkpoint file (default: the shipped demo model), or a model already
            in memory (`TrainedModel`: how training scores its held-out series).
        device: where the network runs (default: CUDA when there is one).
        flip: also score the left-right mirror and average (test-time augmentation).
        calibrated: apply the checkpoint's calibration (if it has one) to the window
            probabilities (`pipeline.model.calibration`); False gives the raw network output.
        vessel_evidence: uses of a vessel head's output (ignored without one): ``"gate"``
            multiplies each window's probability by the highest vessel probability within
            6.4 mm of its peak (an aneurysm sits on a vessel); ``"artery"`` weighs its
            location probabilities by those of the artery at its peak.

    Raises:
        FileNotFoundError: no file at ``checkpoint``.
        pipeline.model.checkpoint.CheckpointError: not a checkpoint this version can use.
    """

    def __init__(self, checkpoint: str | os.PathLike | TrainedModel | None = None,
                 device: str | torch.device | None = None, flip: bool = True, calibrated: bool = True,
                 vessel_evidence: tuple[str, ...] = ()):
        self.precision = choose_precision("auto", device, cpu_bf16=False)
        trained = checkpoint if isinstance(checkpoint, TrainedModel) else \
            load_checkpoint(checkpoint or SHIPPED_MODEL, self.precision.device)
        self.meta = trained.meta
        self.model = trained.network.to(memory_format=torch.channels_last_3d)
        self.preprocess = trained.meta.preprocess
        self.prior = trained.meta.location_prior
        self.flip = flip
        self.model_name = "in memory" if isinstance(checkpoint, TrainedModel) else \
            Path(checkpoint or SHIPPED_MODEL).resolve().parent.name
        self.calibration = trained.meta.calibration if calibrated else None
        unknown = set(vessel_evidence) - set(VESSEL_EVIDENCE)
        if unknown:
            raise ValueError(f"unknown vessel evidence {sorted(unknown)}: choose from {', '.join(VESSEL_EVIDENCE)}")
        self.vessel_evidence = tuple(vessel_evidence) if trained.meta.model.vessel_head else ()

    def algorithm(self):
        """How derived DICOM objects name what made them (`pipeline.inference.export.Algorithm`)."""
        from pipeline import __version__
        from pipeline.inference.export import Algorithm

        return Algorithm(version=f"{__version__} model {self.model_name} epoch {self.meta.epoch}"[:64])

    def predict(self, source, series_uid: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS,
                modality: str | None = None) -> Prediction:
        """Read, preprocess and score one series.

        Args:
            source: a DICOM folder, a file, a list of files or of ``(name, bytes)`` pairs, a
                ``.zip`` (path or bytes), or a NIfTI image: see `pipeline.io.image.read_image`.
            series_uid: which series, when ``source`` holds several.
            max_voxels: refuse larger series (memory).
            modality: "CT" or "MR" for a NIfTI image (its header does not say).

        Returns:
            The 14 probabilities, candidates, heatmap, processed volume and timings.

        Raises:
            pipeline.errors.IngestError: the source is not one readable image series.
        """
        timings = {}
        start = time.perf_counter()
        volume = read_image(source, series_uid=series_uid, modality=modality, max_voxels=max_voxels)
        timings["read"] = time.perf_counter() - start
        processed = preprocess(volume, self.preprocess)
        timings["preprocess"] = time.perf_counter() - start - timings["read"]
        prediction = self.predict_processed(processed, timings)
        timings["total"] = time.perf_counter() - start
        return prediction

    def predict_processed(self, processed: Volume, timings: dict | None = None,
                          scores: WindowScores | None = None) -> Prediction:
        """Steps 3-5 on a volume already preprocessed with `self.preprocess` (``scores``: its
        `score` when already computed, e.g. to compare uses of the vessel evidence)."""
        timings = {} if timings is None else timings
        network_start = time.perf_counter()
        windows = Windows.of(processed, self.preprocess)
        scores = self.score(processed.array) if scores is None else scores
        presence, location, peaks = scores.presence[windows.inside], scores.location[:, windows.inside], scores.peaks
        if "gate" in self.vessel_evidence:
            presence = presence * scores.vessel[windows.inside]
        if "artery" in self.vessel_evidence:
            location = location * (scores.artery[:len(LOCATIONS), windows.inside] + ARTERY_FLOOR)
            location = location / location.sum(axis=0, keepdims=True)
        timings["network"] = time.perf_counter() - network_start
        return aggregate(processed, windows, presence, location, peaks, self.prior, timings, self.calibration)

    def score(self, array: np.ndarray) -> WindowScores:
        """See `score_volume`."""
        return score_volume(self.model, array, self.precision, self.flip)


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
    def of(cls, volume: Volume, preprocess: PreprocessConfig) -> "Windows":
        interior, stride = head_interior(volume, preprocess)
        grid = tuple(-(-n // STRIDE) for n in volume.shape)
        centres = [STRIDE * np.arange(g) for g in grid]
        index = np.ix_(*[np.minimum(c // stride, n - 1) for c, n in zip(centres, interior.shape)])
        inside = interior[index]
        return cls(grid, inside, STRIDE * np.argwhere(inside), interior, stride)


def aggregate(volume: Volume, windows: "Windows", presence: np.ndarray, location: np.ndarray, peaks: np.ndarray,
              prior: LocationPrior | None, timings: dict, calibration: Calibration | None = None) -> Prediction:
    """Step 4 and 5 of the module's docstring: the 14 probabilities and the candidates from
    the window scores (``presence`` (n,), ``location`` (13, n) of the windows inside). With a
    ``calibration`` every window probability is calibrated; the candidates are the same
    windows as without it (chosen on the network's own scale), their probabilities calibrated."""
    if prior is not None:  # where in the head each window is: see pipeline.model.locate
        offsets = (windows.centres - head_centre(windows.interior, windows.stride)) * np.asarray(volume.spacing)
        location = prior.combine(location, offsets)
    raw = np.zeros(windows.grid)
    raw[windows.inside] = presence
    if calibration is not None:
        presence = calibration.apply(presence)
    scores = np.zeros(windows.grid)
    scores[windows.inside] = presence
    locations = np.full((len(LOCATIONS), *windows.grid), 1.0 / len(LOCATIONS))
    locations[:, windows.inside] = location
    joint = presence[None] * location
    probabilities = {name: float(joint[i].max(initial=0.0)) for i, name in enumerate(LOCATIONS)}
    probabilities[ANEURYSM_PRESENT] = float(presence.max(initial=0.0))
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * STRIDE
    candidates = _candidates(volume, raw, locations, peaks, shown=scores)
    return Prediction(volume.series_uid, volume.modality, probabilities, candidates, scores, affine, volume,
                      timings, list(volume.warnings))


class WindowScores(NamedTuple):
    """`score_volume`'s output, per window of the grid (gz, gy, gx)."""

    presence: np.ndarray  # (gz, gy, gx) the highest presence probability within the window's reach
    location: np.ndarray  # (13, gz, gy, gx) location probabilities at that cell
    peaks: np.ndarray  # (3, gz, gy, gx) the voxel that cell is centred on
    vessel: np.ndarray | None = None  # (gz, gy, gx) the highest vessel probability within `VESSEL_REACH` of it
    artery: np.ndarray | None = None  # (14, gz, gy, gx) artery probabilities (`VESSEL_LABELS`) at that cell


@torch.no_grad()
def score_volume(model, array: np.ndarray, precision: Precision, flip: bool = False) -> WindowScores:
    """The windows centred on voxels 16 g of ``array``: the highest heatmap value within
    `CENTRE_REACH` voxels, the location probabilities of that heatmap cell and the voxel it is
    centred on; for a model with a vessel head also the vessel evidence there. ``model`` in
    eval mode. With ``flip``, averaged with the left-right mirror's maps (mirrored back, Left
    and Right swapped)."""
    grid = [-(-n // STRIDE) for n in array.shape]
    tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
    tensor = F.pad(tensor, [p for g, n in zip(grid[::-1], array.shape[::-1]) for p in (0, STRIDE * g - n)])
    maps = _heatmaps(model, tensor, precision)
    if flip:
        # Cell i of a pass is centred on voxel 4 i. One voxel of padding before the mirrored
        # volume puts its cell i on voxel 16 gx - 4 i of the original: the cell gx*4 - i.
        mirrored = _heatmaps(model, F.pad(tensor.flip(-1), (1, STRIDE - 1)), precision)
        cells = maps["presence"].shape[-1]
        for name, value in mirrored.items():
            if name in MIRRORED_CHANNELS:
                value = value[list(MIRRORED_CHANNELS[name])]
            maps[name] = (maps[name] + value[..., 1:cells + 1].flip(-1)) / 2
    presence = maps["presence"]
    # the window at voxel 16 g: the best cell within 8 voxels (cells 4 g - 2 ... 4 g + 2)
    reach = CENTRE_REACH // OUTPUT_STRIDE
    window, best = F.max_pool3d(presence[None, None], 2 * reach + 1, STRIDE // OUTPUT_STRIDE, reach,
                                return_indices=True)
    window, best = window[0, 0], best[0, 0]
    box = tuple(slice(0, g) for g in grid)

    def at_best(channels: torch.Tensor) -> np.ndarray:
        return channels.flatten(1)[:, best.flatten()].reshape(len(channels), *best.shape)[(slice(None), *box)].numpy()

    peaks = np.stack(np.unravel_index(best.numpy(), presence.shape)) * OUTPUT_STRIDE
    vessel = artery = None
    if "vessel" in maps:
        near = F.max_pool3d(maps["vessel"][None, None], 2 * VESSEL_REACH + 1, 1, VESSEL_REACH)[0]
        vessel, artery = at_best(near)[0], at_best(maps["artery"])
    return WindowScores(window[box].numpy(), at_best(maps["location"]), peaks[(slice(None), *box)], vessel, artery)


def _heatmaps(model, volume: torch.Tensor, precision: Precision) -> dict[str, torch.Tensor]:
    """Presence probabilities (d, h, w) and location probabilities (13, d, h, w) at stride 4;
    with a vessel head also the vessel probability (d, h, w) and artery probabilities (14, d, h, w)."""
    volume = volume[None, None].to(precision.device).contiguous(memory_format=torch.channels_last_3d)
    with precision.context():
        output = model.dense(volume)
    maps = {"presence": torch.sigmoid(output["presence"][0].float()).cpu(),
            "location": torch.softmax(output["location"][0].float(), dim=0).cpu()}
    if "vessel" in output:
        maps.update(vessel=torch.sigmoid(output["vessel"][0].float()).cpu(),
                    artery=torch.softmax(output["artery"][0].float(), dim=0).cpu())
    return maps


def _candidates(volume: Volume, scores: np.ndarray, location: np.ndarray, peaks: np.ndarray, top: int = 5,
                floor: float = 0.05, apart_mm: float = 10.0, shown: np.ndarray | None = None) -> list[dict]:
    """The ``top`` local maxima of the window probabilities (at least ``floor``), each placed
    on its window's best heatmap cell (a 4-voxel grid); a maximum within ``apart_mm`` of a
    stronger one is the same finding and is left out. ``shown``: the probabilities given for
    them (default ``scores``; the calibrated ones)."""
    shown = scores if shown is None else shown
    tensor = torch.from_numpy(scores.astype(np.float32))[None, None]
    maxima = (F.max_pool3d(tensor, 3, stride=1, padding=1)[0, 0].numpy() == scores) & (scores >= floor)
    spacing = np.asarray(volume.spacing)
    found, kept = [], []
    for index in sorted(map(tuple, np.argwhere(maxima)), key=lambda g: -scores[g]):
        voxel = np.clip(peaks[(slice(None), *index)].astype(float), 0, np.array(volume.shape) - 1)
        if any(np.linalg.norm((voxel - other) * spacing) < apart_mm for other in kept):
            continue
        kept.append(voxel)
        patient = volume.voxel_to_patient(voxel)
        probabilities = location[(slice(None), *index)]
        best = int(np.argmax(probabilities))
        found.append({
            "probability": round(float(shown[index]), 6),
            "location": LOCATIONS[best],
            "location_probability": round(float(probabilities[best]), 6),
            "position_mm": [round(float(v), 2) for v in patient],
            "voxel": [round(float(v), 2) for v in voxel],
            **_in_source(volume, voxel, patient),
        })
        if len(found) == top:
            break
    return found


def _in_source(volume: Volume, voxel: np.ndarray, patient: np.ndarray) -> dict:
    """Where a candidate is in what was read: the DICOM image, frame and pixel (a localizer's
    terms), or for a NIfTI image its voxel (i, j, k) in the file."""
    if volume.sources:
        sop, frame, x, y = volume.voxel_to_source(voxel)
        return {"SOPInstanceUID": sop, "frame": int(frame),
                "coordinates": {"x": round(float(x), 2), "y": round(float(y), 2), **({"f": int(frame)} if frame else {})}}
    source = np.asarray(volume.info.get("source_affine_lps", volume.affine), float)  # (k, j, i) -> LPS
    kji = np.linalg.solve(source[:3, :3], patient - source[:3, 3])
    return {"SOPInstanceUID": None, "frame": None, "coordinates": None,
            "nifti_voxel": [round(float(v), 2) for v in kji[::-1]]}


# --------------------------------------------------------------------------------------
# The challenge's interface

def cached_predictor(checkpoint: str | os.PathLike | None = None, flip: bool = True,
                     calibrated: bool = True) -> Predictor:
    """This process's `Predictor` of a checkpoint file and options: a worker that scores
    many series loads its model once; loaded again when the file changed (``evaluate``
    stores a new calibration in best.pt). The last four stay loaded."""
    path = Path(checkpoint or SHIPPED_MODEL).resolve()
    try:
        stat = path.stat()
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # evaluate replaces the file: a new inode
    except OSError:
        stamp = None  # the Predictor says what is wrong with the file
    return _predictor_of(str(path), stamp, flip, calibrated)


@functools.lru_cache(maxsize=4)
def _predictor_of(path: str, stamp: tuple | None, flip: bool, calibrated: bool) -> Predictor:
    return Predictor(path, flip=flip, calibrated=calibrated)


def predict_series(series_path, checkpoint: str | os.PathLike | None = None) -> "pd.DataFrame":
    """One row with the 14 RSNA columns, in challenge order (the challenge's ``predict``);
    the models last used stay loaded (`cached_predictor`)."""
    import pandas as pd  # here: a fresh `predict` process need not load pandas (0.2-0.7 s)

    prediction = cached_predictor(checkpoint).predict(series_path)
    return pd.DataFrame([[prediction.probabilities[name] for name in LABEL_COLUMNS]], columns=list(LABEL_COLUMNS))
