"""Validation during training: cube-level scores, and the held-out series scored whole with
the inference path (what picks ``best.pt``)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.inference.predictor import Predictor
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS
from pipeline.metrics import roc_auc, rsna_score
from pipeline.model.checkpoint import TrainedModel
from pipeline.model.precision import Precision
from pipeline.preprocess.cache import load_processed
from pipeline.training.data import CubeData

NO_CUBE_VALIDATION = {"validation_loss": None, "validation_auc": None, "validation_location_accuracy": None}


def predict_held_out(trained: TrainedModel, data: CubeData, series: list[str], precision: Precision,
                   stop: Callable[[], bool] = lambda: False) -> dict[str, dict[str, float]] | None:
    """Series-level validation, first half: the inference path (`pipeline.inference.predictor`)
    on each of ``series``' cached processed volumes: SeriesInstanceUID -> the 14
    probabilities. None when ``stop`` said so between two series (a STOP file: the run stops
    within one series' time, not after all of them)."""
    trained.network.eval()
    predictor = Predictor(trained, device=precision.device)
    predictions = {}
    for uid in series:
        if uid not in data.volumes:
            continue
        if stop():
            return None
        probabilities = predictor.predict_processed(load_processed(data.volumes[uid])).probabilities
        predictions[uid] = {name: float(probabilities[name]) for name in LABEL_COLUMNS}
    return predictions


def score_series(data: CubeData, series: list[str], predictions: dict[str, dict[str, float]]) -> dict:
    """Series-level validation, second half: the RSNA metric of ``predictions`` against the series' localizers, over the series of
    ``series`` that were predicted. ``series_score`` is the final score, or the Aneurysm
    Present AUC where no location has both classes."""
    scored = [uid for uid in series if uid in predictions]
    truth = {name: np.zeros(len(scored)) for name in LABEL_COLUMNS}
    predicted = {name: np.array([predictions[uid][name] for uid in scored]) for name in LABEL_COLUMNS}
    for i, uid in enumerate(scored):
        for location in data.aneurysm_locations.get(uid, ()):
            truth[LOCATIONS[location]][i] = 1.0
        truth[ANEURYSM_PRESENT][i] = float(uid in data.aneurysms)
    result = rsna_score(truth, predicted)
    final, present = result["final_score"], result["aneurysm_present_auc"]
    return {"series_final_score": final, "series_aneurysm_present_auc": present,
            "series_location_auc_mean": result["location_auc_mean"],
            "series_score": final if final is not None else present}


@torch.no_grad()
def evaluate_cubes(model, data: CubeData, precision: Precision, batch_size: int = 64) -> dict:
    """Cube-level validation on every validation cube: loss, presence AUC, location accuracy
    on positive cubes (`NO_CUBE_VALIDATION` when there is no cube)."""
    if len(data.labels) == 0:
        return dict(NO_CUBE_VALIDATION)
    model.eval()
    scores, predicted_locations = [], []
    for batch in torch.arange(len(data.labels)).split(batch_size):
        cubes = data.cubes[batch].float().to(precision.device).contiguous(memory_format=torch.channels_last_3d)
        with precision.context():
            output = model(cubes)
        scores.append(output["presence"].float().cpu())
        predicted_locations.append(output["location"].float().argmax(1).cpu())
    scores, predicted_locations = torch.cat(scores), torch.cat(predicted_locations)
    positive = data.locations >= 0
    return {
        "validation_loss": float(F.binary_cross_entropy_with_logits(scores, data.labels)),
        "validation_auc": roc_auc(data.labels.numpy(), scores.numpy()),
        "validation_location_accuracy": float((predicted_locations[positive] == data.locations[positive]).float().mean())
        if positive.any() else None,
    }
