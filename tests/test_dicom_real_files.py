"""`load_series` and `scan` on real scanner files shipped with pydicom.

Compressed and big-endian variants of the same MR image must decode to the same
values as pydicom's reference decoding; the real CT series must match SimpleITK.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.io.dicom import load_series, scan
from pipeline.errors import IngestError
from tests.helpers import PYDICOM_FILES, pydicom_file, two_slice_copy

MR_VARIANTS = [
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_every_transfer_syntax_decodes_to_the_reference_values(name, tmp_path):
    reference = pydicom.dcmread(pydicom_file("MR_small.dcm")).pixel_array.astype(np.float32)
    volume = load_series(two_slice_copy(pydicom_file(name), tmp_path))
    assert volume.shape == (2, 64, 64)
    np.testing.assert_array_equal(volume.array[0], reference)
    np.testing.assert_array_equal(volume.array[1], reference)
    assert volume.modality == "MR"
    assert volume.spacing[1:] == pytest.approx((0.3125, 0.3125))


def test_lossy_jpeg2000_ct_matches_pydicom(tmp_path):
    path = pydicom_file("693_J2KI.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    volume = load_series(two_slice_copy(path, tmp_path))
    np.testing.assert_allclose(volume.array[0], expected)
    assert volume.info["transfer_syntaxes"] == ["JPEG 2000 Image Compression"]


def test_real_ct_series_matches_simpleitk():
    folder = PYDICOM_FILES / "dicomdirtests" / "98892001" / "CT5N"
    volume = load_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    np.testing.assert_allclose(volume.array, sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(volume.affine[:3, 3], image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.spacing[::-1], image.GetSpacing(), rtol=1e-5)
    assert volume.modality == "CT" and volume.shape == (5, 16, 16)
    assert volume.array.min() < -800  # Hounsfield units: air is there


@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_rle.dcm", "rtdose_expb.dcm"])
def test_real_multiframe_keeps_every_frame_with_grid_offsets(name):
    ds = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    volume = load_series(pydicom_file(name))
    assert volume.shape == (15, 10, 10)
    np.testing.assert_array_equal(volume.array, ds.pixel_array.astype(np.float32))
    offsets = np.array(ds.GridFrameOffsetVector, dtype=float)
    assert volume.spacing[0] == pytest.approx(np.diff(offsets).mean())
    assert set(volume.sources) == {(ds.SOPInstanceUID, f) for f in range(15)}


def test_scan_lists_every_series_of_a_folder_without_decoding():
    result = scan(PYDICOM_FILES / "dicomdirtests")
    by_uid = {s.series_uid: s for s in result.series}
    assert len(result.series) == 13
    ct5 = [s for s in result.series if s.n_images == 5][0]
    assert (ct5.modality, ct5.rows, ct5.columns, ct5.plane, ct5.n_files) == ("CT", 16, 16, "axial", 5)
    assert result.series[0].n_images == max(s.n_images for s in by_uid.values())
    assert any("DICOMDIR" in s for s in result.skipped)


def test_a_folder_with_several_series_is_refused_with_the_list():
    with pytest.raises(IngestError) as error:
        load_series(PYDICOM_FILES / "dicomdirtests" / "98892003" / "MR2")
    message = str(error.value)
    assert "3 series" in message
    for series in scan(PYDICOM_FILES / "dicomdirtests" / "98892003" / "MR2").series:
        assert series.series_uid in message


def test_a_chosen_series_is_read_from_a_mixed_folder():
    folder = PYDICOM_FILES / "dicomdirtests" / "98892001"
    uid = [s for s in scan(folder).series if s.n_images == 5][0].series_uid
    volume = load_series(folder, series_uid=uid)
    assert volume.series_uid == uid and volume.shape[0] == 5
