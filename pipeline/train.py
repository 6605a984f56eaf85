"""Training the cube model: series-level split, anatomy-aware augmentation, resumable runs.

A run is a folder:

* ``config.json``: the training configuration (model, data, optimisation);
* ``split.json``: which series train and which validate (split by series, never by cube);
* ``metrics.jsonl``: one JSON line every few steps (``"kind": "step"``: loss, learning
  rate, cubes/s) and one per epoch (``"kind": "epoch"``: train and validation loss,
  validation cube-level AUC, location accuracy);
* ``last.pt`` (weights, optimiser, scheduler, epoch: what ``--resume`` continues from)
  and ``best.pt`` (the weights with the best validation AUC), both plain tensors and
  strings, loadable with ``torch.load(path, weights_only=True)``, each with a ``meta``
  JSON string: model configuration, label names, preprocessing parameters, the hash of
  the dataset manifest;
* ``status.json``: running / finished / stopped / failed, for whoever watches the run.
  Creating a file named ``STOP`` in the folder stops the run after the current step; the
  unfinished epoch is dropped, ``last.pt`` keeps the last finished one.

Class imbalance: the presence loss weighs positive cubes by (negatives / positives) of the
training split, unless ``positive_weight`` sets another weight. Augmentation: intensity scale, shift and noise, shifts of up to 3 voxels,
and a left-right flip of the patient's left-right axis (array axis 2 in the canonical SPL
orientation) that swaps the Left and Right location labels with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import __version__
from pipeline.dataset import DATASET_FILES, MANIFEST_NAME
from pipeline.files import write_json, write_text
from pipeline.labels import LABEL_COLUMNS, LOCATIONS, MIRROR_PERMUTATION
from pipeline.metrics import roc_auc
from pipeline.model import AneurysmNet, ModelConfig

STATUS = "status.json"
STOP_FILE = "STOP"
STEP_LOG_EVERY = 5


@dataclass(frozen=True)
class TrainConfig:
    """What a run trains on and how."""

    datasets: tuple[str, ...]
    epochs: int = 25
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_share: float = 0.25
    location_weight: float = 0.5
    max_shift: int = 3
    seed: int = 0
    precision: str = "auto"  # "auto", "bf16" or "fp32"
    positive_weight: float | None = None  # weight of positive cubes in the presence loss; None: negatives / positives
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["datasets"] = list(self.datasets)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        values = dict(values)
        values["datasets"] = tuple(values["datasets"])
        values["model"] = ModelConfig(**values["model"])
        return cls(**values)


@dataclass
class CubeData:
    """All cubes of the chosen datasets, in memory (float16)."""

    cubes: torch.Tensor  # (N, 1, s, s, s) float16
    labels: torch.Tensor  # (N,) float32
    locations: torch.Tensor  # (N,) int64, -1 for negatives
    series: np.ndarray  # (N,) SeriesInstanceUID
    preprocess: dict
    manifest_sha256: str


# --------------------------------------------------------------------------------------
# Data


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


def load_cubes(files: tuple[str, ...]) -> CubeData:
    parts = {key: [] for key in ("cubes", "labels", "positions", "patient_ids")}
    manifests = set()
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            for key in parts:
                parts[key].append(data[key])
        manifests.add(Path(file).parent / MANIFEST_NAME)
    preprocess, digest = {}, hashlib.sha256()
    for manifest in sorted(manifests):
        if manifest.is_file():
            text = manifest.read_bytes()
            digest.update(text)
            preprocess = json.loads(text)["config"]["preprocess"]
    labels = np.concatenate(parts["labels"]).astype(np.float32)
    positions = np.concatenate(parts["positions"])
    locations = np.where(labels > 0, positions.argmax(axis=1), -1)
    cubes = torch.from_numpy(np.concatenate(parts["cubes"]))[:, None]
    return CubeData(cubes, torch.from_numpy(labels), torch.from_numpy(locations.astype(np.int64)),
                    np.concatenate(parts["patient_ids"]), preprocess, digest.hexdigest())


def split_series(series: np.ndarray, labels: np.ndarray, share: float, seed: int) -> dict[str, list[str]]:
    """Hold out about ``share`` of the series, positive and negative series alike."""
    rng = np.random.default_rng(seed)
    positive = {s for s, label in zip(series, labels) if label > 0}
    validation = []
    for group in (sorted(positive), sorted(set(series) - positive)):
        group = list(group)
        rng.shuffle(group)
        validation += group[: max(1, int(round(share * len(group))))] if len(group) > 1 else []
    return {"train": sorted(set(series) - set(validation)), "validation": sorted(validation)}


# --------------------------------------------------------------------------------------
# Augmentation


MIRROR = torch.tensor(MIRROR_PERMUTATION)


def augment(cubes: torch.Tensor, locations: torch.Tensor, generator: torch.Generator, max_shift: int):
    """Random left-right flip (with the Left/Right labels swapped), shift and intensity change."""
    n = cubes.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    cubes = torch.where(flip[:, None, None, None, None], cubes.flip(-1), cubes)
    mirrored = torch.where(locations >= 0, MIRROR[locations.clamp(min=0)], locations)
    locations = torch.where(flip, mirrored, locations)
    if max_shift > 0:
        size = cubes.shape[-1]
        padded = F.pad(cubes, (max_shift,) * 6, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (n, 3), generator=generator)
        cubes = torch.stack([padded[i, :, z:z + size, y:y + size, x:x + size] for i, (z, y, x) in enumerate(offsets.tolist())])
    scale = 1.0 + 0.2 * (torch.rand(n, 1, 1, 1, 1, generator=generator) - 0.5)
    shift = 0.1 * (torch.rand(n, 1, 1, 1, 1, generator=generator) - 0.5)
    noise = 0.02 * torch.rand(n, 1, 1, 1, 1, generator=generator) * torch.randn(cubes.shape, generator=generator)
    return cubes * scale + shift + noise, locations


# --------------------------------------------------------------------------------------
# Runs


def _device_and_precision(precision: str) -> tuple[torch.device, torch.dtype | None]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "fp32":
        return device, None
    if precision == "bf16" or device.type == "cuda" or torch.cpu._is_avx512_bf16_supported():
        return device, torch.bfloat16
    return device, None


def _save(path: Path, value: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(value, temporary)
    os.replace(temporary, path)


def _log(run: Path, record: dict) -> None:
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(run: str | os.PathLike) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written
    return records


def _truncate_metrics(run: Path, epoch: int) -> None:
    kept = [r for r in read_metrics(run) if r.get("epoch", 0) <= epoch]
    write_text(run / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))


def checkpoint_meta(config: TrainConfig, data: CubeData, epoch: int, validation_auc: float | None) -> str:
    return json.dumps({
        "version": __version__, "model": config.model.to_dict(), "labels": list(LABEL_COLUMNS),
        "locations": list(LOCATIONS), "preprocess": data.preprocess, "dataset_manifest_sha256": data.manifest_sha256,
        "train_config": config.to_dict(), "epoch": epoch, "validation_auc": validation_auc,
    })


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[AneurysmNet, dict]:
    """A trained model and its meta data, from ``best.pt`` or ``last.pt`` (weights only)."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    meta = json.loads(checkpoint["meta"])
    model = AneurysmNet(ModelConfig(**meta["model"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), meta


def train(
    config: TrainConfig,
    run: str | os.PathLike,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or continue) a run; returns the last epoch record.

    Args:
        config: ignored when resuming (the run's own ``config.json`` is used).
        run: the run folder.
        resume: continue from ``last.pt``; otherwise the folder must not hold a run yet.
        progress: called with every record written to ``metrics.jsonl``.
    """
    run = Path(run)
    if resume:
        config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    elif (run / "config.json").exists():
        raise FileExistsError(f"{run} already holds a run: resume it, or choose another folder.")
    run.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    device, autocast_dtype = _device_and_precision(config.precision)
    data = load_cubes(config.datasets)

    if resume:
        split = json.loads((run / "split.json").read_text())
    else:
        split = split_series(data.series, data.labels.numpy(), config.validation_share, config.seed)
        write_json(run / "config.json", config.to_dict())
        write_json(run / "split.json", split)
    in_train = np.isin(data.series, split["train"])
    train_index = torch.from_numpy(np.flatnonzero(in_train))
    validation_index = torch.from_numpy(np.flatnonzero(~in_train & np.isin(data.series, split["validation"])))

    torch.manual_seed(config.seed)
    model = AneurysmNet(config.model).to(device).to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_index) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate,
                                                    total_steps=config.epochs * steps_per_epoch, pct_start=0.15)
    first_epoch, best_auc = 1, -1.0
    if resume and (run / "last.pt").is_file():
        state = torch.load(run / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_epoch, best_auc = int(state["epoch"]) + 1, float(state["best_auc"])
        _truncate_metrics(run, first_epoch - 1)
    elif resume:
        _truncate_metrics(run, 0)

    train_labels = data.labels[train_index]
    positive_weight = (len(train_labels) - train_labels.sum()) / train_labels.sum().clamp(min=1.0)
    if config.positive_weight is not None:
        positive_weight = torch.tensor(float(config.positive_weight))
    (run / STOP_FILE).unlink(missing_ok=True)
    status = {"state": "running", "pid": os.getpid(), "epoch": first_epoch - 1, "epochs": config.epochs,
              "device": device.type, "precision": str(autocast_dtype or "fp32"), "started": time.time()}
    write_json(run / STATUS, status)

    record: dict = {}
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            record = _epoch(run, epoch, config, data, model, optimizer, scheduler, train_index, validation_index,
                            positive_weight, device, autocast_dtype, progress)
            if record is None:  # stopped in the middle of the epoch: it does not count
                status.update(state="stopped")
                break
            improved = record["validation_auc"] is not None and record["validation_auc"] > best_auc
            if improved or not (run / "best.pt").is_file():  # without a validation AUC: the latest
                best_auc = record["validation_auc"] if improved else best_auc
                _save(run / "best.pt", {"model": model.state_dict(),
                                        "meta": checkpoint_meta(config, data, epoch, best_auc)})
            _save(run / "last.pt", {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "best_auc": best_auc, "meta": checkpoint_meta(config, data, epoch, record["validation_auc"]),
            })
            _log(run, record)
            if progress:
                progress(record)
            status.update(epoch=epoch, updated=time.time())
            write_json(run / STATUS, status)
        else:
            status.update(state="finished")
    except BaseException as exc:
        status.update(state="failed" if not isinstance(exc, KeyboardInterrupt) else "stopped",
                      message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        status["updated"] = time.time()
        write_json(run / STATUS, status)
    return record


def _epoch(run, epoch, config, data, model, optimizer, scheduler, train_index, validation_index, positive_weight,
           device, autocast_dtype, progress) -> dict | None:
    """One epoch of training then validation; None if a STOP file interrupted it."""
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = train_index[torch.randperm(len(train_index), generator=generator)]
    model.train()
    start, seen, losses = time.perf_counter(), 0, []
    for step, batch in enumerate(order.split(config.batch_size), start=1):
        cubes, locations = augment(data.cubes[batch].float(), data.locations[batch], generator, config.max_shift)
        loss = _loss(model, cubes.to(device).contiguous(memory_format=torch.channels_last_3d), data.labels[batch].to(device),
                     locations.to(device), positive_weight.to(device), config.location_weight, autocast_dtype, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += len(batch)
        losses.append(loss.item())
        if step % STEP_LOG_EVERY == 0:
            line = {"kind": "step", "epoch": epoch, "step": (epoch - 1) * math.ceil(len(train_index) / config.batch_size) + step,
                    "loss": float(np.mean(losses[-STEP_LOG_EVERY:])), "learning_rate": scheduler.get_last_lr()[0],
                    "cubes_per_second": seen / (time.perf_counter() - start)}
            _log(run, line)
            if progress:
                progress(line)
        if (run / STOP_FILE).exists():
            return None
    train_seconds = time.perf_counter() - start
    evaluation = evaluate_cubes(model, data, validation_index, device, autocast_dtype)
    return {"kind": "epoch", "epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
            "learning_rate": scheduler.get_last_lr()[0], "cubes_per_second": seen / max(train_seconds, 1e-9),
            "seconds": train_seconds, **evaluation}


def _loss(model, cubes, labels, locations, positive_weight, location_weight, autocast_dtype, device):
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        output = model(cubes)
    presence = F.binary_cross_entropy_with_logits(output["presence"].float(), labels, pos_weight=positive_weight)
    positive = locations >= 0
    if positive.any():
        presence = presence + location_weight * F.cross_entropy(output["location"].float()[positive], locations[positive])
    return presence


@torch.no_grad()
def evaluate_cubes(model, data: CubeData, index: torch.Tensor, device, autocast_dtype, batch_size: int = 64) -> dict:
    """Cube-level validation: loss, presence AUC, location accuracy on positive cubes."""
    if len(index) == 0:
        return {"validation_loss": None, "validation_auc": None, "validation_location_accuracy": None}
    model.eval()
    scores, predicted_locations = [], []
    for batch in index.split(batch_size):
        cubes = data.cubes[batch].float().to(device).contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            output = model(cubes)
        scores.append(output["presence"].float().cpu())
        predicted_locations.append(output["location"].float().argmax(1).cpu())
    scores, predicted_locations = torch.cat(scores), torch.cat(predicted_locations)
    labels, locations = data.labels[index], data.locations[index]
    positive = locations >= 0
    return {
        "validation_loss": float(F.binary_cross_entropy_with_logits(scores, labels)),
        "validation_auc": roc_auc(labels.numpy(), scores.numpy()),
        "validation_location_accuracy": float((predicted_locations[positive] == locations[positive]).float().mean())
        if positive.any() else None,
    }
