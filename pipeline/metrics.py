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


#: False positives per case at which FROC sensitivities are reported (those of ADAM and the
#: other aneurysm-detection challenges).
FROC_RATES = (0.25, 0.5, 1.0, 2.0)


def froc(candidates: list[list[tuple[np.ndarray, float]]], aneurysms: list[list[tuple[np.ndarray, float]]],
         rates=FROC_RATES) -> dict:
    """Free-response ROC over cases: the share of aneurysms found against false positives per case.

    Args:
        candidates: per case, ``(position_mm, score)`` of each candidate the detector gave.
        aneurysms: per case, ``(centre_mm, radius_mm)`` of each aneurysm.
        rates: false positives per case at which to read the sensitivity.

    A candidate within an aneurysm's radius of its centre hits it; an aneurysm is found at a
    threshold when a candidate at or above it hits it; a candidate that hits none is a
    false positive (a second hit on a found aneurysm is neither). Returns the sensitivity
    at each rate (the best reachable with no more false positives per case; None without
    aneurysms), the number of cases and aneurysms, and the curve.
    """
    events, total = [], sum(len(a) for a in aneurysms)  # (score, aneurysm id hit or None)
    for case, (found, truth) in enumerate(zip(candidates, aneurysms)):
        for position, score in found:
            hit = next((f"{case}:{k}" for k, (centre, radius) in enumerate(truth)
                        if np.linalg.norm(np.subtract(position, centre)) <= radius), None)
            events.append((float(score), hit))
    events.sort(key=lambda e: -e[0])
    hits, false, curve = set(), 0, [(0.0, 0.0)]
    for index, (score, hit) in enumerate(events):
        if hit is None:
            false += 1
        else:
            hits.add(hit)
        if index + 1 == len(events) or events[index + 1][0] != score:  # one point per threshold
            curve.append((false / max(len(candidates), 1), len(hits) / total if total else 0.0))
    sensitivity = {f"{rate:g}": (max(s for f, s in curve if f <= rate) if total else None) for rate in rates}
    return {"sensitivity": sensitivity, "cases": len(candidates), "aneurysms": total,
            "curve": {"false_positives_per_case": [round(f, 4) for f, _ in curve],
                      "sensitivity": [round(s, 4) for _, s in curve]}}
