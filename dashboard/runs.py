"""Training runs seen from the dashboard: start, follow, stop and evaluate them (child processes).

The run folder's files and states belong to `pipeline.runs`; this module only starts the
``python -m pipeline`` processes that write them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pandas as pd

from pipeline.data import PROJECT_ROOT
from pipeline.dataset.store import DATASET_FILES, dataset_files
from pipeline.model.config import ModelConfig
from pipeline.runs import EXTERNAL, FROC_COLUMN, OTHER, RUNNING, SETTLED, STARTING, RunFolder, score_rows
from dashboard.text import duration
from pipeline.training.config import TrainConfig

LIVE = (RUNNING, STARTING)  # states in which a run's page view refreshes itself


def run_name(requested: str) -> str:
    """A folder name from what the visitor typed (letters, digits, - and _), else the time."""
    return re.sub(r"[^A-Za-z0-9_-]", "", requested) or time.strftime("run-%Y%m%d-%H%M%S")


def available_datasets(datasets: Path) -> list[str]:
    """The modalities with a built dataset in ``datasets``."""
    return [m for m, name in DATASET_FILES.items() if (datasets / name).is_file()]


def training_config(datasets: Path, modalities: list[str], epochs: int, width: int, blocks: int,
                    first_stage: bool, vessel_head: bool = False,
                    steps_per_epoch: int = TrainConfig().steps_per_epoch) -> TrainConfig:
    """What the page's form asks for; every other option keeps `TrainConfig`'s default."""
    model = ModelConfig(width=width, blocks=blocks, first_stage=first_stage, vessel_head=vessel_head)
    return TrainConfig(datasets=dataset_files([datasets], modalities), epochs=epochs, steps_per_epoch=steps_per_epoch,
                       model=model)


def measured_speed(runs: list[RunFolder]) -> tuple[str, float] | None:
    """The latest run that measured its speed on this machine and its crops per second."""
    for run in runs:
        rates = [r["crops_per_second"] for r in run.read_metrics() if r["kind"] == "epoch" and r.get("crops_per_second")]
        if rates:
            return run.name, float(np.median(rates))
    return None


def time_estimate(config: TrainConfig, speed: tuple[str, float] | None) -> str:
    """How long a run of ``config`` takes at the speed the last run here measured (its crops
    only: the held-out series scoring of the last epochs comes on top)."""
    crops = config.epochs * config.steps_per_epoch * config.batch_size
    if speed is None:
        return f"{crops:,} crops of {config.crop}³ voxels; no run here has measured this machine's speed yet."
    name, rate = speed
    return (f"{crops:,} crops of {config.crop}³ voxels: about {duration(crops / rate)} at the {rate:.0f} crops/s "
            f"run {name} measured here, plus the scoring of the held-out series in the last "
            f"{min(config.series_validation_epochs, config.epochs)} epoch(s) (a model of another size trains at "
            "another speed).")


def best_validation(epochs: list[dict]) -> tuple[str, float | None]:
    """The best held-out series score of a run's epochs, or its best cube AUC before any."""
    series = [r["series_score"] for r in epochs if r.get("series_score") is not None]
    if series:
        return "Best held-out series score", max(series)
    return "Best cube AUC", max((r["validation_auc"] for r in epochs if r["validation_auc"] is not None), default=None)


def latest_rate(records: list[dict]) -> float | None:
    """The last measured training throughput (48-voxel cube equivalents per second)."""
    return next((r["cubes_per_second"] for r in reversed(records) if "cubes_per_second" in r), None)


def where_trained(status: dict) -> str:
    """How a run trains: its processes, device and precision (``status.json``)."""
    processes = status.get("processes", 1)
    device = {"cpu": "CPU", "cuda": "GPU"}.get(status.get("device"), status.get("device") or "?")
    share = f"{processes} data-parallel processes" if processes > 1 else "1 process"
    return f"{share} on {device}{'s' if processes > 1 and device == 'GPU' else ''}, {status.get('precision', '?')}"


def can_evaluate(run: RunFolder) -> bool:
    """Whether the run's best.pt no longer changes (it may be evaluated)."""
    return run.read_status().get("state") in SETTLED


def comparison_rows(runs: list[RunFolder]) -> list[dict]:
    """One row per run: state, processes that trained it, epochs done, best validation,
    evaluated final score."""
    rows = []
    for run in runs:
        epochs, status = [r for r in run.read_metrics() if r["kind"] == "epoch"], run.read_status()
        rows.append({"Run": run.name, "State": status.get("state"), "Processes": status.get("processes", 1),
                     "Epochs": len(epochs),
                     "Best validation": best_validation(epochs)[1],
                     "Final score": (run.read_evaluation() or {}).get("final_score")})
    return rows


def resume(run: RunFolder) -> None:
    """``python -m pipeline train --resume`` on an interrupted run, detached from the page."""
    _train(run, ["--resume"])


def start(run: RunFolder, config: TrainConfig) -> None:
    """``python -m pipeline train --config FILE`` detached from the page: it goes on if the
    page closes. The configuration crosses the process boundary whole, as JSON."""
    _train(run, ["--config", str(run.write_request(config.to_dict()))])


def _train(run: RunFolder, arguments: list[str]) -> None:
    with open(run.log, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "pipeline", "train", "--run", str(run.path), *arguments],
                         cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def evaluate(run: RunFolder, data_root: Path) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "pipeline", "evaluate", "--run", str(run.path),
                             "--data", str(data_root)], cwd=PROJECT_ROOT, capture_output=True, text=True)
    lines = (result.stdout or result.stderr).strip().splitlines()
    if len(lines) > 1 and result.returncode == 0:  # the score, and the calibration fitted on the same series
        return 0, f"{lines[0]} {lines[-1]}"
    return result.returncode, lines[-1] if lines else ""


SCORE_COLUMNS = ("final score", "Aneurysm Present AUC", "mean Aneurysm Present of negatives", FROC_COLUMN)


def family_table(run: RunFolder) -> tuple[pd.DataFrame, bool]:
    """The run's evaluations, one row per test set; and whether any measures transfer
    (the external family or other data), not only in-family fit."""
    rows = score_rows(run)
    table = pd.DataFrame([{k: v for k, v in row.items() if k != "per modality"} for row in rows])
    return table, any(row["measures"] in (EXTERNAL, OTHER) for row in rows)


def modality_table(run: RunFolder) -> pd.DataFrame:
    """Each evaluation's figures per modality."""
    keys = {"series": "series", "final score": "final_score", "Aneurysm Present AUC": "aneurysm_present_auc",
            "mean Aneurysm Present of negatives": "negative_mean_present"}
    return pd.DataFrame([{"test set": row["test set"], "modality": modality,
                          **{column: part.get(key) for column, key in keys.items()},
                          FROC_COLUMN: (part.get("froc_sensitivity") or {}).get("1")}
                         for row in score_rows(run) for modality, part in row["per modality"].items()])
