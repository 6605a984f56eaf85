"""Where in the head: a data-driven prior over the 13 locations from a point's position.

Which artery a dome sits on is hard to learn from the inside of a 48-voxel cube with a few
dozen aneurysms, but the position relative to the head says a lot: left or right, front
(anterior communicating) or back (basilar tip), high or low (supraclinoid or infraclinoid
carotid). The prior holds, for each location, the mean offset in mm (canonical S, P, L axes:
the processed volume's z, y, x) of its aneurysms from the centre of the head's interior, and
one standard deviation per axis pooled over locations. It is fitted on the training series'
localizers and their left-right mirror images (so either side of a pair learns from both),
and combined with the network's location probabilities by multiplication (naive Bayes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.labels import LOCATIONS, MIRROR_PERMUTATION

MIN_SD_MM = 4.0  # no axis is trusted to better than this, whatever the training data
UNSEEN_DISTANCE = 3.0  # a location without training aneurysms counts as this many SDs away
MIRROR_AXES = np.array([1.0, 1.0, -1.0])  # a left-right flip negates the x (Left) offset


def head_centre(interior: np.ndarray, stride: int) -> np.ndarray:
    """Centre (z, y, x voxels of the full grid) of a `pipeline.preprocess.head.head_interior` mask."""
    if not interior.any():
        return (np.array(interior.shape) * stride - 1) / 2.0
    return np.argwhere(interior).mean(axis=0) * stride + (stride - 1) / 2.0


@dataclass(frozen=True)
class LocationPrior:
    """Per-location mean offsets (mm) from the head's centre, ``None`` where unseen, and the
    pooled per-axis standard deviation."""

    means: tuple[tuple[float, float, float] | None, ...]
    sd: tuple[float, float, float]
    samples: int

    @classmethod
    def fit(cls, locations: np.ndarray, offsets: np.ndarray) -> "LocationPrior":
        """From location indices (k,) and their offsets (k, 3) in mm, mirror images added."""
        locations = np.concatenate([locations, np.asarray(MIRROR_PERMUTATION)[locations]]).astype(int)
        offsets = np.concatenate([offsets, offsets * MIRROR_AXES]).reshape(-1, 3)
        means, residuals = [], []
        for index in range(len(LOCATIONS)):
            own = offsets[locations == index]
            means.append(tuple(float(v) for v in own.mean(axis=0)) if len(own) else None)
            if len(own) > 1:
                residuals.append(own - own.mean(axis=0))
        spread = np.sqrt(np.mean(np.concatenate(residuals) ** 2, axis=0)) if residuals else np.zeros(3)
        sd = tuple(float(max(v, MIN_SD_MM)) for v in spread)
        return cls(tuple(means), sd, int(len(locations) // 2))

    def to_dict(self) -> dict:
        return {"means": [list(m) if m is not None else None for m in self.means], "sd": list(self.sd),
                "samples": self.samples, "reference": "centre of the head's interior; offsets in mm along S, P, L"}

    @classmethod
    def from_dict(cls, values: dict) -> "LocationPrior":
        means = tuple(tuple(m) if m is not None else None for m in values["means"])
        return cls(means, tuple(values["sd"]), int(values["samples"]))

    def likelihood(self, offsets: np.ndarray) -> np.ndarray:
        """Relative likelihood of each location (13, ...) for offsets (..., 3) in mm."""
        offsets = np.asarray(offsets, dtype=float)
        sd = np.asarray(self.sd)
        unseen = np.exp(-0.5 * UNSEEN_DISTANCE ** 2)
        out = np.empty((len(LOCATIONS),) + offsets.shape[:-1])
        for index, mean in enumerate(self.means):
            if mean is None:
                out[index] = unseen
            else:
                out[index] = np.exp(-0.5 * np.sum(((offsets - np.asarray(mean)) / sd) ** 2, axis=-1))
        return out

    def combine(self, network: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The network's location probabilities (13, ...) times the prior, normalised over locations."""
        joint = network * self.likelihood(offsets)
        total = joint.sum(axis=0, keepdims=True)
        return np.where(total > 0, joint / np.maximum(total, 1e-300), network)
