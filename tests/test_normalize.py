"""`Normalize`: CT Hounsfield window, MR robust percentiles, output in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.preprocess.transforms import Normalize
from tests.helpers import make_volume


def test_ct_window_maps_hounsfield_units():
    values = np.array([-1000.0, -100.0, 40.0, 400.0, 900.0, 2000.0]).reshape(1, 1, 6)
    result = Normalize(ct_window=(-100.0, 900.0))(make_volume(values, modality="CT"))
    np.testing.assert_allclose(result.array.ravel(), [0.0, 0.0, 0.14, 0.5, 1.0, 1.0], atol=1e-6)
    assert result.array.dtype == np.float32
    assert result.history[-1] == {"step": "normalize", "low": -100.0, "high": 900.0}


def test_mr_normalisation_ignores_the_scanner_scale():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 100.0, size=(20, 20, 20))
    first = Normalize()(make_volume(values, modality="MR")).array
    second = Normalize()(make_volume(values * 3.7 + 120.0, modality="MR")).array
    np.testing.assert_allclose(first, second, atol=1e-5)
    assert first.min() == 0.0 and first.max() == 1.0
    assert np.mean(first == 1.0) == pytest.approx(0.002, abs=0.002)  # only the top 0.2 % saturate


def test_constant_volume_does_not_divide_by_zero():
    result = Normalize()(make_volume(np.full((3, 3, 3), 7.0), modality="MR"))
    assert np.all(np.isfinite(result.array))
