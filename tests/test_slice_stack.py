"""The slice viewers' stack (`dashboard.viewer`): every slice of a plane as a picture the browser
moves through, MIP slabs clipped at the volume's ends, and where each marker is shown."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from dashboard import figures, viewer


def decoded(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def volume() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(0, 100, (9, 7, 5)).astype(np.float32)


def test_each_picture_is_its_slice_through_the_window_superior_up_in_side_views():
    array = volume()
    for axis in range(3):
        pictures = viewer.stack_pictures(array, axis, (20.0, 80.0))
        assert len(pictures) == array.shape[axis]
        for index in (0, array.shape[axis] // 2, array.shape[axis] - 1):
            expected = figures.grey_levels(figures.plane_image(array, axis, index, index + 1), (20.0, 80.0))
            np.testing.assert_array_equal(decoded(pictures[index]), expected)
    sagittal = decoded(viewer.stack_pictures(array, 2, (0.0, 100.0))[0])
    assert sagittal.shape == (9, 7)  # rows: superior to inferior, columns: anterior to posterior
    np.testing.assert_array_equal(sagittal[0], figures.grey_levels(array[-1, :, 0], (0.0, 100.0)))


def test_a_mip_picture_is_the_maximum_over_its_slab_clipped_at_the_ends():
    array = volume()
    pictures = viewer.stack_pictures(array, 0, (0.0, 100.0), half=2)
    for index in range(array.shape[0]):
        low, high = max(index - 2, 0), min(index + 3, array.shape[0])
        expected = figures.grey_levels(figures.plane_image(array, 0, low, high), (0.0, 100.0))
        np.testing.assert_array_equal(decoded(pictures[index]), expected)


def test_the_heat_is_painted_over_the_grey_levels_where_it_rises():
    array, heat = volume(), np.zeros((9, 7, 5), np.float16)
    heat[4, 3, 2] = 1.0
    painted = decoded(viewer.stack_pictures(array, 0, (0.0, 100.0), half=1, heat=heat)[3])  # the slab holds slice 4
    grey = figures.grey_levels(figures.plane_image(array, 0, 2, 5), (0.0, 100.0))
    assert painted.shape == (7, 5, 3)
    assert not np.array_equal(painted[3, 2], [grey[3, 2]] * 3)  # painted where the heat is
    np.testing.assert_array_equal(painted[0, 0], [grey[0, 0]] * 3)  # grey elsewhere


def test_a_marker_is_shown_on_the_slices_near_it_and_on_every_slab_that_holds_it():
    point = {"voxel": (10.0, 3.0, 4.0), "text": "Basilar Tip"}
    shape = (30, 20, 20)
    single = viewer.stack_markers([point], 0, shape, half=0, margin=2.0)
    assert single == [{"first": 8, "last": 12, "x": 4.0, "y": 3.0, "text": "Basilar Tip", "label": "",
                       "color": figures.ACCENT, "symbol": "circle"}]
    slab = viewer.stack_markers([point], 0, shape, half=5, margin=0.0)[0]
    assert (slab["first"], slab["last"]) == (5, 15)
    coronal = viewer.stack_markers([point], 1, shape, half=0, margin=0.0)[0]
    assert (coronal["first"], coronal["last"], coronal["x"], coronal["y"]) == (3, 3, 4.0, 19.0)  # superior up
    assert viewer.stack_markers([{"voxel": (40.0, 3.0, 4.0), "text": "outside"}], 0, shape, 0, 2.0) == []
