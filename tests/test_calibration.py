"""Calibration of Aneurysm Present (pipeline.model.calibration): Platt scaling fitted on
held-out series, stored in the checkpoint, applied by inference to every window."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pipeline.inference.evaluate import calibrate_checkpoint, evaluate_run
from pipeline.inference.predictor import Predictor
from pipeline.labels import ANEURYSM_PRESENT, LOCATIONS
from pipeline.metrics import roc_auc
from pipeline.model.calibration import Calibration, fit_calibration, log_loss
from pipeline.model.checkpoint import load_checkpoint, read_checkpoint, update_meta
from tests.helpers import unseen_dataset


def _overconfident(seed=0, n=40):
    """Held-out series as the demo model scores them: negatives high, positives higher."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) < n * 0.4).astype(float)
    logits = np.where(labels > 0, rng.normal(4.0, 1.2, n), rng.normal(1.5, 1.2, n))
    return labels, 1 / (1 + np.exp(-logits))


def test_platt_scaling_brings_overconfident_negatives_down_and_keeps_the_ranking():
    labels, raw = _overconfident()
    calibration = fit_calibration(labels, raw)
    calibrated = calibration.apply(raw)
    assert raw[labels == 0].mean() > 0.75 and calibrated[labels == 0].mean() < 0.4
    assert roc_auc(labels, calibrated) == pytest.approx(roc_auc(labels, raw))  # monotone: same AUC
    assert calibration.log_loss_after < calibration.log_loss_before
    assert calibration.log_loss_after == pytest.approx(log_loss(labels, calibrated), abs=1e-4)
    # the fitted map is about the truth's: the mean calibrated value of a class is near its rate
    assert abs(calibrated.mean() - labels.mean()) < 0.05
    assert (calibration.series, calibration.positives) == (40, 16)


def test_a_perfectly_separated_held_out_set_gives_a_finite_map():
    labels = np.array([0, 0, 0, 1, 1, 1.0])
    calibration = fit_calibration(labels, np.array([0.9, 0.92, 0.95, 0.97, 0.98, 0.99]))
    assert np.isfinite(calibration.slope) and np.isfinite(calibration.intercept) and calibration.slope > 0
    assert 0 < calibration.apply(0.9) < calibration.apply(0.99) < 1


def test_too_few_held_out_series_of_a_class_cannot_calibrate():
    with pytest.raises(ValueError, match="at least two held-out series of each class"):
        fit_calibration(np.array([0, 0, 0, 1.0]), np.array([0.2, 0.3, 0.4, 0.9]))


def test_the_checkpoint_keeps_the_calibration_and_inference_applies_it_to_every_window(trained, tmp_path):
    path = tmp_path / "best.pt"
    shutil.copy(trained / "best.pt", path)
    weights = read_checkpoint(path)["model"]
    calibration = Calibration(slope=0.5, intercept=-2.0, series=40, positives=16)
    update_meta(path, calibration=calibration)
    assert load_checkpoint(path).meta.calibration == calibration
    assert all(torch.equal(weights[k], v) for k, v in read_checkpoint(path)["model"].items())  # weights untouched

    volume = np.random.default_rng(0).random((64, 64, 64)).astype(np.float32)
    from tests.helpers import make_volume

    processed = make_volume(volume, spacing=(0.8, 0.8, 0.8))
    raw = Predictor(path, calibrated=False).predict_processed(processed)
    calibrated = Predictor(path).predict_processed(processed)
    assert calibrated.probabilities[ANEURYSM_PRESENT] == pytest.approx(
        float(calibration.apply(raw.probabilities[ANEURYSM_PRESENT])), rel=1e-5)
    assert all(calibrated.probabilities[name] <= calibrated.probabilities[ANEURYSM_PRESENT] + 1e-9 for name in LOCATIONS)
    assert np.allclose(calibrated.heatmap[raw.heatmap > 0], calibration.apply(raw.heatmap[raw.heatmap > 0]))
    update_meta(path, calibration=None)
    assert load_checkpoint(path).meta.calibration is None


def test_a_test_set_is_scored_with_the_calibration_the_held_out_series_gave(built, trained, tmp_path):
    root, run = built[0], tmp_path / "run"
    shutil.copytree(trained, run)
    unseen = unseen_dataset(root, run, tmp_path / "unseen")
    before = evaluate_run(run, unseen, test_set=True)
    assert before["calibrated"] is False
    labels, raw = _overconfident()
    fit = calibrate_checkpoint(run / "best.pt", labels, raw)
    assert fit["fitted"] and fit["negatives_mean_after"] < fit["negatives_mean_before"]
    after = evaluate_run(run, unseen, test_set=True)
    calibration = load_checkpoint(run / "best.pt").meta.calibration
    assert after["calibrated"] is True and calibration.series == 40
    for old, new in zip(before["predictions"], after["predictions"]):
        assert new[ANEURYSM_PRESENT] == pytest.approx(float(calibration.apply(old[ANEURYSM_PRESENT])), rel=1e-4)
    refused = calibrate_checkpoint(run / "best.pt", np.array([0, 1.0]), np.array([0.5, 0.9]))
    assert not refused["fitted"] and "two held-out series" in refused["reason"]
    assert load_checkpoint(run / "best.pt").meta.calibration == calibration  # left as it was
