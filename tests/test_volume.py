"""`Volume` geometry helpers: orientation, plane, source <-> voxel mapping."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.io.dicom import load_series
from pipeline.errors import IngestError
from pipeline.labels import LOCATIONS, MIRROR_PERMUTATION, mirrored_location
from pipeline.volume import plane_of_normal
from tests.helpers import make_volume


def test_orientation_letters_follow_the_affine():
    assert make_volume(np.zeros((2, 2, 2))).orientation == "SPL"
    assert make_volume(np.zeros((2, 2, 2)), affine=np.eye(4)).orientation == "LPS"  # columns are z, y, x
    affine = np.eye(4)
    affine[:3, :3] = [[0, 0, -1], [0, -1, 0], [1, 0, 0]]  # z: +S, y: -P (A), x: -L (R)
    assert make_volume(np.zeros((2, 2, 2)), affine=affine).orientation == "SAR"


def test_plane_names():
    assert plane_of_normal([0, 0, 1]) == "axial"
    assert plane_of_normal([0, -1, 0]) == "coronal"
    assert plane_of_normal([1, 0, 0]) == "sagittal"
    assert plane_of_normal([1, 1, 0]) == "oblique"
    assert plane_of_normal([0, np.sin(np.radians(10)), np.cos(np.radians(10))]) == "axial"


def test_unknown_source_image_is_a_clear_error(write):
    folder, _, _ = write(n=3)
    volume = load_series(folder)
    with pytest.raises(IngestError, match="not part of series"):
        volume.source_to_voxel("1.2.3.4", 1, 1)
    sop, frame = next(iter(volume.sources))
    with pytest.raises(IngestError):
        volume.source_to_voxel(sop, 1, 1, frame=5)


def test_voxel_to_source_picks_the_nearest_slice(write):
    folder, _, geometry = write(n=4, slice_spacing=2.0)
    volume = load_series(folder)
    sop, frame, x, y = volume.voxel_to_source([2.4, 5.0, 6.0])
    assert volume.source_to_voxel(sop, x, y, frame) == pytest.approx([2.0, 5.0, 6.0])


def test_left_right_mirror_of_the_locations():
    assert mirrored_location("Left Middle Cerebral Artery") == "Right Middle Cerebral Artery"
    assert mirrored_location("Basilar Tip") == "Basilar Tip"
    mirrored = [LOCATIONS[i] for i in MIRROR_PERMUTATION]
    assert mirrored == [mirrored_location(n) for n in LOCATIONS]
    assert sorted(MIRROR_PERMUTATION) == list(range(13))
