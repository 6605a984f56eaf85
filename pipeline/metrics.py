"""Metrics: ROC AUC (ties handled) and the RSNA challenge score, honest about undefined columns."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS


def roc_auc(labels, scores) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, average ranks for ties); None with one class only."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_curve(labels, scores) -> dict[str, list[float]]:
    """False- and true-positive rates at every threshold, for plotting."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.concatenate([[0], np.cumsum(labels[order])])
    false = np.concatenate([[0], np.cumsum(~labels[order])])
    return {"fpr": (false / max(false[-1], 1)).tolist(), "tpr": (hits / max(hits[-1], 1)).tolist()}


def rsna_score(truth: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict:
    """Per-column AUCs and the final score ½·(AUC of Aneurysm Present + mean of the location AUCs).

    A column with one class has no AUC: it is reported as None and left out of the mean
    of the locations; the final score is None when Aneurysm Present has no AUC or no
    location has one.
    """
    aucs = {name: roc_auc(truth[name], predicted[name]) for name in LABEL_COLUMNS}
    defined = [aucs[name] for name in LOCATIONS if aucs[name] is not None]
    location_mean = float(np.mean(defined)) if defined else None
    present = aucs[ANEURYSM_PRESENT]
    final = 0.5 * (present + location_mean) if present is not None and location_mean is not None else None
    return {
        "aucs": aucs,
        "location_auc_mean": location_mean,
        "locations_defined": len(defined),
        "aneurysm_present_auc": present,
        "final_score": final,
    }
