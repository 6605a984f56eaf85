"""Multi-frame Enhanced files and compressed transfer syntaxes written here, read back."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from pipeline.io.dicom import load_series, scan
from tests.helpers import oblique_cosines, ramp_pixels

COMPRESSED = [RLELossless, JPEG2000Lossless, JPEGLSLossless]


@pytest.mark.parametrize("syntax", COMPRESSED, ids=lambda s: s.name)
@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "multi-frame"])
def test_compressed_series_decode_exactly(write, syntax, multiframe):
    folder, pixels, _ = write(n=4, rows=40, columns=36, transfer_syntax=syntax, multiframe=multiframe)
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    assert volume.info["transfer_syntaxes"] == [syntax.name]


def test_jpeg_lossless_series_decodes_exactly(write):
    pixels = (ramp_pixels(3, 32, 32) + 1000).astype(np.uint16)
    folder, _, _ = write(n=3, rows=32, columns=32, pixels=pixels)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        frame = ds.pixel_array.astype(np.uint16)
        ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(frame, lossless=True, predictor=1)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.save_as(path, enforce_file_format=True)
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    assert volume.info["transfer_syntaxes"] == [JPEGLosslessSV1.name]


def test_enhanced_multiframe_geometry_comes_from_functional_groups(write):
    row, column = oblique_cosines((10, 20, -5))
    folder, pixels, geometry = write(plane=(row, column), n=9, multiframe=True, modality="MR")
    (path,) = folder.iterdir()
    ds = pydicom.dcmread(path)
    assert "ImagePositionPatient" not in ds and "ImageOrientationPatient" not in ds
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    assert volume.shape[0] == 9 and volume.info["multiframe"]
    np.testing.assert_allclose(volume.voxel_to_patient([[k, 0, 0] for k in range(9)]), geometry.positions, atol=1e-4)
    # localizers of multi-frame files carry the frame index: every frame is addressable
    assert sorted(f for _, f in volume.sources) == list(range(9))
    assert volume.source_to_voxel(ds.SOPInstanceUID, x=3, y=4, frame=6) == pytest.approx([6, 4, 3], abs=1e-4)


def test_multiframe_in_shuffled_frame_order_is_sorted_by_position(write):
    order = np.array([3, 0, 4, 1, 2])
    folder0, pixels, geometry = write(n=5)
    folder, _, _ = write(n=5, multiframe=True, positions=geometry.positions[order], pixels=pixels[order])
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    (path,) = folder.iterdir()
    sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert volume.source_to_voxel(sop, 0, 0, frame=0)[0] == pytest.approx(3)  # frame 0 is the 4th slice


def test_multiframe_without_per_frame_positions_uses_the_documented_fallback(write):
    folder, pixels, geometry = write(n=6, multiframe=True, per_frame_geometry=False, slice_spacing=2.5)
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    assert volume.spacing[0] == pytest.approx(2.5)
    np.testing.assert_allclose(volume.affine[:3, 3], geometry.positions[0])


def test_multiframe_per_frame_rescale(write):
    folder, pixels, _ = write(n=3, multiframe=True, rescale_slope=[1, 2, 3], rescale_intercept=[0, -10, 5])
    volume = load_series(folder)
    expected = pixels * np.array([1, 2, 3])[:, None, None] + np.array([0, -10, 5])[:, None, None]
    np.testing.assert_allclose(volume.array, expected)


def test_scan_describes_a_multiframe_series(write):
    folder, _, _ = write(plane="coronal", n=7, multiframe=True, modality="MR", rows=24, columns=20)
    (series,) = scan(folder).series
    assert (series.modality, series.n_files, series.n_images, series.rows, series.columns, series.plane) == (
        "MR", 1, 7, 24, 20, "coronal"
    )


def test_bits_stored_below_bits_allocated_are_masked_like_pydicom(write):
    pixels = ramp_pixels(3, 8, 8)
    folder, _, _ = write(n=3, rows=8, columns=8, pixels=pixels)
    for path in folder.iterdir():  # 12-bit signed values in 16-bit words, junk in the top bits
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array.astype(np.int16)
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = ((raw.view(np.uint16) & 0x0FFF) | 0xA000).astype("<u2").tobytes()
        ds.save_as(path)
    volume = load_series(folder)
    np.testing.assert_array_equal(volume.array, pixels)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        z = round(volume.source_to_voxel(ds.SOPInstanceUID, 0, 0)[0])
        np.testing.assert_array_equal(volume.array[z], ds.pixel_array)
