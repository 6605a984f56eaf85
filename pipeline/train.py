"""Training the heatmap model: series-level split, anatomy-aware augmentation, resumable runs.

A run is a folder:

* ``config.json``: the training configuration (model, data, optimisation);
* ``split.json``: which series train and which validate (split by series, never by cube);
* ``metrics.jsonl``: one JSON line every few steps (``"kind": "step"``: loss, learning
  rate, crops/s and 48-voxel cube equivalents/s) and one per epoch (``"kind": "epoch"``:
  train loss, validation loss, validation cube-level AUC, location accuracy, and for the
  last ``series_validation_epochs`` epochs the held-out series scored whole with the
  inference path and the RSNA metric: ``series_score``, the final score);
* ``last.pt`` (weights, optimiser, scheduler, epoch: what ``--resume`` continues from)
  and ``best.pt`` (the epoch with the best held-out series score; the cube-level AUC,
  the earlier criterion, rose to 0.9 while series-level scores stayed near chance), both plain tensors and
  strings, loadable with ``torch.load(path, weights_only=True)``, each with a ``meta``
  JSON string: model configuration, label names, preprocessing parameters, the hash of
  the dataset manifest;
* ``status.json``: running / finished / stopped / failed, for whoever watches the run.
  Creating a file named ``STOP`` in the folder stops the run after the current step; the
  unfinished epoch is dropped, ``last.pt`` keeps the last finished one.

What it learns from: crops of ``crop`` voxels (48, 38 mm) cut at random from the training
series' whole processed volumes (the build's cache, held on the training device by
`pipeline.crops`, where whole batches are cut, augmented and given their targets: a GPU is
never left waiting for the host), 37.5 % of them around an aneurysm, and
a heatmap target at stride 4: 1 within ``positive_radius_mm`` of a localizer, ignored up to
``ignore_radius_mm``, 0 everywhere else. A crop covers some 200 inference windows, so a run
sees every part of every training series many times: the vessels, bifurcations, skull
base and loops that a series-level maximum over hundreds of windows would otherwise turn
into false positives (sampled cubes, tried first, covered a few dozen windows per series
and scored near chance on held-out series). The dataset's cubes serve the cube-level
validation AUC (every ``cube_validation_every`` epochs).

Class imbalance: a positive crop holds a few positive cells among 1,700. The presence
loss is the mean over positive cells plus the mean over negative cells (each class weighs
the same) plus ``hard_negative_weight`` times the mean of each crop's ``hard_negatives``
highest-loss negative cells: a series' score is its maximum over hundreds of windows, and
without this term the few normal-vessel cells (carotid siphons, the basilar artery, the
A2 pair) were a negligible part of the negative mean, so the network learnt "vessel near
the circle of Willis" and scored its own training series at chance. Augmentation
(`pipeline.crops`): intensity scale, shift and noise, a left-right flip of the patient's
left-right axis (array axis 2 in the canonical SPL orientation) that swaps the Left and
Right location labels with it, and for ``symmetry_share`` of the crops a random
rotation/reflection that keeps the presence target and drops the location labels.

The location prior (`pipeline.locate`) is fitted on the training series' aneurysms and
stored in the checkpoints' meta.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import __version__
from pipeline.cubes import head_interior
from pipeline.crops import Aneurysms, VolumeBank, cut_crops, heatmap_targets, plan_crops, vary_intensity
from pipeline.dataset import DATASET_FILES, MANIFEST_NAME, load_processed
from pipeline.files import write_json, write_text
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS
from pipeline.locate import LocationPrior, head_centre
from pipeline.metrics import roc_auc, rsna_score
from pipeline.model import INPUT_MULTIPLE, AneurysmNet, ModelConfig

STATUS = "status.json"
STOP_FILE = "STOP"
STEP_LOG_EVERY = 5
ARCHITECTURE = "heatmap-fpn-1"  # checkpoints of other architectures are refused with a clear message


@dataclass(frozen=True)
class TrainConfig:
    """What a run trains on and how."""

    datasets: tuple[str, ...]
    epochs: int = 30
    steps_per_epoch: int = 86
    batch_size: int = 14  # crops per step
    crop: int = 48  # voxels per side of a training crop, a multiple of 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_share: float = 0.25
    location_weight: float = 0.5
    positive_radius_mm: float = 4.0  # heatmap target 1 within this distance of a localizer
    ignore_radius_mm: float = 10.0  # and neither 1 nor 0 up to this one
    positive_crop_share: float = 0.75  # share of the crops from positive series drawn around an aneurysm
    hard_negatives: int = 16  # each crop's highest-loss negative cells, weighed again (0: none)
    hard_negative_weight: float = 1.0
    seed: int = 0
    precision: str = "auto"  # "auto", "bf16" or "fp32"
    symmetry_share: float = 0.5  # share of crops rotated/reflected at random (presence only)
    series_validation_epochs: int = 5  # the last epochs also score the held-out series whole (picks best.pt)
    cube_validation_every: int = 3  # epochs between cube validations (and the last epoch)
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["datasets"] = list(self.datasets)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """From `to_dict`'s output; options of earlier versions that no longer exist are left out."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in values.items() if key in known}
        values["datasets"] = tuple(values["datasets"])
        values["model"] = ModelConfig.from_dict(values["model"])
        return cls(**values)


@dataclass
class CubeData:
    """The validation cubes of the chosen datasets in memory (float16), and where every
    series' aneurysms and processed volume are."""

    cubes: torch.Tensor  # (N, 1, s, s, s) float16
    labels: torch.Tensor  # (N,) float32
    locations: torch.Tensor  # (N,) int64, -1 for negatives
    series: np.ndarray  # (N,) SeriesInstanceUID
    preprocess: dict
    manifest_sha256: str
    aneurysms: dict[str, np.ndarray] = field(default_factory=dict)  # series -> (k, 3) localizer voxels
    aneurysm_locations: dict[str, np.ndarray] = field(default_factory=dict)  # series -> (k,) location indices
    volumes: dict[str, Path] = field(default_factory=dict)  # series -> cached processed volume
    location_prior: LocationPrior | None = None  # fitted on the training series by `train`


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


def series_labels(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Series and label of every cube of the datasets (what the split needs), without the cubes."""
    series, labels = [], []
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            series.append(data["patient_ids"])
            labels.append(data["labels"])
    return np.concatenate(series), np.concatenate(labels)


def load_cubes(files: tuple[str, ...], keep: set[str] | None = None) -> CubeData:
    """The cubes of the series in ``keep`` (all when None) with their labels, and for every
    series of the datasets its aneurysm positions and cached processed volume. Training
    draws from the volumes, so only the validation series' cubes need memory."""
    parts = {key: [] for key in ("labels", "positions", "patient_ids", "centres_voxel", "kinds")}
    cube_parts, manifests = [], set()
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            for key in parts:
                parts[key].append(data[key])
            wanted = slice(None) if keep is None else np.isin(data["patient_ids"], sorted(keep))
            cube_parts.append(data["cubes"][wanted])
        manifests.add(Path(file).parent / MANIFEST_NAME)
    preprocess, digest, volumes = {}, hashlib.sha256(), {}
    for manifest in sorted(manifests):
        if manifest.is_file():
            text = manifest.read_bytes()
            digest.update(text)
            values = json.loads(text)
            preprocess = values["config"]["preprocess"]
            cache = manifest.parent / "cache" / f"preprocessed-{values['preprocess_key']}"
            volumes.update({uid: cache / f"{uid}.npz" for uid in values["series"] if (cache / f"{uid}.npz").is_file()})
    labels = np.concatenate(parts["labels"]).astype(np.float32)
    positions = np.concatenate(parts["positions"])
    locations = np.where(labels > 0, positions.argmax(axis=1), -1)
    series, kinds, centres = (np.concatenate(parts[k]) for k in ("patient_ids", "kinds", "centres_voxel"))
    first = {uid: (series == uid) & (kinds == "positive") for uid in np.unique(series[kinds == "positive"])}
    kept = np.ones(len(series), bool) if keep is None else np.isin(series, sorted(keep))
    cubes = torch.from_numpy(np.concatenate(cube_parts))[:, None]
    return CubeData(cubes, torch.from_numpy(labels[kept]), torch.from_numpy(locations[kept].astype(np.int64)),
                    series[kept], preprocess, digest.hexdigest(), {uid: centres[m] for uid, m in first.items()},
                    {uid: locations[m] for uid, m in first.items()}, volumes)


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
# Batches of crops (`pipeline.crops`)


def draw_batch(bank: VolumeBank, aneurysms: Aneurysms, config: TrainConfig, rng: np.random.Generator):
    """``batch_size`` augmented crops (B, 1, s, s, s) from the series the bank holds (whose
    ``aneurysms`` are given), and their targets (B, c, c, c) each: presence, location (-1:
    none), weight; all on the bank's device. Half the crops come from series with an
    aneurysm; of those, ``positive_crop_share`` are drawn around one of their aneurysms."""
    size = config.batch_size
    volumes = rng.integers(len(bank.uids), size=size)
    positive = np.flatnonzero(aneurysms.counts > 0)
    if len(positive):
        volumes = np.where(rng.random(size) < 0.5, positive[rng.integers(len(positive), size=size)], volumes)
    counts = aneurysms.counts[volumes]
    around = np.where((counts > 0) & (rng.random(size) < config.positive_crop_share),
                      np.floor(rng.random(size) * counts).astype(np.int64), -1)
    plans = plan_crops(bank, aneurysms, volumes, around, config.crop, rng, config.symmetry_share)
    crops = vary_intensity(cut_crops(bank, plans, config.crop)[:, None], rng)
    return (crops, *heatmap_targets(plans, config.crop, config.positive_radius_mm, config.ignore_radius_mm,
                                    bank.device))


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


# --------------------------------------------------------------------------------------
# Runs


def _device_and_precision(precision: str) -> tuple[torch.device, torch.dtype | None]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "fp32":
        return device, None
    if precision == "bf16" or device.type == "cuda" or torch.cpu._is_avx512_bf16_supported():
        return device, torch.bfloat16
    return device, None


def _bank_budget(device: torch.device) -> int:
    """Memory for the training volumes: half of what the GPU has free, 4 GiB on the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return 4 << 30


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


def checkpoint_meta(config: TrainConfig, data: CubeData, epoch: int, validation_auc: float | None,
                    series_score: float | None = None) -> str:
    return json.dumps({
        "version": __version__, "architecture": ARCHITECTURE, "model": config.model.to_dict(), "labels": list(LABEL_COLUMNS),
        "locations": list(LOCATIONS), "preprocess": data.preprocess, "dataset_manifest_sha256": data.manifest_sha256,
        "location_prior": data.location_prior.to_dict() if data.location_prior else None,
        "train_config": config.to_dict(), "epoch": epoch, "validation_auc": validation_auc,
        "series_validation_score": series_score,
    })


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[AneurysmNet, dict]:
    """A trained model and its meta data, from ``best.pt`` or ``last.pt`` (weights only)."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    meta = json.loads(checkpoint["meta"])
    if meta.get("architecture") != ARCHITECTURE:
        raise ValueError(f"{path} was trained by an earlier version of the model "
                         f"({meta.get('architecture', 'cube classifier')}); train a new one.")
    model = AneurysmNet(ModelConfig.from_dict(meta["model"]))
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
    if not resume and (config.crop % INPUT_MULTIPLE or config.crop < config.model.cube):
        raise ValueError(f"the crop ({config.crop} voxels) must be a multiple of {INPUT_MULTIPLE} "
                         f"and at least the cube ({config.model.cube}).")
    if resume:
        config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    elif (run / "config.json").exists():
        raise FileExistsError(f"{run} already holds a run: resume it, or choose another folder.")
    run.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    device, autocast_dtype = _device_and_precision(config.precision)
    if resume:
        split = json.loads((run / "split.json").read_text())
    else:
        split = split_series(*series_labels(config.datasets), config.validation_share, config.seed)
        write_json(run / "config.json", config.to_dict())
        write_json(run / "split.json", split)
    data = load_cubes(config.datasets, keep=set(split["validation"]))
    missing = [uid for uid in split["train"] if uid not in data.volumes]
    if missing:
        raise FileNotFoundError(f"{len(missing)} training series have no processed volume in the build's cache "
                                f"(e.g. {missing[0]}): rebuild the dataset with `python -m pipeline build`.")
    data.location_prior = fit_location_prior(data, split["train"])
    bank, paths = VolumeBank(device, _bank_budget(device)), {uid: data.volumes[uid] for uid in split["train"]}
    validation_index = torch.arange(len(data.labels))

    torch.manual_seed(config.seed)
    torch.backends.cudnn.benchmark = True  # every step has the same shapes
    model = AneurysmNet(config.model).to(device).to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate,
                                                    total_steps=config.epochs * config.steps_per_epoch, pct_start=0.15)
    first_epoch, best_score = 1, -1.0
    if resume and (run / "last.pt").is_file():
        state = torch.load(run / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_epoch, best_score = int(state["epoch"]) + 1, float(state.get("best_score", -1.0))
        _truncate_metrics(run, first_epoch - 1)
    elif resume:
        _truncate_metrics(run, 0)

    (run / STOP_FILE).unlink(missing_ok=True)
    status = {"state": "running", "pid": os.getpid(), "epoch": first_epoch - 1, "epochs": config.epochs,
              "device": device.type, "precision": str(autocast_dtype or "fp32"), "started": time.time()}
    write_json(run / STATUS, status)

    record: dict = {}
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            bank.hold({uid: paths[uid] for uid in bank.working_set(paths, np.random.default_rng([config.seed, epoch, 1]))})
            record = _epoch(run, epoch, config, data, bank, model, optimizer, scheduler, validation_index, device,
                            autocast_dtype, progress)
            if record is None:  # stopped in the middle of the epoch: it does not count
                status.update(state="stopped")
                break
            score = None
            if epoch > config.epochs - config.series_validation_epochs:
                meta = json.loads(checkpoint_meta(config, data, epoch, record["validation_auc"]))
                record.update(evaluate_series(model, meta, data, split["validation"], device))
                score = record["series_score"]
            # best.pt: the held-out series' score where measured (the metric itself; cube-level
            # AUCs were a poor guide to it), else the latest epoch.
            if score is not None and score > best_score or best_score < 0:
                best_score = score if score is not None else best_score
                _save(run / "best.pt", {"model": model.state_dict(),
                                        "meta": checkpoint_meta(config, data, epoch, record["validation_auc"], score)})
            _save(run / "last.pt", {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "best_score": best_score,
                "meta": checkpoint_meta(config, data, epoch, record["validation_auc"], score),
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


def _epoch(run, epoch, config, data, bank, model, optimizer, scheduler, validation_index, device, autocast_dtype,
           progress) -> dict | None:
    """One epoch (``steps_per_epoch`` batches of crops from the series the bank holds, drawn
    from a generator seeded by the epoch so that a resumed run draws the same ones) then
    validation; None if a STOP file interrupted it. Nothing waits for the device but the
    loss read every ``STEP_LOG_EVERY`` steps."""
    rng = np.random.default_rng([config.seed, epoch])
    aneurysms = Aneurysms.of(bank.uids, data.aneurysms, data.aneurysm_locations)
    model.train()
    equivalents = config.crop ** 3 / config.model.cube ** 3  # 48-voxel cubes per crop, by voxels
    start, seen, losses = time.perf_counter(), 0, []
    for step in range(1, config.steps_per_epoch + 1):
        crops, label, location, weight = draw_batch(bank, aneurysms, config, rng)
        loss = heatmap_loss(model, crops.contiguous(memory_format=torch.channels_last_3d), label, location, weight,
                            config, autocast_dtype, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += len(crops)
        losses.append(loss.detach())
        if step % STEP_LOG_EVERY == 0:
            recent = float(torch.stack(losses[-STEP_LOG_EVERY:]).mean())  # waits for the device
            rate = seen / (time.perf_counter() - start)
            line = {"kind": "step", "epoch": epoch, "step": (epoch - 1) * config.steps_per_epoch + step,
                    "loss": recent, "learning_rate": scheduler.get_last_lr()[0],
                    "crops_per_second": rate, "cubes_per_second": rate * equivalents}
            _log(run, line)
            if progress:
                progress(line)
        if (run / STOP_FILE).exists():
            return None
    train_loss = float(torch.stack(losses).mean()) if losses else None
    train_seconds = time.perf_counter() - start
    measure = epoch % max(config.cube_validation_every, 1) == 0 or epoch == config.epochs
    evaluation = evaluate_cubes(model, data, validation_index if measure else validation_index[:0], device,
                                autocast_dtype)
    rate = seen / max(train_seconds, 1e-9)
    return {"kind": "epoch", "epoch": epoch, "train_loss": train_loss,
            "learning_rate": scheduler.get_last_lr()[0], "crops_per_second": rate,
            "cubes_per_second": rate * equivalents, "seconds": train_seconds, **evaluation}


def heatmap_loss(model, crops, label, location, weight, config: TrainConfig, autocast_dtype, device) -> torch.Tensor:
    """Presence: mean over positive cells + mean over negative cells + ``hard_negative_weight``
    x mean over the ``hard_negatives`` worst negative cells; location: cross-entropy over the
    positive cells with a known location, x ``location_weight``. Ignored cells count nowhere;
    an empty class adds 0. Masked sums rather than boolean indexing: nothing here waits for
    the device."""
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        output = model.dense(crops)
    losses = F.binary_cross_entropy_with_logits(output["presence"].float(), label, reduction="none")
    positive, negative = ((label > 0) & (weight > 0)).float(), ((label == 0) & (weight > 0)).float()
    loss = _masked_mean(losses, negative) + _masked_mean(losses, positive)
    if config.hard_negatives > 0:  # per crop: its worst negative cells
        worst = (losses * negative).flatten(1).topk(config.hard_negatives, dim=1).values
        loss = loss + config.hard_negative_weight * worst.mean()
    known = positive * (location >= 0)
    cross_entropy = F.cross_entropy(output["location"].float(), location.clamp(min=0), reduction="none")
    return loss + config.location_weight * _masked_mean(cross_entropy, known)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; 0 where it is 1 nowhere."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def evaluate_series(model, meta: dict, data: CubeData, series: list[str], device) -> dict:
    """Series-level validation: the inference path (`pipeline.inference`) on every held-out
    series' cached processed volume, and the RSNA metric against the series' localizers.
    ``series_score`` is the final score, or the Aneurysm Present AUC where no location has
    both classes."""
    from pipeline.inference import Predictor

    model.eval()
    predictor = Predictor.from_model(model, meta, device)
    scored = [uid for uid in series if uid in data.volumes]
    truth = {name: np.zeros(len(scored)) for name in LABEL_COLUMNS}
    predicted = {name: np.zeros(len(scored)) for name in LABEL_COLUMNS}
    for i, uid in enumerate(scored):
        probabilities = predictor.predict_processed(load_processed(data.volumes[uid])).probabilities
        for name in LABEL_COLUMNS:
            predicted[name][i] = probabilities[name]
        for location in data.aneurysm_locations.get(uid, ()):
            truth[LOCATIONS[location]][i] = 1.0
        truth[ANEURYSM_PRESENT][i] = float(uid in data.aneurysms)
    result = rsna_score(truth, predicted)
    final, present = result["final_score"], result["aneurysm_present_auc"]
    return {"series_final_score": final, "series_aneurysm_present_auc": present,
            "series_location_auc_mean": result["location_auc_mean"],
            "series_score": final if final is not None else present}


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
