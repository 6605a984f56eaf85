"""The preprocessing contract (pipeline.preprocess.config): thresholds on processed volumes
follow the CT window they were normalised with, so another window keeps their meaning."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.dataset.cubes import vessel_candidates
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.head import head_interior
from pipeline.preprocess.transforms import Normalize
from tests.helpers import make_volume


def ct_head(size: int = 72) -> np.ndarray:
    """Hounsfield values: air, a skull shell (1200), brain (40) and a contrast-filled tube (400)."""
    z, y, x = np.mgrid[:size, :size, :size] - size / 2
    radius = np.sqrt(z ** 2 + y ** 2 + x ** 2)
    volume = np.full((size,) * 3, -1000.0, np.float32)
    volume[radius < 30] = 1200.0
    volume[radius < 27] = 40.0
    volume[(np.sqrt(z ** 2 + (y - 4) ** 2) < 2.0) & (radius < 20)] = 400.0
    return volume


def test_the_default_window_gives_the_documented_thresholds():
    config = PreprocessConfig()
    assert config.tissue_threshold("CT") == 0.05 and config.tissue_threshold("MR") == 0.05
    assert config.contrast_range() == pytest.approx((0.3, 0.65))


def test_another_window_leaves_the_head_and_the_vessels_where_they_are():
    found = []
    for window in ((-100.0, 900.0), (-1000.0, 2000.0)):
        config = PreprocessConfig(ct_window=window)
        volume = Normalize(window)(make_volume(ct_head(), modality="CT"))
        interior, stride = head_interior(volume, config)
        vessels = vessel_candidates(volume, "CTA", interior, stride, config)
        found.append((interior, vessels))
    (interior, vessels), (wide_interior, wide_vessels) = found
    assert interior.any() and np.array_equal(interior, wide_interior)
    assert vessels.any() and np.array_equal(vessels, wide_vessels)


def test_a_window_that_does_not_go_up_is_refused():
    with pytest.raises(ValueError, match="CT window"):
        PreprocessConfig(ct_window=(500.0, 100.0))
