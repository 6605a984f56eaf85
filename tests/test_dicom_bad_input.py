"""Bad input: one `IngestError` with a sentence a user understands, never a crash."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest

from pipeline.io.dicom import load_series, scan
from pipeline.io.dicomwriter import SeriesHeader
from pipeline.errors import IngestError
from tests.helpers import PYDICOM_FILES, pydicom_file, two_slice_copy

SECRET = SeriesHeader(
    modality="CT",
    patient_name="SECRET^PATIENTNAME",
    patient_id="SECRET-ID-4242",
    patient_birth_date="19010203",
)


def message_of(source, **kwargs) -> str:
    with pytest.raises(IngestError) as error:
        load_series(source, **kwargs)
    return str(error.value)


def test_not_dicom(tmp_path):
    (tmp_path / "a.dcm").write_text("hello")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert "None of the 2 file(s) is DICOM" in message_of(tmp_path)
    assert "is not a DICOM file" in message_of([("x.dcm", b"\x00" * 300)])


def test_missing_path_and_empty_inputs(tmp_path):
    assert "does not exist" in message_of(tmp_path / "nowhere")
    assert "No files" in message_of(tmp_path)
    assert "No files" in message_of([])
    with pytest.raises(IngestError, match="folder, a list"):
        load_series([42])


def test_truncated_file_alone_and_in_a_series(write, tmp_path):
    assert "truncated" in message_of(two_slice_copy(pydicom_file("MR_truncated.dcm"), tmp_path / "real"))
    folder, pixels, _ = write(n=5)
    victim = [p for p in folder.iterdir() if pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber == 5][0]
    victim.write_bytes(victim.read_bytes()[:-200])
    volume = load_series(folder)  # per-file problem: a warning, the rest is read
    assert volume.shape[0] == 4
    np.testing.assert_array_equal(volume.array, pixels[:4])
    assert any("truncated" in w for w in volume.warnings)


def test_cut_in_the_header(write):
    folder, _, _ = write(n=3)
    data = next(folder.iterdir()).read_bytes()[:300]
    assert message_of([("cut.dcm", data)])


def test_no_pixel_data():
    assert "no pixel data" in message_of(pydicom_file("rtplan.dcm"))
    assert "no pixel data" in message_of(PYDICOM_FILES / "dicomdirtests" / "DICOMDIR")


def test_missing_geometry(write):
    folder, _, _ = write(n=3)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    assert "no usable geometry" in message_of(folder)


def test_colour_images_are_unsupported():
    assert "colour image" in message_of(pydicom_file("SC_rgb_rle_2frame.dcm"))
    assert "colour image" in message_of(pydicom_file("examples_palette.dcm"))


def test_one_slice_only():
    assert "one usable image only" in message_of(pydicom_file("MR_small.dcm"))


def test_too_large_is_refused_from_the_header_before_decoding(write):
    folder, _, _ = write(n=4, rows=24, columns=20)
    message = message_of(folder, max_voxels=4 * 24 * 20 - 1)
    assert "too large" in message and "1,920" in message
    # a header that lies about its size is caught before any allocation
    path = next(folder.iterdir())
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 60000
    ds.save_as(path)
    assert "too large" in message_of(folder)


def test_unknown_series_uid(write):
    folder, _, _ = write(n=3)
    assert "not in this source" in message_of(folder, series_uid="1.2.3")


def test_messages_and_warnings_never_show_patient_fields(write, tmp_path):
    folders = [write(n=n, header=copy.deepcopy(SECRET))[0] for n in (1, 3)]
    (folders[1] / "junk.txt").write_text("junk")
    messages = [message_of(folders[0])]
    both = [(f"{i}-{p.name}", p.read_bytes()) for i, f in enumerate(folders) for p in f.iterdir() if p.suffix == ".dcm"]
    messages.append(message_of(both))
    volume = load_series(folders[1])
    texts = messages + volume.warnings + [repr(volume.info)] + [s.describe() for s in scan(folders[1]).series]
    for text in texts:
        for secret in ("SECRET", "4242", "19010203"):
            assert secret not in text


@pytest.mark.parametrize("modality, multiframe", [("CT", False), ("MR", False), ("MR", True), ("CT", True)])
def test_garbage_that_looks_like_dicom_does_not_crash(write, modality, multiframe):
    folder, _, _ = write(n=3, modality=modality, multiframe=multiframe)
    data = bytearray(sorted(folder.iterdir())[0].read_bytes())
    rng = np.random.default_rng(1)
    for _ in range(100):
        corrupted = bytearray(data)
        for index in rng.integers(132, len(corrupted), size=20):
            corrupted[index] = int(rng.integers(0, 256))
        try:
            load_series([("a.dcm", bytes(corrupted)), ("b.dcm", bytes(data))])
        except IngestError:
            pass
