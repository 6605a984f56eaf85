"""Calibration of the aneurysm probability: Platt scaling fitted on held-out series.

The network's heatmap is trained cell by cell, and a series' ``Aneurysm Present`` is the
highest of hundreds of window probabilities, so the raw value says little about how often
such a series holds an aneurysm (held-out negatives of the demo scored 0.77 on average).
`fit_calibration` fits ``p' = sigmoid(slope * logit(p) + intercept)`` to the run's held-out
series (never to a test set) by maximum likelihood with Platt's smoothed targets, which keeps
the fit finite when the held-out series are perfectly separated. The map is monotone, so it
changes no ``Aneurysm Present`` AUC; inference applies it to every window probability before
aggregation, so the candidates and the location columns stay below the calibrated
``Aneurysm Present``. It is stored in the checkpoint's meta (`pipeline.model.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import JsonConfig

EPSILON = 1e-6


@dataclass(frozen=True)
class Calibration(JsonConfig):
    """``p' = sigmoid(slope * logit(p) + intercept)``, and what it was fitted on.

    Attributes:
        slope, intercept: the map.
        series, positives: the held-out series it was fitted on, and how many had an aneurysm.
        log_loss_before, log_loss_after: mean log-loss of those series without and with it.
    """

    slope: float = 1.0
    intercept: float = 0.0
    series: int = 0
    positives: int = 0
    log_loss_before: float | None = None
    log_loss_after: float | None = None

    def apply(self, probabilities: np.ndarray | float) -> np.ndarray:
        """The calibrated probabilities (same shape)."""
        p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
        return 1.0 / (1.0 + np.exp(-(self.slope * np.log(p / (1 - p)) + self.intercept)))


def fit_calibration(labels: np.ndarray, probabilities: np.ndarray) -> Calibration:
    """Platt scaling of ``probabilities`` (raw Aneurysm Present) to ``labels`` (0/1).

    Raises:
        ValueError: fewer than two series of each class (nothing to calibrate against).
    """
    from scipy.optimize import minimize  # here: inference, which only applies a calibration, need not load it

    labels = np.asarray(labels, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((labels == 0).sum())
    if min(positives, negatives) < 2:
        raise ValueError(f"calibration needs at least two held-out series of each class "
                         f"({positives} with an aneurysm, {negatives} without).")
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    logits = np.log(p / (1 - p))
    targets = np.where(labels > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))  # Platt's smoothing

    def loss(parameters: np.ndarray) -> tuple[float, np.ndarray]:
        z = parameters[0] * logits + parameters[1]
        q = 1.0 / (1.0 + np.exp(-z))
        value = np.mean(np.logaddexp(0, z) - targets * z)
        gradient = np.array([np.mean((q - targets) * logits), np.mean(q - targets)])
        return float(value), gradient

    fitted = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                      bounds=[(EPSILON, None), (None, None)])
    slope, intercept = (float(v) for v in fitted.x)
    calibration = Calibration(slope, intercept, len(labels), positives)
    return Calibration(slope, intercept, len(labels), positives, round(log_loss(labels, p), 4),
                       round(log_loss(labels, calibration.apply(p)), 4))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 ``labels``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    labels = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
