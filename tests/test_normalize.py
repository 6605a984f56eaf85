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


def mr_head(bright_share: float, seed: int = 1) -> np.ndarray:
    """Air around a head of tissue (~200) with a few vessels (~700) and, on ``bright_share``
    of the head, fat far brighter than the vessels (2000)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(5.0, 2.0, (40, 40, 40))
    head = np.zeros(values.shape, bool)
    head[5:35, 5:35, 5:35] = True
    values[head] = rng.normal(200.0, 15.0, head.sum())
    values[18:20, 10:30, 20] = 700.0  # vessels
    fat = head & (rng.random(values.shape) < bright_share)
    values[fat] = 2000.0
    return values


def test_tissue_anchoring_puts_the_head_at_its_level_whatever_else_is_bright():
    anchored = Normalize(mr_tissue_level=0.25)
    for share in (0.0, 0.05):
        result = anchored(make_volume(mr_head(share), modality="MR")).array
        assert np.median(result[8:32, 8:32, 8:32][result[8:32, 8:32, 8:32] < 0.9]) == pytest.approx(0.25, abs=0.02)
        assert result[19, 15, 20] == pytest.approx(0.875, abs=0.03)  # vessels at 3.5 x tissue, whatever the fat
    plain = [Normalize()(make_volume(mr_head(share), modality="MR")).array for share in (0.0, 0.05)]
    assert abs(np.median(plain[0][10:30, 10:30, 10:30]) - np.median(plain[1][10:30, 10:30, 10:30])) > 0.1  # moved


def test_the_default_key_is_that_of_the_contract_without_tissue_anchoring():
    from pipeline.preprocess.config import PreprocessConfig

    assert PreprocessConfig().key() == "dacf71f9e1d4014e"  # caches and datasets built before keep their key
    assert PreprocessConfig(mr_tissue_level=0.25).key() != PreprocessConfig().key()
    with pytest.raises(ValueError, match="tissue level"):
        PreprocessConfig(mr_tissue_level=1.5)
