"""Training the heatmap model: series-level split, anatomy-aware augmentation, resumable runs.

A run is a folder (`pipeline.runs`): ``config.json``, ``split.json`` (split by series,
never by cube), ``metrics.jsonl`` (a ``"kind": "step"`` line every few steps: loss, learning
rate, crops/s and 48-voxel cube equivalents/s; a ``"kind": "epoch"`` line per epoch: train
loss, validation loss, cube-level AUC, location accuracy, and for the last
``series_validation_epochs`` epochs the held-out series scored whole with the inference path
and the RSNA metric: ``series_score``), ``status.json``, and the checkpoints
(`pipeline.model.checkpoint`): ``last.pt`` (what ``--resume`` continues from) and ``best.pt``
(the epoch with the best held-out series score; the cube-level AUC, the earlier criterion,
rose to 0.9 while series-level scores stayed near chance). Creating ``STOP`` in the folder
stops the run after the current step; the unfinished epoch is dropped, ``last.pt`` keeps
the last finished one.

What it learns from: crops of ``crop`` voxels (48, 38 mm) cut at random from the training
series' whole processed volumes (the build's cache, held on the training device by
`pipeline.training.crops`, where whole batches are cut, augmented and given their targets: a GPU is
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
(`pipeline.training.crops`): intensity scale, shift and noise, a left-right flip of the patient's
left-right axis (array axis 2 in the canonical SPL orientation) that swaps the Left and
Right location labels with it, and for ``symmetry_share`` of the crops a random
rotation/reflection that keeps the presence target and drops the location labels.

The location prior (`pipeline.model.locate`) is fitted on the training series' aneurysms and
stored in the checkpoints' meta.

Data-parallel (`pipeline.training.distributed`: ``train --nproc-per-node N``, or torchrun):
each rank holds its shard of the training series, draws ``batch_size / N`` crops a step
from its own random stream (the global batch stays ``batch_size``) and DDP averages the
gradients; the held-out series are scored in shards and the scores gathered (each series
once); rank 0 writes the run folder and its STOP file is every rank's (agreed every
`STEP_LOG_EVERY` steps); ``status.json`` says how many processes trained.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pipeline.errors import StorageError
from pipeline.files import remove_leftovers, storage_error
from pipeline.labels import ANEURYSM_PRESENT, LOCATIONS
from pipeline.model.checkpoint import CheckpointMeta, TrainedModel, read_checkpoint, save_checkpoint
from pipeline.model.network import AneurysmNet
from pipeline.model.precision import Precision, choose_precision
from pipeline.preprocess.cache import has_vessels
from pipeline.runs import FAILED, FINISHED, RUNNING, STOPPED, RunFolder
from pipeline.training.config import TrainConfig
from pipeline.training.crops import Aneurysms, VolumeBank, draw_batch
from pipeline.training.data import CubeData, load_training_data, split_datasets
from pipeline.training.distributed import (World, any_rank, barrier, current_world, data_parallel, gathered,
                                           from_main, join, leave, mean_over_ranks, shard, sync_buffers)
from pipeline.training.loss import heatmap_loss
from pipeline.training.validation import NO_CUBE_VALIDATION, evaluate_cubes, predict_held_out, score_series

STEP_LOG_EVERY = 5  # the loss is read (a device sync) every this many steps


def train(
    config: TrainConfig | None,
    run: str | os.PathLike,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    world: World | None = None,
) -> dict:
    """Train (or continue) a run; returns the last epoch record.

    Args:
        config: ignored when resuming (the run's own ``config.json`` is used).
        run: the run folder (the same one on every rank).
        resume: continue from ``last.pt``; otherwise the folder must not hold a run yet.
        progress: called with every record written to ``metrics.jsonl`` (on rank 0).
        world: this process's place among the training processes (default: what torchrun
            set in the environment, else alone).

    Raises:
        FileExistsError: ``run`` already holds a run and ``resume`` is False.
        FileNotFoundError, ValueError: the configuration, the datasets or the run folder
            cannot be used (the message says why).
    """
    world = world or current_world()
    join(world, world.device())
    try:
        return open_trainer(config, run, resume, progress, world).fit()
    finally:
        if world.distributed:
            leave()


def open_trainer(config: TrainConfig | None, run: str | os.PathLike, resume: bool,
                 progress: Callable[[dict], None] | None, world: World) -> "Trainer":
    """The trainer of a run, ready to `Trainer.fit` (`train`'s arguments; the process group
    joined where ``world`` is distributed)."""
    folder = RunFolder(run)
    config, split = agreed_run(config, folder, resume, world)
    precision = choose_precision(config.precision, world.device())
    data = load_training_data(config.datasets, split)
    trainer = Trainer(config, folder, data, split, precision, progress, world)
    if resume:
        trainer.resume()
    return trainer


def agreed_run(config: TrainConfig | None, folder: RunFolder, resume: bool, world: World) -> tuple[TrainConfig, dict]:
    """`prepare_run` on rank 0, its outcome (or its refusal) on every rank."""
    if not world.distributed:
        return prepare_run(config, folder, resume)
    outcome: tuple | Exception | None = None
    if world.is_main:
        try:
            if config is not None and not resume:
                check_world(config, None, world)
            outcome = prepare_run(config, folder, resume)
            check_world(*outcome, world)
        except (FileExistsError, FileNotFoundError, ValueError) as exc:
            outcome = exc
    outcome = from_main(outcome, world)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def check_world(config: TrainConfig, split: dict | None, world: World) -> None:
    """Refuse a run the ranks cannot share evenly.

    Raises:
        ValueError: ``batch_size`` is no multiple of the number of processes, or there are
            fewer training series than processes.
    """
    if config.batch_size % world.size:
        raise ValueError(f"the batch ({config.batch_size} crops) must be a multiple of the number of processes "
                         f"({world.size}): each process draws an equal share of it.")
    if split is not None and len(split["train"]) < world.size:
        raise ValueError(f"{len(split['train'])} training series for {world.size} processes: each process needs "
                         "series of its own.")


def prepare_run(config: TrainConfig | None, folder: RunFolder, resume: bool) -> tuple[TrainConfig, dict]:
    """The run's configuration and split: read back when resuming, else checked, drawn and
    written into a folder that holds no run yet."""
    if resume:
        config = TrainConfig.from_dict(folder.read_config())
        config.validate()
        return config, folder.read_split()
    if config is None:
        raise ValueError("a new run needs a training configuration.")
    config.validate()
    if folder.holds_run():
        raise FileExistsError(f"{folder.path} already holds a run: resume it, or choose another folder.")
    split = split_datasets(config.datasets, config.validation_share, config.seed)
    folder.create()
    folder.write_config(config.to_dict())
    folder.write_split(split)
    return config, split


def label_prevalence(series: list[str], locations: dict[str, np.ndarray]) -> dict[str, float]:
    """The share of ``series`` with an aneurysm, and with one at each location (``locations``:
    the location indices of each positive series' aneurysms)."""
    count = max(len(series), 1)
    held = [set(np.asarray(locations.get(uid, ()), dtype=int).tolist()) for uid in series]
    shares = {name: round(sum(i in h for h in held) / count, 4) for i, name in enumerate(LOCATIONS)}
    return {**shares, ANEURYSM_PRESENT: round(sum(bool(h) for h in held) / count, 4)}


def modality_weights(modalities: list[str], balance: float) -> np.ndarray:
    """Each series' draw weight: (series of its modality)^-balance (`TrainConfig.modality_balance`)."""
    _, inverse, counts = np.unique(np.asarray(modalities, dtype=str), return_inverse=True, return_counts=True)
    return counts[inverse].astype(float) ** -balance


def bank_budget(device: torch.device) -> int:
    """Memory for the training volumes: half of what the GPU has free, 4 GiB on the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return 4 << 30


@dataclass
class TrainerState:
    """What ``last.pt`` keeps for ``--resume``: the network, optimiser, schedule, the last
    finished epoch and the best held-out series score so far (-1: none measured)."""

    model: AneurysmNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epoch: int = 0
    best_score: float = -1.0

    @classmethod
    def new(cls, config: TrainConfig, device: torch.device) -> "TrainerState":
        torch.manual_seed(config.seed)  # the run's initialisation, whatever ran before in the process
        model = AneurysmNet(config.model).to(device).to(memory_format=torch.channels_last_3d)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                      fused=device.type == "cuda")
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, pct_start=0.15,
                                                        total_steps=config.epochs * config.steps_per_epoch)
        return cls(model, optimizer, scheduler)

    def restore(self, checkpoint: dict) -> None:
        """Continue from a ``last.pt`` read by `pipeline.model.checkpoint.read_checkpoint`."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.epoch, self.best_score = int(checkpoint["epoch"]), float(checkpoint.get("best_score", -1.0))

    def resume_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch, "best_score": self.best_score}


class CheckpointPolicy:
    """Which epoch ``best.pt`` holds: the best held-out series score where one was measured
    (the metric itself; cube-level AUCs were a poor guide to it); before the first
    measurement, the latest epoch."""

    @staticmethod
    def is_best(state: TrainerState, score: float | None) -> bool:
        return (score is not None and score > state.best_score) or state.best_score < 0

    @staticmethod
    def record(state: TrainerState, score: float | None) -> None:
        if score is not None:
            state.best_score = score


class Trainer:
    """One run's loop: epochs of crops, validation, checkpoints, metrics and status."""

    def __init__(self, config: TrainConfig, folder: RunFolder, data: CubeData, split: dict,
                 precision: Precision, progress: Callable[[dict], None] | None = None, world: World = World()):
        self.config, self.folder, self.data, self.split = config, folder, data, split
        self.precision, self.progress, self.world = precision, progress, world
        self.bank = VolumeBank(precision.device, bank_budget(precision.device))
        self.paths = {uid: data.volumes[uid] for uid in shard(split["train"], world)}
        self.state = TrainerState.new(config, precision.device)
        self.dense = data_parallel(self.state.model, world, precision.device)
        self.rank_config = dataclasses.replace(config, batch_size=config.batch_size // world.size)
        self.policy = CheckpointPolicy()

    def resume(self) -> None:
        """Continue after the last finished epoch (from the start if none finished); the
        metrics of a dropped, unfinished epoch go."""
        if self.folder.last.is_file():
            self.state.restore(read_checkpoint(self.folder.last, self.precision.device))
        if self.world.is_main:
            self.folder.truncate_metrics(self.state.epoch)

    def fit(self) -> dict:
        """Train the remaining epochs; returns the last epoch record. ``status.json`` says
        running, then finished, stopped (STOP file or interrupt) or failed (with the error)."""
        status = {"state": RUNNING, "pid": os.getpid(), "epoch": self.state.epoch, "epochs": self.config.epochs,
                  "device": self.precision.device.type, "precision": self.precision.name, "started": time.time(),
                  "processes": self.world.size,
                  "vessel_labelled_series": self.vessel_labelled_series() if self.world.is_main else None}
        if self.world.is_main:
            self.folder.clear_stop()
            remove_leftovers(self.folder.path)  # checkpoints half-written by a killed run
            self.folder.write_status(status)
        barrier(self.world)  # no rank reads a STOP file before rank 0 cleared the last run's
        record: dict = {}
        try:
            for epoch in range(self.state.epoch + 1, self.config.epochs + 1):
                self.bank.hold({uid: self.paths[uid] for uid in
                                self.bank.working_set(self.paths, np.random.default_rng([self.config.seed, epoch, 1]))})
                record = self.train_epoch(epoch)
                if record is None or not self.finish_epoch(epoch, record):  # stopped: the epoch does not count
                    status["state"] = STOPPED
                    break
                status["epoch"] = epoch
                self._write_status(status)
            else:
                status["state"] = FINISHED
        except BaseException as exc:
            status.update(state=STOPPED if isinstance(exc, KeyboardInterrupt) else FAILED,
                          message=f"{type(exc).__name__}: {exc}")
            if error := storage_error(exc, f"writing to {self.folder.path}"):
                error = StorageError(f"{error}: the run stopped; it holds {self.state.epoch} finished epoch(s). "
                                     f"Free some space and continue it with 'python -m pipeline train --run "
                                     f"{self.folder.path} --resume'.")
                status["message"] = str(error)
                raise error from None
            raise
        finally:
            self._write_final_status(status)
        return record

    def vessel_labelled_series(self) -> int | None:
        """How many training series have vessel labels (None: the model has no vessel head)."""
        if not self.config.model.vessel_head:
            return None
        return sum(has_vessels(self.data.volumes[uid]) for uid in self.split["train"])

    def _write_status(self, status: dict) -> None:
        if self.world.is_main:
            self.folder.write_status(status)

    def _write_final_status(self, status: dict) -> None:
        try:
            self._write_status(status)
        except OSError:  # a full disk may refuse even this; readers then see the ended process as interrupted
            pass

    def train_epoch(self, epoch: int) -> dict | None:
        """``steps_per_epoch`` batches of crops from the series the bank holds, drawn from a
        generator seeded by the epoch (a resumed run draws the same ones), then cube
        validation; None if a STOP file interrupted it. Nothing waits for the device but
        the loss read every `STEP_LOG_EVERY` steps."""
        config, state, world = self.config, self.state, self.world
        rng = np.random.default_rng([config.seed, epoch, world.size, world.rank] if world.distributed
                                    else [config.seed, epoch])
        aneurysms = Aneurysms.of(self.bank.uids, self.data.aneurysms, self.data.aneurysm_locations)
        weights = modality_weights([self.data.modalities.get(uid, "") for uid in self.bank.uids],
                                   config.modality_balance)
        state.model.train()
        equivalents = config.crop ** 3 / config.model.cube ** 3  # 48-voxel cubes per crop, by voxels
        start, seen, losses = time.perf_counter(), 0, []
        for step in range(1, config.steps_per_epoch + 1):
            batch = draw_batch(self.bank, aneurysms, self.rank_config, rng, weights)
            batch = dataclasses.replace(batch, crops=batch.crops.contiguous(memory_format=torch.channels_last_3d))
            loss = heatmap_loss(self.dense, batch, config, self.precision)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            state.scheduler.step()
            seen += len(batch.crops) * world.size
            losses.append(loss.detach())
            if step % STEP_LOG_EVERY == 0:
                rate = seen / (time.perf_counter() - start)
                recent = mean_over_ranks(torch.stack(losses[-STEP_LOG_EVERY:]).mean(), world)
                self.log({"kind": "step", "epoch": epoch, "step": (epoch - 1) * config.steps_per_epoch + step,
                          "loss": float(recent),  # waits for the device
                          "learning_rate": state.scheduler.get_last_lr()[0],
                          "crops_per_second": rate, "cubes_per_second": rate * equivalents})
            if self.stop_requested(step):
                return None
        seconds = time.perf_counter() - start
        sync_buffers(state.model, world)
        measure = epoch % max(config.cube_validation_every, 1) == 0 or epoch == config.epochs
        evaluation = (evaluate_cubes(state.model, self.data, self.precision) if measure and world.is_main
                      else dict(NO_CUBE_VALIDATION))
        rate = seen / max(seconds, 1e-9)
        train_loss = mean_over_ranks(torch.stack(losses).mean(), world) if losses else None
        return {"kind": "epoch", "epoch": epoch, "train_loss": None if train_loss is None else float(train_loss),
                "learning_rate": state.scheduler.get_last_lr()[0], "crops_per_second": rate,
                "cubes_per_second": rate * equivalents, "seconds": seconds, **evaluation}

    def stop_requested(self, step: int) -> bool:
        """Whether the STOP file is there: checked every step alone; with other ranks, agreed
        every `STEP_LOG_EVERY` steps and at the epoch's end (rank 0 reads the file)."""
        if not self.world.distributed:
            return self.folder.stop_requested()
        if step % STEP_LOG_EVERY and step != self.config.steps_per_epoch:
            return False
        return any_rank(self.world.is_main and self.folder.stop_requested(), self.world, self.precision.device)

    def validate_series(self, trained: TrainedModel) -> dict | None:
        """The held-out series scored whole, each rank its shard, the RSNA metric on all of
        them; None when a STOP file came during it (rank 0 reads it, between two series)."""
        validation, world = self.split["validation"], self.world
        stop = self.folder.stop_requested if world.is_main else (lambda: False)
        shares = gathered(predict_held_out(trained, self.data, shard(validation, world), self.precision, stop), world)
        if any(share is None for share in shares):
            return None
        return score_series(self.data, validation, {uid: p for share in shares for uid, p in share.items()})

    def finish_epoch(self, epoch: int, record: dict) -> bool:
        """Series validation in the last epochs, ``best.pt`` by the policy, ``last.pt``, the
        epoch's metrics line; False (nothing saved) when a STOP file came during the series
        validation."""
        score, meta = None, self.meta(epoch, record["validation_auc"])
        if epoch > self.config.epochs - self.config.series_validation_epochs:
            series = self.validate_series(TrainedModel(self.state.model, meta))
            if series is None:
                return False
            record.update(series)
            score = record["series_score"]
            meta = dataclasses.replace(meta, series_validation_score=score)
        self.state.epoch = epoch
        if self.policy.is_best(self.state, score):
            self.policy.record(self.state, score)
            if self.world.is_main:
                save_checkpoint(self.folder.best, self.state.model, meta)
        if self.world.is_main:
            save_checkpoint(self.folder.last, self.state.model, meta, **self.state.resume_state())
        self.log(record)
        return True

    def meta(self, epoch: int, validation_auc: float | None) -> CheckpointMeta:
        return CheckpointMeta(self.config.model, self.data.preprocess, self.data.location_prior,
                              self.config.to_dict(), self.data.manifest_sha256, epoch, validation_auc,
                              label_prevalence=label_prevalence(self.split["train"], self.data.aneurysm_locations))

    def log(self, record: dict) -> None:
        if not self.world.is_main:
            return
        self.folder.append_metrics(record)
        if self.progress:
            self.progress(record)
