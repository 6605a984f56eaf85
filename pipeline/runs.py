"""The run folder: one owner for what training writes and evaluation, the dashboard and the
shipping tool read.

A run is a folder:

* ``config.json``: the training configuration (`pipeline.training.config.TrainConfig`);
* ``request.json``: the configuration the dashboard passed to ``train --config`` (runs it started);
* ``split.json``: which series train and which validate (split by series, never by cube);
* ``metrics.jsonl``: one JSON line every few steps (``"kind": "step"``) and one per epoch
  (``"kind": "epoch"``);
* ``status.json``: the run's state (`STATES`), its process, epoch, device and precision;
* ``STOP``: created by whoever wants the run to stop after its current step;
* ``last.pt`` and ``best.pt``: checkpoints (`pipeline.model.checkpoint`);
* ``evaluation.json``: what ``evaluate`` measured on the run's held-out series;
* ``test_sets/<name>.json``: what ``evaluate --test-set DIR`` measured on each other dataset,
  named after its phantom family and shift (`pipeline.phantoms.family_label`) or its folder;
* ``train.log``: the output of a run started from the dashboard.

No torch here: the dashboard imports this module on every page.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pipeline.files import alive, write_json, write_text

CONFIG = "config.json"
REQUEST = "request.json"  # the configuration a dashboard asked for, before the run wrote its own
SPLIT = "split.json"
METRICS = "metrics.jsonl"
STATUS = "status.json"
STOP_FILE = "STOP"
BEST = "best.pt"
LAST = "last.pt"
LOG = "train.log"
EVALUATION = "evaluation.json"
TEST_SETS = "test_sets"

# The states of a run. The first four are written by the training process; the last two are
# what a reader concludes: no status yet (the process is starting), or "running" written by a
# process that is gone (killed without a word: resume it).
RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"
STARTING, INTERRUPTED = "starting", "interrupted"
STATES = (STARTING, RUNNING, FINISHED, STOPPED, FAILED, INTERRUPTED)
SETTLED = (FINISHED, STOPPED)  # states whose best.pt no longer changes


class RunFolder:
    """A training run's folder and the files in it.

    Args:
        path: the folder (it need not exist yet).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def log(self) -> Path:
        return self.path / LOG

    def holds_run(self) -> bool:
        return (self.path / CONFIG).is_file()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    # configuration and split --------------------------------------------------------

    def write_config(self, values: dict) -> None:
        write_json(self.path / CONFIG, values)

    def read_config(self) -> dict:
        return self._read_json(CONFIG)

    def write_request(self, values: dict) -> Path:
        """The configuration a starting process is to read with ``--config``; its path."""
        self.create()
        write_json(self.path / REQUEST, values)
        return self.path / REQUEST

    def write_split(self, split: dict[str, list[str]]) -> None:
        write_json(self.path / SPLIT, split)

    def read_split(self) -> dict[str, list[str]]:
        """``{"train": [...], "validation": [...]}`` series UIDs."""
        split = self._read_json(SPLIT)
        if not isinstance(split, dict) or not all(isinstance(split.get(k), list) for k in ("train", "validation")):
            raise ValueError(f"{self.path / SPLIT} is not a run's split (train and validation series).")
        return split

    def _read_json(self, name: str):
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} holds no {name}: it is not a training run.")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path} is damaged (not JSON).") from None

    # metrics ------------------------------------------------------------------------

    def append_metrics(self, record: dict) -> None:
        with open(self.path / METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        """Every record of ``metrics.jsonl`` (a line being written is left out)."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_metrics(self, epoch: int) -> None:
        """Keep the records of the epochs up to ``epoch`` (what a resumed run continues after)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= epoch]
        write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in kept))

    # status and stop ----------------------------------------------------------------

    def write_status(self, status: dict) -> None:
        if status.get("state") not in STATES:
            raise ValueError(f"unknown run state {status.get('state')!r}")
        write_json(self.path / STATUS, {**status, "updated": time.time()})

    def read_status(self) -> dict:
        """The run's status; ``state`` is "starting" before the process wrote one and
        "interrupted" when the process that said "running" is gone."""
        try:
            value = json.loads((self.path / STATUS).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {"state": STARTING}
        if not isinstance(value, dict) or value.get("state") not in STATES:
            return {"state": STARTING}
        if value["state"] == RUNNING and not alive(value.get("pid")):
            value["state"] = INTERRUPTED
        return value

    def request_stop(self) -> None:
        """Ask the run to stop after its current step."""
        (self.path / STOP_FILE).touch()

    def stop_requested(self) -> bool:
        return (self.path / STOP_FILE).exists()

    def clear_stop(self) -> None:
        (self.path / STOP_FILE).unlink(missing_ok=True)

    # evaluation ---------------------------------------------------------------------

    def write_evaluation(self, result: dict) -> None:
        write_json(self.path / EVALUATION, result)

    def read_evaluation(self) -> dict | None:
        """What ``evaluate`` wrote on the held-out series, or None before any evaluation."""
        path = self.path / EVALUATION
        return json.loads(path.read_text()) if path.is_file() else None

    def write_test_evaluation(self, result: dict) -> Path:
        """Keep a test set's result under its ``test_set`` name (one file per name); its path."""
        path = self.path / TEST_SETS / f"{slug(result['test_set'])}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
        return path

    def read_test_evaluations(self) -> dict[str, dict]:
        """Every test set's result by name: the unshifted demo family first, then its shifts,
        then the other families and datasets, each group by name."""
        folder = self.path / TEST_SETS
        results = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                result = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(result, dict) and isinstance(result.get("test_set"), str):
                results[result["test_set"]] = result

        def order(name: str):
            return (name != "demo", not name.startswith("demo"), name)

        return {name: results[name] for name in sorted(results, key=order)}


IN_FAMILY, SHIFTED, EXTERNAL, OTHER = "in family", "shifted demo", "external family", "other data"


FROC_COLUMN = "FROC sensitivity at 1 FP per case"


def set_kind(name: str) -> str:
    """What a test set measures: in-family fit (the demo family), robustness to one controlled
    shift of it, or transfer (the external family, other data)."""
    if name == "demo":
        return IN_FAMILY
    if name.startswith("demo,"):
        return SHIFTED
    return EXTERNAL if name == "external" else OTHER


def score_rows(run: RunFolder) -> list[dict]:
    """One row per evaluation of the run (held-out series, then every test set), with the
    figures every display shows: never the in-family number alone. The negatives' mean
    Aneurysm Present is the calibrated one where the model was calibrated (``calibrated``)."""
    evaluations = {"held-out series": run.read_evaluation(), **run.read_test_evaluations()}
    rows = []
    for name, result in evaluations.items():
        if result is None:
            continue
        fit = result.get("calibration_fit") or {}  # held-out series: the calibration fitted on them
        calibrated = bool(fit.get("fitted")) if name == "held-out series" else bool(result.get("calibrated"))
        rows.append({"test set": name, "measures": IN_FAMILY if name == "held-out series" else set_kind(name),
                     "series": result.get("series"), "final score": result.get("final_score"),
                     "Aneurysm Present AUC": result.get("aneurysm_present_auc"),
                     "mean Aneurysm Present of negatives": fit.get("negatives_mean_after",
                                                                   result.get("negative_mean_present")),
                     "calibrated": calibrated,
                     FROC_COLUMN: (result.get("froc") or {}).get("sensitivity", {}).get("1"),
                     "per modality": _calibrated_parts(result.get("per_modality", {}), fit)})
    return rows


def _calibrated_parts(parts: dict, fit: dict) -> dict:
    """Per-modality figures with the negatives' calibrated mean where the fit gave one."""
    after = fit.get("negatives_mean_after_per_modality") or {}
    return {m: {**part, "negative_mean_present": after.get(m, part.get("negative_mean_present"))}
            for m, part in parts.items()}


def headline(rows: list[dict]) -> list[str]:
    """Short phrases for a model line: held-out and in-family test score, the external family's,
    and the worst shift."""
    def score(value) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    named = {row["test set"]: row for row in rows}
    parts = [f"{label} {score(named[name]['final score'])}" for name, label in
             (("held-out series", "held-out"), ("demo", "demo test set")) if name in named]
    if "external" in named:
        parts.append(f"external family {score(named['external']['final score'])}")
    shifted = [row for row in rows if row["measures"] == SHIFTED and row["final score"] is not None]
    if shifted:
        worst = min(shifted, key=lambda row: row["final score"])
        parts.append(f"worst shift {score(worst['final score'])} ({worst['test set'].removeprefix('demo, ')})")
    return parts


def slug(name: str) -> str:
    """A file or folder name for a test set's name."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "test-set"


def list_runs(root: str | os.PathLike) -> list[RunFolder]:
    """The runs in ``root``, newest first: folders with a config.json, and those a dashboard
    has just asked to start (a request.json, before the process wrote its configuration)."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = {}
    for folder in root.iterdir():
        written = [folder / name for name in (CONFIG, REQUEST) if (folder / name).is_file()]
        if written:
            runs[folder] = min(path.stat().st_mtime for path in written)
    return [RunFolder(folder) for folder in sorted(runs, key=runs.get, reverse=True)]

