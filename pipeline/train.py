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
  unfinished epoch is dropped, ``last.pt`` keeps the last finished one;
* ``mined.json``: the windows added by hard-negative mining (below), so that ``--resume``
  rebuilds the same training set.

Class imbalance: the presence loss weighs positive cubes by (negatives / positives) of the
training set, unless ``positive_weight`` sets another weight. Augmentation: intensity
scale, shift and noise, shifts of up to 3 voxels, a left-right flip of the patient's
left-right axis (array axis 2 in the canonical SPL orientation) that swaps the Left and
Right location labels with it, and for half the cubes a random rotation/reflection that
keeps the presence label and drops the location label.

Hard-negative mining: a few times during the run (``mining_rounds``) the model scores every
window of every training series exactly as inference does (`pipeline.inference`), and the
highest-scoring windows at least ``min_distance_mm`` (the build's) from every aneurysm are
cut from the cached processed volumes and added as negatives. A series-level maximum over
hundreds of windows punishes any false positive, and these are the ones the model makes.
Epochs keep the number of steps of the first one (a random subset of the grown set), so
the learning-rate schedule does not change; ``best.pt`` is chosen among the epochs after
the last round only.

The location prior (`pipeline.locate`) is fitted on the training series' aneurysms and
stored in the checkpoints' meta.
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
from pipeline.cubes import extract_cube, head_interior
from pipeline.dataset import CUBE_DTYPE, DATASET_FILES, MANIFEST_NAME, load_processed
from pipeline.files import write_json, write_text
from pipeline.inference import Windows, score_windows
from pipeline.labels import LABEL_COLUMNS, LOCATIONS, MIRROR_PERMUTATION
from pipeline.locate import LocationPrior, head_centre
from pipeline.metrics import roc_auc
from pipeline.model import AneurysmNet, ModelConfig

STATUS = "status.json"
STOP_FILE = "STOP"
MINED = "mined.json"
STEP_LOG_EVERY = 5


@dataclass(frozen=True)
class TrainConfig:
    """What a run trains on and how."""

    datasets: tuple[str, ...]
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_share: float = 0.25
    location_weight: float = 0.5
    max_shift: int = 3
    seed: int = 0
    precision: str = "auto"  # "auto", "bf16" or "fp32"
    positive_weight: float | None = None  # weight of positive cubes in the presence loss; None: negatives / positives
    mining_rounds: int = 1  # hard-negative mining rounds over the training series (0: none)
    mined_per_series: int = 32  # windows added per training series and round
    symmetry_share: float = 0.5  # share of cubes rotated/reflected at random (presence only)
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
    aneurysms: dict[str, np.ndarray] = field(default_factory=dict)  # series -> (k, 3) localizer voxels
    aneurysm_locations: dict[str, np.ndarray] = field(default_factory=dict)  # series -> (k,) location indices
    volumes: dict[str, Path] = field(default_factory=dict)  # series -> cached processed volume
    min_distance_mm: float = 20.0  # least distance from a negative to an aneurysm (the build's)
    location_prior: LocationPrior | None = None  # fitted on the training series by `train`

    def add_negatives(self, cubes: np.ndarray, series: np.ndarray) -> torch.Tensor:
        """Append negative cubes (N, s, s, s) of the given series; returns their indices."""
        start = len(self.labels)
        self.cubes = torch.cat([self.cubes, torch.from_numpy(cubes)[:, None]])
        self.labels = torch.cat([self.labels, torch.zeros(len(cubes))])
        self.locations = torch.cat([self.locations, torch.full((len(cubes),), -1, dtype=torch.int64)])
        self.series = np.concatenate([self.series, series.astype(self.series.dtype)])
        return torch.arange(start, len(self.labels))


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
    parts = {key: [] for key in ("cubes", "labels", "positions", "patient_ids", "centres_voxel", "kinds")}
    manifests = set()
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            for key in parts:
                parts[key].append(data[key])
        manifests.add(Path(file).parent / MANIFEST_NAME)
    preprocess, digest, volumes, min_distance = {}, hashlib.sha256(), {}, 20.0
    for manifest in sorted(manifests):
        if manifest.is_file():
            text = manifest.read_bytes()
            digest.update(text)
            values = json.loads(text)
            preprocess, min_distance = values["config"]["preprocess"], float(values["config"]["min_distance_mm"])
            cache = manifest.parent / "cache" / f"preprocessed-{values['preprocess_key']}"
            volumes.update({uid: cache / f"{uid}.npz" for uid in values["series"] if (cache / f"{uid}.npz").is_file()})
    labels = np.concatenate(parts["labels"]).astype(np.float32)
    positions = np.concatenate(parts["positions"])
    locations = np.where(labels > 0, positions.argmax(axis=1), -1)
    series, kinds, centres = (np.concatenate(parts[k]) for k in ("patient_ids", "kinds", "centres_voxel"))
    first = {uid: (series == uid) & (kinds == "positive") for uid in np.unique(series[kinds == "positive"])}
    cubes = torch.from_numpy(np.concatenate(parts["cubes"]))[:, None]
    return CubeData(cubes, torch.from_numpy(labels), torch.from_numpy(locations.astype(np.int64)), series, preprocess,
                    digest.hexdigest(), {uid: centres[m] for uid, m in first.items()},
                    {uid: locations[m] for uid, m in first.items()}, volumes, min_distance)


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


def augment(cubes: torch.Tensor, locations: torch.Tensor, generator: torch.Generator, max_shift: int,
            symmetry_share: float = 0.0):
    """Random left-right flip (with the Left/Right labels swapped), shift and intensity change;
    and for a ``symmetry_share`` of the cubes a random rotation/reflection of the cube (a
    dome is a dome whichever way it points), after which their location is unknown (-1)."""
    n = cubes.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    cubes = torch.where(flip[:, None, None, None, None], cubes.flip(-1), cubes)
    mirrored = torch.where(locations >= 0, MIRROR[locations.clamp(min=0)], locations)
    locations = torch.where(flip, mirrored, locations)
    turned = torch.rand(n, generator=generator) < symmetry_share
    if turned.any():
        cubes = cubes.clone()
        for i in torch.nonzero(turned).flatten().tolist():
            axes = (torch.randperm(3, generator=generator) + 1).tolist()
            flips = [a + 1 for a in range(3) if torch.rand(1, generator=generator) < 0.5]
            turned_cube = cubes[i].permute(0, *axes)
            cubes[i] = (turned_cube.flip(flips) if flips else turned_cube).clone()
        locations = torch.where(turned, torch.full_like(locations, -1), locations)
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
# Hard-negative mining


def mining_epochs(config: TrainConfig) -> list[int]:
    """After which epochs the training series are mined: evenly spread, never after the last."""
    rounds = max(0, config.mining_rounds)
    return sorted({max(1, round(config.epochs * r / (rounds + 1))) for r in range(1, rounds + 1)} - {config.epochs})


def mine_windows(model, data: CubeData, series: list[str], per_series: int, device, autocast_dtype) -> dict[str, list]:
    """The windows the model scores highest in each series, among those of the inference
    (in-head, on the 16-voxel grid) at least ``data.min_distance_mm`` from every aneurysm:
    the false positives that a series-level maximum would pick up. Series without a cached
    processed volume are left out."""
    model.eval()
    found = {}
    for uid in series:
        if uid not in data.volumes:
            continue
        volume = load_processed(data.volumes[uid])
        centres = Windows.of(volume).centres
        presence, _ = score_windows(model, volume.array, centres, model.config.cube, device, autocast_dtype)
        aneurysms = data.aneurysms.get(uid, np.zeros((0, 3)))
        if len(aneurysms):
            distance = np.linalg.norm((centres[:, None] - aneurysms[None]) * np.asarray(volume.spacing), axis=-1)
            keep = distance.min(axis=1) >= data.min_distance_mm
            centres, presence = centres[keep], presence[keep]
        order = np.argsort(-presence, kind="stable")[:per_series]
        found[uid] = centres[order].tolist()
    return found


def add_mined(data: CubeData, windows: dict[str, list]) -> torch.Tensor:
    """Cut the mined windows' cubes from the cached volumes; returns their indices."""
    cube, cubes, series = data.cubes.shape[-1], [], []
    for uid, centres in windows.items():
        if centres:
            array = load_processed(data.volumes[uid]).array
            cubes += [extract_cube(array, centre, cube).astype(CUBE_DTYPE) for centre in centres]
            series += [uid] * len(centres)
    if not cubes:
        return torch.zeros(0, dtype=torch.int64)
    return data.add_negatives(np.stack(cubes), np.array(series))


def fit_location_prior(data: CubeData, series: list[str]) -> LocationPrior | None:
    """The location prior (`pipeline.locate`) from the aneurysms of the training series."""
    locations, offsets = [], []
    for uid in series:
        if uid not in data.volumes or uid not in data.aneurysms:
            continue
        volume = load_processed(data.volumes[uid])
        centre = head_centre(*head_interior(volume))
        offsets.append((data.aneurysms[uid] - centre) * np.asarray(volume.spacing))
        locations.append(data.aneurysm_locations[uid])
    if not locations:
        return None
    return LocationPrior.fit(np.concatenate(locations), np.concatenate(offsets))


def _positive_weight(config: TrainConfig, labels: torch.Tensor) -> torch.Tensor:
    if config.positive_weight is not None:
        return torch.tensor(float(config.positive_weight))
    return (len(labels) - labels.sum()) / labels.sum().clamp(min=1.0)


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
        "location_prior": data.location_prior.to_dict() if data.location_prior else None,
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
    data.location_prior = fit_location_prior(data, split["train"])
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

    mined = {"rounds": []}
    if resume and (run / MINED).is_file():  # the rounds the checkpoint has seen come back; later ones are redone
        mined["rounds"] = [r for r in json.loads((run / MINED).read_text())["rounds"] if r["epoch"] < first_epoch]
        for round_ in mined["rounds"]:
            train_index = torch.cat([train_index, add_mined(data, round_["windows"])])
    (run / STOP_FILE).unlink(missing_ok=True)
    status = {"state": "running", "pid": os.getpid(), "epoch": first_epoch - 1, "epochs": config.epochs,
              "device": device.type, "precision": str(autocast_dtype or "fp32"), "started": time.time()}
    write_json(run / STATUS, status)

    record: dict = {}
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            done = {r["epoch"] for r in mined["rounds"]}
            for due in [e for e in mining_epochs(config) if e < epoch and e not in done]:
                train_index = torch.cat([train_index, _mining_round(run, config, data, model, split, mined, due, device,
                                                                    autocast_dtype, progress)])
            record = _epoch(run, epoch, config, data, model, optimizer, scheduler, train_index, steps_per_epoch,
                            validation_index, device, autocast_dtype, progress)
            if record is None:  # stopped in the middle of the epoch: it does not count
                status.update(state="stopped")
                break
            # Cube-level validation does not see the false positives that mining removes, so
            # epochs before the last mining round never count as the best; without a validation
            # AUC, the latest epoch is kept.
            settled = epoch > max(mining_epochs(config), default=0)
            improved = settled and record["validation_auc"] is not None and record["validation_auc"] > best_auc
            if improved or not (run / "best.pt").is_file() or (settled and best_auc < 0):
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


def _mining_round(run, config, data, model, split, mined, epoch, device, autocast_dtype, progress) -> torch.Tensor:
    """Mine the training series after ``epoch``, record the windows (``mined.json``) and add their cubes."""
    start = time.perf_counter()
    windows = mine_windows(model, data, split["train"], config.mined_per_series, device, autocast_dtype)
    mined["rounds"].append({"epoch": epoch, "windows": windows})
    write_json(run / MINED, mined)
    added = add_mined(data, windows)
    record = {"kind": "mining", "epoch": epoch, "series": len(windows), "cubes": len(added),
              "seconds": time.perf_counter() - start}
    _log(run, record)
    if progress:
        progress(record)
    return added


def _epoch(run, epoch, config, data, model, optimizer, scheduler, train_index, steps_per_epoch, validation_index,
           device, autocast_dtype, progress) -> dict | None:
    """One epoch (``steps_per_epoch`` batches drawn from the training cubes, which mining
    enlarges) then validation; None if a STOP file interrupted it."""
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = train_index[torch.randperm(len(train_index), generator=generator)][: steps_per_epoch * config.batch_size]
    positive_weight = _positive_weight(config, data.labels[train_index])
    model.train()
    start, seen, losses = time.perf_counter(), 0, []
    for step, batch in enumerate(order.split(config.batch_size), start=1):
        cubes, locations = augment(data.cubes[batch].float(), data.locations[batch], generator, config.max_shift,
                                     config.symmetry_share)
        loss = _loss(model, cubes.to(device).contiguous(memory_format=torch.channels_last_3d), data.labels[batch].to(device),
                     locations.to(device), positive_weight.to(device), config.location_weight, autocast_dtype, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += len(batch)
        losses.append(loss.item())
        if step % STEP_LOG_EVERY == 0:
            line = {"kind": "step", "epoch": epoch, "step": (epoch - 1) * steps_per_epoch + step,
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
