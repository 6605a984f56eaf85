"""`Resample`: target spacing, exact in patient coordinates, anisotropy reported."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.preprocess.transforms import Resample
from tests.helpers import make_volume, oblique_cosines, patient_grid


def linear_field(points):
    return points @ np.array([0.7, -1.3, 2.1]) + 5.0


@pytest.mark.parametrize(
    "spacing, target",
    [((0.6, 0.45, 0.45), (0.8, 0.8, 0.8)), ((5.0, 0.5, 0.5), (0.8, 0.8, 0.8)), ((1.0, 1.0, 1.0), (0.7, 1.3, 0.9))],
)
def test_resampled_values_sit_at_the_patient_points_the_affine_says(spacing, target):
    row, column = oblique_cosines((15, -10, 30))
    affine = np.eye(4)
    affine[:3, 0] = np.cross(row, column) * spacing[0]
    affine[:3, 1] = np.array(column) * spacing[1]
    affine[:3, 2] = np.array(row) * spacing[2]
    affine[:3, 3] = [12.0, -40.0, 7.0]
    shape = (12, 40, 36) if spacing[0] < 2 else (6, 40, 36)
    source = make_volume(np.zeros(shape), affine=affine)
    source.array[:] = linear_field(patient_grid(source))
    result = Resample(target)(source)
    assert result.spacing == pytest.approx(target)
    # trilinear interpolation is exact for a linear field inside the source grid
    # (outside it, within half a source voxel of the edge, the edge value is repeated)
    points = patient_grid(result)
    in_source = source.patient_to_voxel(points.reshape(-1, 3)).reshape(points.shape)
    inside = np.all((in_source >= 0) & (in_source <= np.array(source.shape) - 1), axis=-1)
    assert inside.mean() > 0.7
    np.testing.assert_allclose(result.array[inside], linear_field(points)[inside], atol=2e-3, rtol=1e-5)
    # the field of view is kept to within one target voxel
    for n_in, s_in, n_out, s_out in zip(source.shape, spacing, result.shape, target):
        assert abs(n_in * s_in - n_out * s_out) <= s_out + 1e-6


def test_anisotropic_series_is_reported():
    result = Resample((0.8, 0.8, 0.8))(make_volume(np.zeros((5, 20, 20)), spacing=(5.0, 0.5, 0.5)))
    assert any("Anisotropic" in w for w in result.warnings)
    assert not any("Anisotropic" in w for w in Resample()(make_volume(np.zeros((5, 8, 8)), spacing=(1, 0.5, 0.5))).warnings)


def test_already_at_target_is_untouched():
    volume = make_volume(np.ones((4, 4, 4)), spacing=(0.8, 0.8, 0.8))
    assert Resample()(volume).array is volume.array
