"""`extract_cube`: exact shape everywhere, centred, padded outside the volume."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.dataset.cubes import extract_cube


@pytest.mark.parametrize("centre", [(10, 12, 14), (0, 0, 0), (19, 23, 27), (-5, 3, 40), (100, 100, 100)])
def test_shape_is_exact_and_the_centre_voxel_is_at_the_middle(centre):
    array = np.arange(20 * 24 * 28, dtype=np.float32).reshape(20, 24, 28) + 1
    cube = extract_cube(array, centre, 16)
    assert cube.shape == (16, 16, 16)
    inside = all(0 <= c < n for c, n in zip(centre, array.shape))
    assert cube[8, 8, 8] == (array[centre] if inside else 0.0)
    # every voxel is either the right source voxel or padding
    z, y, x = np.meshgrid(*[np.arange(16) - 8 + c for c in centre], indexing="ij")
    valid = (z >= 0) & (z < 20) & (y >= 0) & (y < 24) & (x >= 0) & (x < 28)
    np.testing.assert_array_equal(cube[valid], array[z[valid], y[valid], x[valid]])
    assert np.all(cube[~valid] == 0)


def test_odd_size_and_fractional_centre():
    array = np.random.default_rng(0).random((30, 30, 30)).astype(np.float32)
    cube = extract_cube(array, (10.4, 10.6, 9.5), 7)
    assert cube.shape == (7, 7, 7)
    assert cube[3, 3, 3] == array[10, 11, 10]
