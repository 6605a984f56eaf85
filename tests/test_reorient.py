"""`Reorient`: axis permutation and flips to the canonical SPL orientation, coordinates kept."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.io.dicom import load_series
from pipeline.preprocess.config import CANONICAL
from pipeline.preprocess.transforms import Reorient
from tests.helpers import PLANES, oblique_cosines


@pytest.mark.parametrize(
    "plane, slice_spacing",
    [("axial", 1.5), ("axial", -1.5), ("coronal", 2.0), ("sagittal", 1.0), ("oblique", 1.2)],
)
def test_every_plane_becomes_canonical_with_the_same_voxel_values(write, plane, slice_spacing):
    cosines = oblique_cosines((20, 10, -25)) if plane == "oblique" else PLANES[plane]
    folder, pixels, _ = write(plane=cosines, n=5, slice_spacing=slice_spacing)
    volume = load_series(folder)
    result = Reorient()(volume)
    assert result.orientation == CANONICAL
    assert sorted(result.shape) == sorted(volume.shape)
    assert result.history[-1]["step"] == "reorient"
    # Every source pixel is found, at an integer voxel, with its value.
    for (sop, frame), source in volume.sources.items():
        for x, y in [(0, 0), (7, 3), (19, 23)]:
            before = np.round(volume.source_to_voxel(sop, x, y, frame)).astype(int)
            after = result.source_to_voxel(sop, x, y, frame)
            np.testing.assert_allclose(after, np.round(after), atol=1e-3)  # DS header precision
            assert result.array[tuple(np.round(after).astype(int))] == volume.array[tuple(before)]


def test_patient_left_is_high_x_superior_is_high_z():
    from tests.helpers import make_volume

    # A sagittal-like layout: array axes (x: A->P? no) built from an explicit affine.
    affine = np.eye(4)
    affine[:3, 0] = [-1.0, 0, 0]  # z index runs towards the patient's right
    affine[:3, 1] = [0, 0, -1.0]  # y index runs inferior
    affine[:3, 2] = [0, 1.0, 0]  # x index runs posterior
    array = np.zeros((4, 5, 6), dtype=np.float32)
    array[0, 4, 2] = 1.0  # most-left (z=0 is leftmost), most-inferior voxel
    result = Reorient()(make_volume(array, affine=affine))
    z, y, x = np.argwhere(result.array == 1.0)[0]
    assert x == result.shape[2] - 1  # left
    assert z == 0  # inferior
    assert result.orientation == "SPL"


def test_canonical_input_is_returned_without_copy(write):
    folder, _, _ = write(plane="axial", n=3)
    volume = load_series(folder)
    assert Reorient()(volume).array is volume.array
