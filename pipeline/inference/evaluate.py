"""Evaluation on held-out series: the RSNA metric from whole-series inference, written into the run.

``python -m pipeline evaluate --run RUN [--data DIR]`` scores every validation series of the
run's split with the inference path (`pipeline.inference.predictor`) using the run's ``best.pt``, and
writes ``evaluation.json``: per-column AUCs, the final score (columns with one class are
undefined, not 0.5), ROC curve data of ``Aneurysm Present``, a calibration table, the
cube-level validation AUC of the best epoch, each series' probabilities, and the FROC of
the detection challenges (sensitivity at 0.25, 0.5, 1 and 2 false positives per case; a
candidate finds an aneurysm within its radius of the localizer).

Scoring the held-out series also calibrates the model: Platt scaling of their raw
``Aneurysm Present`` (`pipeline.model.calibration`) is stored in ``best.pt`` and reported
under ``calibration_fit`` (the held-out figures themselves are the raw network's: they are
the fit set). Test sets are then scored with the calibrated model.

With ``--test-set DIR`` every series of another dataset (one the run never saw) is scored
instead and the result goes to ``test_sets/<name>.json`` of the run, named after the
dataset's phantom family and shift (``demo``, ``demo, calibre x0.7``, ``external``) or its
folder: the demo family with another seed measures in-family fit; shifted demo data and the
external family (`pipeline.external`) measure how far the model transfers. Every result also
holds the figures per modality and the mean Aneurysm Present of the negative series.
The documented set of test sets, and scoring a run on all of them, is `pipeline.validation`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.errors import IngestError
from pipeline.executor import executor, say
from pipeline.inference.predictor import Predictor, cached_predictor
from pipeline.io.rsna import read_localizers, read_train
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS
from pipeline.metrics import froc, roc_auc, roc_curve, rsna_score
from pipeline.model.calibration import fit_calibration
from pipeline.model.checkpoint import update_meta
from pipeline.phantoms import aneurysm_diameters, family_label, read_family
from pipeline.runs import RunFolder

#: How near a candidate must be to a localizer to find its aneurysm when the aneurysm's size
#: is unknown (RSNA localizers are points without a size): the radius of a 10 mm aneurysm, a
#: documented choice.
DEFAULT_HIT_RADIUS_MM = 5.0


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
                 progress: Callable[[int, int], None] | None = None, test_set: bool = False,
                 scheduler: str | None = None, workers: int = 1) -> dict:
    """Score the run's held-out series of ``data_root``; with ``test_set``, every series of
    ``data_root`` instead (refused if the run trained on any of them). The series are scored
    in this process, or on ``workers`` processes or a Dask ``scheduler`` (`pipeline.executor`;
    each worker loads the model once)."""
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
    predictor = cached_predictor(folder.best, flip=flip, calibrated=test_set)  # held-out series: the calibration's fit set
    localizers, _ = read_localizers(data_root)
    diameters = aneurysm_diameters(data_root)
    tasks = [SeriesTask(uid, str(data_root / "series" / uid), str(folder.best), flip, test_set,
                        str(table.loc[uid, "Modality"]), localizers.get(uid, []), diameters.get(uid, {}))
             for uid in series]
    found, skipped, start = {}, {}, time.perf_counter()
    with executor(scheduler, workers, announce=say) as run_tasks:
        for done, (index, (row, reason)) in enumerate(run_tasks(evaluation_row, tasks), start=1):
            if row is None:
                skipped[series[index]] = reason
            else:
                found[index] = row
            if progress:
                progress(done, len(series))
    rows = [found[index] for index in sorted(found)]  # the series' order, however the workers finished
    result = {**scored_figures(rows, table), "skipped": skipped, "flip": flip,
              "series_set": f"every series of {data_root}" if test_set else "the run's held-out series",
              "cube_validation_auc": predictor.meta.validation_auc, "best_epoch": predictor.meta.epoch,
              "seconds": round(time.perf_counter() - start, 2)}
    family = read_family(data_root)
    if test_set:
        result.update(test_set=family_label(family, data_root), family=family, calibrated=bool(predictor.calibration))
        folder.write_test_evaluation(result)
    else:
        labels = np.array([table.loc[r["series_uid"], ANEURYSM_PRESENT] for r in rows], dtype=float)
        raw = np.array([r[ANEURYSM_PRESENT] for r in rows], dtype=float)
        result["calibration_fit"] = calibrate_checkpoint(folder.best, labels, raw,
                                                         np.array([r["modality"] for r in rows]))
        folder.write_evaluation(result)
    return result


def evaluate_nifti_set(run: str | os.PathLike, root: str | os.PathLike, layout: str = "auto",
                       modality: str = "MRA", flip: bool = True,
                       progress: Callable[[int, int], None] | None = None) -> dict:
    """Score every case of a NIfTI dataset in a public layout (`pipeline.io.nifti_datasets`:
    ADAM-style or BIDS-style) with the run's calibrated model, into ``test_sets/<name>.json``.

    These datasets say where each aneurysm is, not at which of the 13 locations: their
    location AUCs, and so the RSNA final score, are undefined; the Aneurysm Present AUC and
    the FROC (a candidate within the aneurysm's radius of its centre finds it) are the figures.

    Raises:
        pipeline.errors.IngestError: no case of the layout, or an unreadable reference.
    """
    from pipeline.io.nifti_datasets import find_cases

    folder, root = RunFolder(run), Path(root)
    cases = find_cases(root, layout, modality)
    predictor = Predictor(folder.best, flip=flip)
    rows, skipped, start = [], {}, time.perf_counter()
    for done, case in enumerate(cases, start=1):
        try:
            prediction = predictor.predict(case.image, modality=case.modality)
            rows.append({"series_uid": case.case_id, "modality": case.modality,
                         **{name: prediction.probabilities[name] for name in LABEL_COLUMNS},
                         "seconds": prediction.timings.get("total", 0.0),
                         "candidates": [(c["position_mm"], c["probability"]) for c in prediction.candidates],
                         "aneurysms": [([float(v) for v in centre], radius) for centre, radius in case.aneurysms]})
        except IngestError as exc:
            skipped[case.case_id] = str(exc)
        if progress:
            progress(done, len(cases))
    truth = pd.DataFrame({name: 0 for name in LABEL_COLUMNS}, index=[c.case_id for c in cases])
    truth[ANEURYSM_PRESENT] = [int(bool(c.aneurysms)) for c in cases]
    name = f"{root.name} (NIfTI)"
    result = {**scored_figures(rows, truth), "skipped": skipped, "flip": flip,
              "series_set": f"every case of {root}", "cube_validation_auc": predictor.meta.validation_auc,
              "best_epoch": predictor.meta.epoch, "seconds": round(time.perf_counter() - start, 2),
              "test_set": name, "family": {"family": name, "layout": layout, "modality": modality},
              "calibrated": bool(predictor.calibration),
              "references": {c.case_id: [str(p.relative_to(root)) for p in c.references] for c in cases}}
    folder.write_test_evaluation(result)
    return result


@dataclass(frozen=True)
class SeriesTask:
    """One series to score, everything a worker needs (plain values: it may cross to Dask)."""

    uid: str
    folder: str
    checkpoint: str
    flip: bool
    calibrated: bool
    modality: str
    localizers: list
    diameters: dict


def evaluation_row(task: SeriesTask) -> tuple[dict | None, str]:
    """(`prediction_row`, "") of one series, or (None, why) when it cannot be read; runs in a
    worker."""
    try:
        prediction = cached_predictor(task.checkpoint, task.flip, task.calibrated).predict(task.folder)
    except IngestError as exc:
        return None, str(exc)
    return prediction_row(prediction, task.uid, task.modality, task.localizers, task.diameters), ""


def prediction_row(prediction, uid: str, modality: str, localizers: list, diameters: dict) -> dict:
    """What an evaluation keeps of one series' prediction: its probabilities, candidates and
    aneurysms (for the FROC)."""
    return {"series_uid": uid, "modality": modality,
            **{name: prediction.probabilities[name] for name in LABEL_COLUMNS},
            "seconds": prediction.timings.get("total", 0.0),
            "candidates": [(c["position_mm"], c["probability"]) for c in prediction.candidates],
            "aneurysms": aneurysm_spheres(prediction.volume, localizers, diameters)}


def scored_figures(rows: list[dict], table) -> dict:
    """The figures of an evaluation from its rows (`prediction_row`) and the train.csv table
    (indexed by SeriesInstanceUID): the RSNA score, summaries, FROC, per modality, ROC,
    calibration table and each series' probabilities."""
    truth = {name: np.array([table.loc[r["series_uid"], name] for r in rows], dtype=float) for name in LABEL_COLUMNS}
    predicted = {name: np.array([r[name] for r in rows], dtype=float) for name in LABEL_COLUMNS}
    return {
        **rsna_score(truth, predicted),
        "series": len(rows),
        **summary_figures(truth, predicted),
        "froc": froc_figures(rows),
        "per_modality": per_modality(rows, truth, predicted),
        "roc": roc_curve(truth[ANEURYSM_PRESENT], predicted[ANEURYSM_PRESENT]),
        "calibration": calibration_table(truth[ANEURYSM_PRESENT], predicted[ANEURYSM_PRESENT]),
        "predictions": [{k: v for k, v in r.items() if k not in ("candidates", "aneurysms")} for r in rows],
    }


def calibrate_checkpoint(checkpoint: Path, labels: np.ndarray, raw: np.ndarray,
                         modalities: np.ndarray | None = None) -> dict:
    """Fit the calibration on held-out series' raw Aneurysm Present and store it in
    ``checkpoint``; what it does to them, overall and per modality (or why none could be
    fitted, the checkpoint then left as it was)."""
    try:
        calibration = fit_calibration(labels, raw)
    except ValueError as exc:
        return {"fitted": False, "reason": str(exc)}
    update_meta(checkpoint, calibration=calibration)
    calibrated = calibration.apply(raw)
    negatives = labels == 0
    modalities = np.full(len(labels), "") if modalities is None else np.asarray(modalities)
    per_modality = {str(m): round(float(calibrated[negatives & (modalities == m)].mean()), 4)
                    for m in dict.fromkeys(modalities[negatives].tolist()) if m}
    return {"fitted": True, **calibration.to_dict(),
            "negatives_mean_before": round(float(raw[negatives].mean()), 4),
            "negatives_mean_after": round(float(calibrated[negatives].mean()), 4),
            "positives_mean_after": round(float(calibrated[~negatives].mean()), 4),
            "negatives_mean_after_per_modality": per_modality,
            "table_after": calibration_table(labels, calibrated)}


def aneurysm_spheres(volume, localizers: list, diameters: dict[str, list[float]]) -> list[tuple[list[float], float]]:
    """(centre mm, hit radius mm) of each localizer of a series: half the aneurysm's diameter
    where the phantom manifest records it, else `DEFAULT_HIT_RADIUS_MM`."""
    spheres, used = [], {}
    for localizer in localizers:
        try:
            centre = volume.voxel_to_patient(volume.source_to_voxel(localizer.sop_uid, localizer.x, localizer.y,
                                                                    localizer.frame))
        except IngestError:  # a localizer on an image the series does not hold
            continue
        known = diameters.get(localizer.location, [])
        index = used[localizer.location] = used.get(localizer.location, -1) + 1
        radius = known[index] / 2 if index < len(known) else DEFAULT_HIT_RADIUS_MM
        spheres.append(([float(v) for v in centre], float(radius)))
    return spheres


def froc_figures(rows: list[dict]) -> dict:
    """`pipeline.metrics.froc` of the series' candidates against their aneurysms."""
    result = froc([r["candidates"] for r in rows], [r["aneurysms"] for r in rows])
    return {**result, "hit_radius": f"half the aneurysm's diameter where known, else {DEFAULT_HIT_RADIUS_MM:g} mm"}


def summary_figures(truth: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict:
    """What a single AUC hides: how high the negatives score, how low the positives."""
    present, scores = truth[ANEURYSM_PRESENT].astype(bool), predicted[ANEURYSM_PRESENT]
    return {"positives": int(present.sum()), "negatives": int((~present).sum()),
            "negative_mean_present": float(scores[~present].mean()) if (~present).any() else None,
            "positive_mean_present": float(scores[present].mean()) if present.any() else None}


def per_modality(rows: list[dict], truth: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict[str, dict]:
    """The final score, Aneurysm Present AUC and summary figures of each modality's series."""
    modalities = np.array([r["modality"] for r in rows])
    table = {}
    for modality in dict.fromkeys(modalities.tolist()):
        keep = modalities == modality
        part_truth = {k: v[keep] for k, v in truth.items()}
        part_predicted = {k: v[keep] for k, v in predicted.items()}
        score = rsna_score(part_truth, part_predicted)
        table[modality] = {"series": int(keep.sum()), "final_score": score["final_score"],
                           "aneurysm_present_auc": roc_auc(part_truth[ANEURYSM_PRESENT], part_predicted[ANEURYSM_PRESENT]),
                           "location_auc_mean": score["location_auc_mean"],
                           **summary_figures(part_truth, part_predicted),
                           "froc_sensitivity": froc_figures([r for r, k in zip(rows, keep) if k])["sensitivity"]}
    return table
