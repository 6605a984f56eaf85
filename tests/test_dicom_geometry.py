"""Geometry of `load_series`: sorting, affine, planes, gaps, duplicates, scouts.

Synthetic series are written as real DICOM files; the axial, coronal, sagittal and
oblique ones are cross-checked against SimpleITK's reading of the same files.
"""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.io.dicom import load_series
from pipeline.errors import IngestError
from tests.helpers import PLANES, oblique_cosines, ramp_pixels


def sitk_read(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    affine = np.eye(4)
    affine[:3, :3] = (direction * spacing)[:, ::-1]  # sitk axes (x, y, z) -> ours (z, y, x)
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).astype(np.float32), affine


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal", "oblique"])
def test_affine_and_pixels_match_simpleitk(write, plane):
    cosines = oblique_cosines() if plane == "oblique" else PLANES[plane]
    folder, pixels, _ = write(plane=cosines, rescale_slope=1.0, rescale_intercept=-1024.0)
    volume = load_series(folder)
    expected_array, expected_affine = sitk_read(folder)
    np.testing.assert_allclose(volume.affine, expected_affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, expected_array)
    np.testing.assert_array_equal(volume.array, pixels.astype(np.float32) - 1024.0)
    assert volume.info["plane"] == plane
    assert volume.warnings == []


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_affine_columns_are_the_dicom_directions(write, plane):
    folder, _, geometry = write(plane=plane, pixel_spacing=(0.5, 0.7), slice_spacing=1.5)
    volume = load_series(folder)
    row, column = (np.array(v, float) for v in PLANES[plane])
    np.testing.assert_allclose(volume.affine[:3, 2], 0.7 * row)  # x index: along the row cosine
    np.testing.assert_allclose(volume.affine[:3, 1], 0.5 * column)  # y index: along the column cosine
    np.testing.assert_allclose(volume.affine[:3, 0], 1.5 * np.cross(row, column))
    np.testing.assert_allclose(volume.affine[:3, 3], geometry.positions[0])
    assert volume.spacing == pytest.approx((1.5, 0.5, 0.7))


def test_sorting_uses_the_normal_not_z_nor_instance_number(write, tmp_path):
    # Sagittal: every slice has the same z, and the InstanceNumbers are reversed.
    n = 7
    folder, pixels, geometry = write(plane="sagittal", n=n)
    for path in folder.iterdir():
        import pydicom

        ds = pydicom.dcmread(path)
        ds.InstanceNumber = n + 1 - int(ds.InstanceNumber)
        ds.save_as(path)
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    # slices follow the normal row x column = (-1, 0, 0): towards the patient's right
    np.testing.assert_allclose(volume.affine[:3, 0], [-1.5, 0, 0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    angles=st.tuples(*[st.floats(-80, 80, allow_nan=False)] * 3),
    seed=st.integers(0, 2**16),
    reverse=st.booleans(),
)
def test_any_orientation_any_file_order_gives_the_same_volume(write, angles, seed, reverse):
    row, column = oblique_cosines(angles)
    n = 5
    folder, pixels, geometry = write(plane=(row, column), n=n, rows=8, columns=6, slice_spacing=-1.2 if reverse else 1.2)
    # Shuffle the files as an upload in arbitrary order.
    files = sorted(folder.iterdir())
    random.Random(seed).shuffle(files)
    volume = load_series([(f"upload{i}", f.read_bytes()) for i, f in enumerate(files)])
    expected = pixels[::-1] if reverse else pixels
    np.testing.assert_array_equal(volume.array, expected)
    normal = np.cross(row, column)
    assert np.diff(volume.voxel_to_patient(np.c_[np.arange(n), np.zeros(n), np.zeros(n)]) @ normal) == pytest.approx(
        [1.2] * (n - 1), abs=1e-3
    )
    for key, source in volume.sources.items():
        k = volume.source_to_voxel(key[0], 2.0, 3.0)
        assert k[1:] == pytest.approx([3.0, 2.0], abs=1e-3)
        assert k[0] == pytest.approx(round(k[0]), abs=1e-3)


def test_duplicate_slices_are_dropped_with_a_warning(write):
    n = 5
    folder, pixels, geometry = write(n=n)
    positions = np.vstack([geometry.positions, geometry.positions[2:4]])
    folder2, pixels2, _ = write(n=n + 2, positions=positions, pixels=np.concatenate([pixels, pixels[2:4]]))
    volume = load_series(folder2)
    assert volume.shape[0] == n
    np.testing.assert_array_equal(volume.array, pixels)
    assert any("same position" in w for w in volume.warnings)


def test_same_file_twice_is_read_once(write):
    folder, pixels, _ = write(n=4)
    files = sorted(folder.iterdir())
    volume = load_series(files + files[:1])
    assert volume.shape[0] == 4
    assert any("appeared twice" in w for w in volume.warnings)


def test_a_gap_is_reported_and_filled_on_the_true_positions(write):
    n = 8
    spacing = 1.0
    positions = [(0.0, 0.0, spacing * k) for k in range(n) if k not in (3, 4)]  # two slices missing
    values = np.array([k for k in range(n) if k not in (3, 4)], dtype=np.int16) * 10
    pixels = np.broadcast_to(values[:, None, None], (len(values), 4, 4)).copy()
    folder, _, _ = write(positions=positions, pixels=pixels, slice_spacing=spacing)
    volume = load_series(folder)
    assert volume.shape[0] == n
    assert volume.spacing[0] == pytest.approx(spacing)
    # linear in position: the filled slices lie on the line through their neighbours
    np.testing.assert_allclose(volume.array[:, 0, 0], np.arange(n) * 10.0, atol=1e-4)
    assert any("2 slice(s) missing" in w for w in volume.warnings)


def test_irregular_spacing_is_reported_and_resampled(write):
    z = np.array([0.0, 1.0, 2.2, 3.0, 4.1, 5.0])
    pixels = np.broadcast_to((z * 100).astype(np.int16)[:, None, None], (6, 4, 4)).copy()
    folder, _, _ = write(positions=[(0, 0, v) for v in z], pixels=pixels)
    volume = load_series(folder)
    assert any("Irregular slice spacing" in w for w in volume.warnings)
    centres = volume.voxel_to_patient(np.c_[np.arange(volume.shape[0]), np.zeros(volume.shape[0]), np.zeros(volume.shape[0])])
    np.testing.assert_allclose(volume.array[:, 0, 0], np.round(centres[:, 2] * 100), atol=12)  # values follow position


def test_all_slices_at_one_position_is_an_error(write):
    folder, _, _ = write(positions=[(0, 0, 5.0)] * 4)
    with pytest.raises(IngestError, match="same position"):
        load_series(folder)


def test_sparse_slices_are_refused_not_interpolated(write):
    folder, _, _ = write(positions=[(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 200)], pixels=ramp_pixels(4, 4, 4))
    with pytest.raises(IngestError, match="too sparse"):
        load_series(folder)


def test_scouts_of_another_orientation_or_size_are_left_out(write, tmp_path):
    folder, pixels, _ = write(n=6, rows=24, columns=20)
    scout, _, _ = write(plane="sagittal", n=1, rows=24, columns=20)
    small, _, _ = write(n=1, rows=12, columns=12)
    import pydicom

    target_uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    for extra in (scout, small):
        for path in extra.iterdir():
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = target_uid
            ds.save_as(folder / path.name)
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    assert any("another orientation, size or pixel spacing" in w for w in volume.warnings)
    assert len(volume.sources) == 6


def test_gantry_tilt_is_kept_in_the_affine(write):
    n, step, shift = 6, 1.0, 0.3  # each slice shifted 0.3 mm in y: a 16.7 degree tilt
    positions = [(0.0, shift * k, step * k) for k in range(n)]
    folder, pixels, _ = write(positions=positions, n=n)
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    np.testing.assert_allclose(volume.affine[:3, 0], [0.0, shift, step], atol=1e-6)
    assert any("sheared" in w for w in volume.warnings)
    # every source pixel lands exactly on its voxel
    for (sop, frame), source in volume.sources.items():
        z = volume.source_to_voxel(sop, 5, 7, frame)
        assert z[1:] == pytest.approx([7, 5], abs=1e-6)


def test_rescale_is_applied_per_slice(write):
    slopes = [1.0, 2.0, 0.5, 1.0]
    intercepts = [-1024.0, 0.0, 10.0, -1000.0]
    folder, pixels, _ = write(n=4, rescale_slope=slopes, rescale_intercept=intercepts)
    volume = load_series(folder)
    expected = pixels * np.array(slopes)[:, None, None] + np.array(intercepts)[:, None, None]
    np.testing.assert_allclose(volume.array, expected)


def test_a_folder_is_searched_recursively_and_names_need_no_extension(write, tmp_path):
    folder, pixels, _ = write(n=4)
    nested = tmp_path / "upload" / "a" / "b"
    nested.mkdir(parents=True)
    for i, path in enumerate(sorted(folder.iterdir())):
        target = nested if i % 2 else tmp_path / "upload"
        shutil.copy(path, target / f"IM{i:04d}")
    (tmp_path / "upload" / "notes.txt").write_text("not an image")
    volume = load_series(tmp_path / "upload")
    np.testing.assert_array_equal(volume.array, pixels)
    assert any("notes.txt" in w for w in volume.warnings)


def test_irregular_slices_are_kept_as_they_are_when_a_grid_holds_them_all(write):
    z = np.array([0.0, 1.0, 2.0, 3.0, 4.5, 5.5, 6.5, 7.5])  # one step of 1.5 mm: a 0.5 mm grid holds them all
    pixels = np.broadcast_to((np.arange(8) * 100 + 100).astype(np.int16)[:, None, None], (8, 4, 4)).copy()
    folder, _, _ = write(positions=[(0, 0, v) for v in z], pixels=pixels)
    volume = load_series(folder)
    assert volume.spacing[0] == pytest.approx(0.5) and volume.shape[0] == 16
    original = np.round(z / 0.5).astype(int)
    np.testing.assert_allclose(volume.array[original, 0, 0], pixels[:, 0, 0], atol=1e-3)  # not interpolated
    assert any("holds every original slice" in w for w in volume.warnings)


def test_irregular_slices_no_cheap_grid_holds_are_resampled_at_the_finest_spacing(write):
    z = np.array([0.0, 1.0, 2.2, 3.0, 4.1, 5.0])
    folder, _, _ = write(positions=[(0, 0, v) for v in z])
    volume = load_series(folder)
    assert volume.spacing[0] == pytest.approx(5.0 / 6) and volume.shape[0] == 7  # the finest step, 0.8 mm
    assert any("at the finest spacing" in w for w in volume.warnings)
