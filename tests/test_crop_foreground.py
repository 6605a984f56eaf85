"""`CropForeground`: the head's bounding box plus a margin, geometry kept."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.preprocess.transforms import CropForeground
from tests.helpers import make_volume


def head_with_table(modality="CT"):
    shape = (60, 80, 70)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    head = ((z - 30) / 20) ** 2 + ((y - 35) / 25) ** 2 + ((x - 35) / 22) ** 2 < 1
    table = (y >= 72) & (y <= 73)  # a 2-voxel plate below the head, detached from it
    if modality == "CT":
        array = np.where(head, 40.0, -1000.0)
        array[table] = 200.0
    else:
        rng = np.random.default_rng(0)
        array = np.where(head, 500.0, 0.0) + rng.rayleigh(8, shape)
    return make_volume(array, spacing=(1.0, 1.0, 1.0), modality=modality, origin=(-5.0, 3.0, 7.0)), head


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_crop_keeps_the_head_and_a_margin_and_drops_the_table(modality):
    volume, head = head_with_table(modality)
    result = CropForeground(margin_mm=5.0)(volume)
    box = result.history[-1]["box"]
    extent = [(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(head)]
    for (low, high), (head_low, head_high), n in zip(box, extent, volume.shape):
        assert low <= head_low and high >= head_high  # the whole head
        assert head_low - low <= 5 + 3 and high - head_high <= 5 + 3  # margin, within the 3 mm grid
    assert box[1][1] <= 72  # not the table
    # the same patient point has the same value before and after
    point = volume.voxel_to_patient([30, 35, 35])
    after = np.round(result.patient_to_voxel(point)).astype(int)
    assert result.array[tuple(after)] == volume.array[30, 35, 35]


def test_nothing_to_crop_keeps_everything_with_a_warning():
    volume = make_volume(np.full((10, 10, 10), -1000.0))
    result = CropForeground()(volume)
    assert result.shape == volume.shape
    assert any("No head" in w for w in result.warnings)
