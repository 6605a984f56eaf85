"""ROC AUC and the RSNA score, including columns with one class."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS
from pipeline.metrics import roc_auc, roc_curve, rsna_score


def test_auc_known_values_and_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert roc_auc([1, 1], [0.2, 0.3]) is None


def test_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 1)  # many ties
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[labels == 1] for n in scores[labels == 0]]
    assert roc_auc(labels, scores) == pytest.approx(np.mean(pairs))


def test_roc_curve_ends():
    curve = roc_curve([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.7])
    assert curve["fpr"][0] == 0 and curve["tpr"][0] == 0 and curve["fpr"][-1] == 1 and curve["tpr"][-1] == 1


def test_rsna_score_leaves_out_undefined_columns():
    n = 6
    truth = {name: np.zeros(n) for name in LABEL_COLUMNS}
    predicted = {name: np.linspace(0, 1, n) for name in LABEL_COLUMNS}
    truth[ANEURYSM_PRESENT] = np.array([0, 0, 0, 1, 1, 1])
    truth[LOCATIONS[0]] = np.array([0, 0, 0, 0, 1, 1])  # perfectly ranked
    truth[LOCATIONS[1]] = np.array([1, 0, 0, 0, 0, 0])  # worst ranked
    score = rsna_score(truth, predicted)
    assert score["aucs"][LOCATIONS[2]] is None  # one class: undefined, not 0.5
    assert score["locations_defined"] == 2
    assert score["location_auc_mean"] == pytest.approx(0.5)
    assert score["final_score"] == pytest.approx(0.5 * (1.0 + 0.5))
