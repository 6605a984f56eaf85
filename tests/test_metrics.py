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


def test_froc_counts_hits_within_the_radius_and_false_positives_per_case():
    from pipeline.metrics import froc

    aneurysms = [[((0, 0, 0), 3.0), ((40, 0, 0), 2.0)], [], [((0, 0, 0), 5.0)]]
    candidates = [
        [((1, 1, 1), 0.9), ((10, 0, 0), 0.8), ((39, 0, 1.5), 0.3), ((0.5, 0, 0), 0.95)],  # a double hit at 0.9/0.95
        [((5, 5, 5), 0.7)],
        [((0, 6, 0), 0.85), ((3, 3, 0), 0.4)],  # 6 mm away: a miss; 4.2 mm: a hit
    ]
    result = froc(candidates, aneurysms)
    assert result["cases"] == 3 and result["aneurysms"] == 3
    # thresholds: 0.95 hit (1/3), 0.9 double hit, 0.85 FP, 0.8 FP, 0.7 FP, 0.4 hit (2/3), 0.3 hit (3/3)
    assert result["sensitivity"] == {"0.25": pytest.approx(1 / 3), "0.5": pytest.approx(1 / 3),
                                     "1": pytest.approx(1.0), "2": pytest.approx(1.0)}
    assert result["curve"]["false_positives_per_case"][-1] == pytest.approx(1.0)
    assert froc([[((0, 0, 0), 0.5)]], [[]])["sensitivity"]["1"] is None  # no aneurysm: undefined
