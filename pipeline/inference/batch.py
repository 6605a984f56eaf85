"""Scoring a whole data folder into the challenge's submission table, resumably.

    python -m pipeline predict-all DATA --out predictions.csv [--model M] [--workers N]

One row per series of ``DATA/series/`` (every sub-folder of ``DATA`` when it has no
``series/``): ``SeriesInstanceUID`` and the 14 RSNA columns in their order (`SUBMISSION_COLUMNS`).
The table is rewritten atomically every `FLUSH_ROWS` series or `FLUSH_SECONDS` and at the end, so a killed run
leaves the last complete table; run again, it skips the series already in it (never a
duplicate, never a missing row). A series that cannot be read or scored gets a row all the
same, the documented fallback: the share of the model's training series with each label
(`CheckpointMeta.label_prevalence`; 0.5 where the checkpoint does not record it), and its
reason goes to the side table ``<out stem>.failures.csv``. A failing disk stops the batch
(the series done so far are kept).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path
from typing import Callable

from pipeline.errors import IngestError
from pipeline.files import storage_error, write_text
from pipeline.io.rsna import is_uid
from pipeline.labels import LABEL_COLUMNS
from pipeline.executor import executor, say

SUBMISSION_COLUMNS = ("SeriesInstanceUID", *LABEL_COLUMNS)
FAILURE_COLUMNS = ("SeriesInstanceUID", "reason")
FLUSH_ROWS = 25  # the table is rewritten after this many series, or
FLUSH_SECONDS = 2.0  # this long, whichever comes first (the whole RSNA table: under 1 MB)
FALLBACK = 0.5  # a label's fallback when the checkpoint records no training prevalence


def series_folders(data: str | os.PathLike) -> dict[str, Path]:
    """The series of a data folder by SeriesInstanceUID: the sub-folders of ``series/`` (or
    of the folder itself) whose name is a DICOM UID, sorted.

    Raises:
        FileNotFoundError: ``data`` is not a folder.
    """
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data} is not a folder.")
    root = data / "series" if (data / "series").is_dir() else data
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and is_uid(p.name)}


def failures_path(out: Path) -> Path:
    """The side table of the series that fell back, beside ``out``."""
    return out.with_name(f"{out.stem}.failures.csv")


def read_table(path: Path, columns: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """The rows of a table this module wrote, by SeriesInstanceUID (empty if there is none).

    Raises:
        ValueError: the file is not such a table (other columns, a bad row): nothing is
            overwritten, the message says which file and row.
    """
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != columns:
            raise ValueError(f"{path} exists and is not a table of predict-all (columns {reader.fieldnames}): "
                             "choose another --out or remove it.")
        rows = {}
        for number, row in enumerate(reader, start=2):
            uid = row["SeriesInstanceUID"]
            if not is_uid(uid) or uid in rows or None in row.values():
                raise ValueError(f"{path}, row {number}: not a row predict-all writes; choose another --out.")
            rows[uid] = row
    return rows


def _table(rows: dict[str, dict], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[uid] for uid in sorted(rows))
    return buffer.getvalue()


def _flush(out: Path, rows: dict, failures: dict) -> None:
    write_text(out, _table(rows, SUBMISSION_COLUMNS))
    write_text(failures_path(out), _table(failures, FAILURE_COLUMNS))


def fallback_row(model: str | None) -> dict[str, float]:
    """The documented fallback: the model's training prevalence of each label."""
    from pipeline.inference.predictor import cached_predictor

    prevalence = cached_predictor(model).meta.label_prevalence or {}
    return {name: float(prevalence.get(name, FALLBACK)) for name in LABEL_COLUMNS}


def score_series(task: tuple[str, str, str | None]) -> tuple[str, dict[str, float] | None, str]:
    """(uid, the 14 probabilities or None, why not) of one series; runs in a worker.

    Raises:
        StorageError: the machine could not read the series' files.
    """
    from pipeline.inference.predictor import cached_predictor

    uid, folder, model = task
    try:
        prediction = cached_predictor(model).predict(folder, series_uid=uid)
        return uid, {name: prediction.probabilities[name] for name in LABEL_COLUMNS}, ""
    except IngestError as exc:
        return uid, None, str(exc)
    except Exception as exc:  # a broken series never stops the batch; a broken disk does
        if error := storage_error(exc, f"reading series {uid}"):
            raise error from None
        return uid, None, f"unexpected error: {type(exc).__name__}: {exc}"


def predict_all(data: str | os.PathLike, out: str | os.PathLike, model: str | os.PathLike | None = None,
                workers: int = 1, progress: Callable[[int, int, str], None] | None = None,
                scheduler: str | None = None) -> dict:
    """Score every series of ``data`` not yet in ``out``; returns counts and seconds.

    Args:
        data: a data folder (RSNA layout, or a folder of series folders).
        out: the submission table (CSV); an existing one is continued.
        model: a checkpoint (default: the shipped model).
        workers: processes, each with its own copy of the model (1: this process).
        progress: called with (series done, series to do, uid) after each series.
        scheduler: a Dask scheduler (`pipeline.executor`); default this machine's pool.

    Raises:
        FileNotFoundError: no data folder, or no model.
        ValueError: ``out`` exists and is not a predict-all table; the model cannot be used.
        StorageError: a failing disk (what was done is kept: run again to continue).
    """
    start = time.perf_counter()
    out = Path(out)
    model = None if model is None else str(model)
    series = series_folders(data)
    rows, failures = read_table(out, SUBMISSION_COLUMNS), read_table(failures_path(out), FAILURE_COLUMNS)
    failures = {uid: row for uid, row in failures.items() if uid in rows}  # a failure whose row was never kept
    fallback = fallback_row(model)  # loads the model here first: a bad checkpoint fails before any work
    todo = [(uid, str(folder), model) for uid, folder in series.items() if uid not in rows]
    done, unsaved, saved = 0, 0, time.monotonic()

    def keep(uid: str, probabilities: dict | None, reason: str) -> None:
        nonlocal done, unsaved, saved
        if probabilities is None:
            failures[uid] = {"SeriesInstanceUID": uid, "reason": reason}
            probabilities = fallback
        rows[uid] = {"SeriesInstanceUID": uid, **{name: _number(probabilities[name]) for name in LABEL_COLUMNS}}
        done, unsaved = done + 1, unsaved + 1
        if unsaved >= FLUSH_ROWS or time.monotonic() - saved >= FLUSH_SECONDS:
            _flush(out, rows, failures)
            unsaved, saved = 0, time.monotonic()
        if progress:
            progress(done, len(todo), uid)

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for result in _results(todo, workers, scheduler):
            keep(*result)
        _flush(out, rows, failures)
    except BaseException:  # an interrupt, a failing disk: keep what was done
        _save_what_can_be(out, rows, failures)
        raise
    return {"series": len(series), "scored": done - sum(uid in failures for uid, _, _ in todo),
            "fell_back": sum(uid in failures for uid, _, _ in todo), "already_done": len(series) - len(todo),
            "seconds": round(time.perf_counter() - start, 2)}


def _save_what_can_be(out: Path, rows: dict, failures: dict) -> None:
    try:
        _flush(out, rows, failures)
    except OSError:  # a full disk may refuse even this: the last complete table stays
        pass


def _number(value: float) -> str:
    value = float(value)
    return repr(round(value, 6)) if math.isfinite(value) else repr(FALLBACK)


def _results(tasks: list[tuple], workers: int, scheduler: str | None):
    """Each task's result as it finishes (memory stays bounded: results are consumed as they
    come), on this machine's pool or a Dask cluster (`pipeline.executor`)."""
    with executor(scheduler, workers, announce=say) as run:
        for _, result in run(score_series, tasks):
            yield result
