"""Evaluation on held-out series: the RSNA metric from whole-series inference, written into the run.

``python -m pipeline evaluate --run RUN [--data DIR]`` scores every validation series of the
run's split with the inference path (`pipeline.inference.predictor`) using the run's ``best.pt``, and
writes ``evaluation.json``: per-column AUCs, the final score (columns with one class are
undefined, not 0.5), ROC curve data of ``Aneurysm Present``, a calibration table, the
cube-level validation AUC of the best epoch, and each series' probabilities.

With ``--test-set DIR`` every series of another dataset (one the run never saw, e.g. a demo
generated with another seed) is scored instead and the result goes to ``test_evaluation.json``:
a larger, independent check than the run's own held-out share.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import IngestError
from pipeline.inference.predictor import Predictor
from pipeline.io.rsna import read_train
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS
from pipeline.metrics import roc_curve, rsna_score
from pipeline.runs import RunFolder


def calibration_table(labels: np.ndarray, scores: np.ndarray, bins: int = 5) -> list[dict]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (scores >= low) & ((scores < high) | (high == 1.0))
        table.append({"bin": [round(low, 2), round(high, 2)], "series": int(inside.sum()),
                      "mean_predicted": float(scores[inside].mean()) if inside.any() else None,
                      "observed_rate": float(labels[inside].mean()) if inside.any() else None})
    return table


def evaluate_run(run: str | os.PathLike, data_root: str | os.PathLike, flip: bool = True,
                 progress: Callable[[int, int], None] | None = None, test_set: bool = False) -> dict:
    """Score the run's held-out series of ``data_root``; with ``test_set``, every series of
    ``data_root`` instead (refused if the run trained on any of them)."""
    folder, data_root = RunFolder(run), Path(data_root)
    split = folder.read_split()
    table = read_train(data_root).set_index("SeriesInstanceUID")
    if test_set:
        seen = sorted(set(split["train"]) & set(table.index))
        if seen:
            raise ValueError(f"{data_root} holds {len(seen)} series the run trained on (e.g. {seen[0]}): "
                             "a test set must hold none of them (it should be series the run never saw).")
        series = list(table.index)
    else:
        series = [uid for uid in split["validation"] if uid in table.index]
    predictor = Predictor(folder.best, flip=flip)
    rows, skipped, start = [], {}, time.perf_counter()
    for done, uid in enumerate(series, start=1):
        try:
            prediction = predictor.predict(data_root / "series" / uid)
            rows.append({"series_uid": uid, "modality": str(table.loc[uid, "Modality"]),
                         **{name: prediction.probabilities[name] for name in LABEL_COLUMNS},
                         "seconds": prediction.timings["total"]})
        except IngestError as exc:
            skipped[uid] = str(exc)
        if progress:
            progress(done, len(series))
    truth = {name: np.array([table.loc[r["series_uid"], name] for r in rows], dtype=float) for name in LABEL_COLUMNS}
    predicted = {name: np.array([r[name] for r in rows], dtype=float) for name in LABEL_COLUMNS}
    score = rsna_score(truth, predicted)
    result = {
        **score,
        "series": len(rows), "skipped": skipped, "flip": flip,
        "series_set": f"every series of {data_root}" if test_set else "the run's held-out series",
        "roc": roc_curve(truth[ANEURYSM_PRESENT], predicted[ANEURYSM_PRESENT]),
        "calibration": calibration_table(truth[ANEURYSM_PRESENT], predicted[ANEURYSM_PRESENT]),
        "cube_validation_auc": predictor.meta.validation_auc, "best_epoch": predictor.meta.epoch,
        "predictions": rows, "seconds": round(time.perf_counter() - start, 2),
    }
    folder.write_evaluation(result, test_set)
    return result
