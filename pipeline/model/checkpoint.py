"""Checkpoints: the one owner of the trained model's file format.

A checkpoint (``best.pt``, ``last.pt`` of a run, ``models/demo/best.pt``) is a dict of plain
tensors and strings, loadable with ``torch.load(path, weights_only=True)``:

* ``model``: the network's state dict;
* ``meta``: a JSON string (`CheckpointMeta`): architecture, model configuration, label
  names, the preprocessing parameters the model was trained with (required: inference
  preprocesses with exactly these), the location prior, the training configuration, the
  dataset manifest's hash, the epoch and its validation scores, and the calibration of the
  aneurysm probability (`pipeline.model.calibration`) once ``evaluate --run`` fitted it, and
  the share of the training series with each label (predict-all's fallback);
* in ``last.pt`` also what ``--resume`` continues from: ``optimizer``, ``scheduler``,
  ``epoch``, ``best_score``.

Training writes them with `save_checkpoint` (atomic), inference and evaluation read them
with `load_checkpoint`, which refuses what this version cannot use with one clear sentence.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import __version__
from pipeline.files import temporary_beside
from pipeline.labels import LABEL_COLUMNS, LOCATIONS
from pipeline.model.calibration import Calibration
from pipeline.model.locate import LocationPrior
from pipeline.model.config import ModelConfig
from pipeline.model.network import AneurysmNet
from pipeline.preprocess.config import PreprocessConfig

ARCHITECTURE = "heatmap-fpn-1"  # checkpoints of other architectures are refused with a clear message


class CheckpointError(ValueError):
    """A file that is not a checkpoint this version can use (the message says why)."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its model, beside the weights."""

    model: ModelConfig
    preprocess: PreprocessConfig
    location_prior: LocationPrior | None
    train_config: dict
    dataset_manifest_sha256: str
    epoch: int
    validation_auc: float | None = None
    series_validation_score: float | None = None
    calibration: Calibration | None = None  # fitted on the held-out series by `evaluate --run`
    label_prevalence: dict[str, float] | None = None  # share of the training series with each label

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict:
        """The meta data as plain JSON values (what ``meta`` holds, for display and reports)."""
        return {
            "version": __version__, "architecture": ARCHITECTURE, "model": self.model.to_dict(),
            "labels": list(LABEL_COLUMNS), "locations": list(LOCATIONS), "preprocess": self.preprocess.to_dict(),
            "dataset_manifest_sha256": self.dataset_manifest_sha256,
            "location_prior": self.location_prior.to_dict() if self.location_prior else None,
            "train_config": self.train_config, "epoch": self.epoch, "validation_auc": self.validation_auc,
            "series_validation_score": self.series_validation_score,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "label_prevalence": self.label_prevalence,
        }

    @classmethod
    def from_json(cls, text: str, path: str | os.PathLike = "the checkpoint") -> "CheckpointMeta":
        """Read ``meta``; refuses other architectures, other label sets and a checkpoint
        without preprocessing parameters (defaults would silently change its input)."""
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            raise CheckpointError(f"{path} has no readable meta data: it was not written by this project.") from None
        if not isinstance(values, dict):
            raise CheckpointError(f"{path} has no readable meta data: it was not written by this project.")
        if values.get("architecture") != ARCHITECTURE:
            raise CheckpointError(f"{path} was trained by an earlier version of the model "
                                  f"({values.get('architecture', 'cube classifier')}); train a new one.")
        if list(values.get("labels", [])) != list(LABEL_COLUMNS):
            raise CheckpointError(f"{path} predicts other labels than the 14 RSNA columns; train a new one.")
        if not isinstance(values.get("preprocess"), dict) or not values["preprocess"]:
            raise CheckpointError(f"{path} does not record the preprocessing it was trained with, so its input "
                                  "cannot be reproduced; train a new one.")
        try:
            prior = values.get("location_prior")
            return cls(ModelConfig.from_dict(values["model"]), PreprocessConfig.from_dict(values["preprocess"]),
                       LocationPrior.from_dict(prior) if prior else None, dict(values.get("train_config") or {}),
                       str(values.get("dataset_manifest_sha256", "")), int(values.get("epoch", 0)),
                       values.get("validation_auc"), values.get("series_validation_score"),
                       Calibration.from_dict(values["calibration"]) if values.get("calibration") else None,
                       _prevalence(values.get("label_prevalence")))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} has meta data this version cannot read ({exc}); train a new one.") from None


def _prevalence(values) -> dict[str, float] | None:
    if values is None:
        return None
    if not isinstance(values, dict) or not all(isinstance(values.get(n), (int, float)) for n in LABEL_COLUMNS):
        raise ValueError("label_prevalence is not a share per label")
    return {name: float(values[name]) for name in LABEL_COLUMNS}


@dataclass
class TrainedModel:
    """A network in eval mode and the meta data of the checkpoint it came from."""

    network: AneurysmNet
    meta: CheckpointMeta


def save_checkpoint(path: Path, network: torch.nn.Module, meta: CheckpointMeta, **training_state) -> None:
    """Write a checkpoint atomically (a temporary file beside it, then a rename): a reader or a
    crash never sees half of one. ``training_state``: what ``last.pt`` adds for ``--resume``."""
    _write(Path(path), {"model": network.state_dict(), "meta": meta.to_json(), **training_state})


def _write(path: Path, checkpoint: dict) -> None:
    temporary = temporary_beside(path)
    buffer = io.BytesIO()  # torch's own file writer turns a full disk into a bare RuntimeError
    torch.save(checkpoint, buffer)
    try:
        temporary.write_bytes(buffer.getbuffer())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def update_meta(path: str | os.PathLike, **changes) -> None:
    """Change fields of a checkpoint's meta (`CheckpointMeta`: its calibration, its label
    prevalence), atomically; the weights and whatever else it holds stay as they are."""
    checkpoint = read_checkpoint(path)
    meta = dataclasses.replace(CheckpointMeta.from_json(checkpoint["meta"], path), **changes)
    _write(Path(path), {**checkpoint, "meta": meta.to_json()})


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The raw dict of a checkpoint (weights only: no pickled code ever runs).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is not a checkpoint (empty, truncated, a pickle, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model at {path}: train one (python -m pipeline train) and pass --model RUN/best.pt.")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a checkpoint this project can load ({first[:200]}).") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("meta"), str) or \
            not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path} is not a checkpoint this project wrote (no weights and meta data).")
    return checkpoint


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """The trained network (eval mode, on ``device``) and meta data of a checkpoint.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: not a checkpoint, another architecture, no preprocessing parameters,
            or weights that do not fit the recorded model configuration.
    """
    checkpoint = read_checkpoint(path, device)
    meta = CheckpointMeta.from_json(checkpoint["meta"], path)
    network = AneurysmNet(meta.model)
    try:
        network.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit its model configuration "
                              f"({str(exc).splitlines()[0][:200]}).") from None
    return TrainedModel(network.to(device).eval(), meta)
