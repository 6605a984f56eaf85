"""The one-pass header parser (`pipeline.io.dicomheader`): on every file it accepts, the same
elements, values, encoding and pixel-data offset as pydicom's reader; the files it declines are
the ones pydicom must read (and the series reads the same either way)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest

import pipeline.io.dicom as dicom
from helpers import PYDICOM_FILES
from pipeline.io.dicomheader import plain_value, read_header
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag


def pydicom_header(path: Path) -> tuple[pydicom.Dataset, int | None]:
    with open(path, "rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=dicom._TAG_NUMBERS)
        return ds, dicom._pixel_data_offset(fp, ds)


def values(ds: pydicom.Dataset) -> dict:
    return {tag: ds[tag].value for tag in ds.keys()}


def dicom_files() -> list[Path]:
    found = []
    for path in sorted(PYDICOM_FILES.rglob("*")):
        if path.is_file() and path.suffix.lower() in (".dcm", "") and path.stat().st_size < 5_000_000:
            try:
                pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            found.append(path)
    return found


FILES = dicom_files()


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_an_accepted_header_is_the_one_pydicom_reads(path):
    header = parsed(path)
    if header is None:
        return  # left to pydicom: the reader's result is pydicom's by construction
    ds, pixels_at = header
    reference, reference_at = pydicom_header(path)
    assert values(ds) == values(reference)
    assert pixels_at == reference_at
    assert ds.original_encoding == reference.original_encoding
    assert ds.file_meta.TransferSyntaxUID == reference.file_meta.TransferSyntaxUID


def parsed(path: Path):
    with open(path, "rb") as fp:
        return read_header(fp, dicom._WANTED)


def pydicom_value(ds: pydicom.Dataset, keyword: str):
    try:
        return ds.get(keyword)
    except Exception:  # a garbage value: the reader treats it as absent
        return None


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_the_readers_header_values_are_pydicoms(path):
    reference, _ = pydicom_header(path)
    datasets = [pydicom_header(path)[0]] + ([parsed(path)[0]] if parsed(path) is not None else [])
    for ds in datasets:
        for keyword in dicom._TAGS:
            if keyword != "PixelData":
                expected = pydicom_value(reference, keyword)
                value = dicom._header_value(ds, keyword)
                assert value == expected and isinstance(value, float) == isinstance(expected, float), keyword


def raw(vr: str | None, value: bytes, little_endian: bool = True, tag: str = "InstanceNumber") -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, little_endian)


def test_plain_values_are_converted_and_the_others_left_to_pydicom():
    assert plain_value(raw("IS", b"12 "), "IS") == 12
    assert plain_value(raw("DS", b"0.45\\0.5 "), "DS") == [0.45, 0.5]
    assert plain_value(raw("US", b"\x00\x02"), "US") == 512
    assert plain_value(raw("CS", b"ORIGINAL\\PRIMARY "), "CS") == ["ORIGINAL", "PRIMARY"]
    assert plain_value(raw("UI", b"1.2.3\x00"), "UI") == "1.2.3"
    declined = [
        raw("IS", b"1A"), raw("IS", b"1.5"), raw("IS", b""), raw("DS", b"NaN"), raw("DS", b"1\\\\2"),
        raw("US", b"\x00\x02", little_endian=False), raw("US", b"\x00\x02\x00"), raw("CS", "Ä".encode()),
        raw("PN", b"DOE^JOHN", tag="PatientName"),
    ]
    for element in declined:
        assert plain_value(element, element.VR) is NotImplemented, element


def test_common_files_are_parsed_and_the_unusual_ones_left_to_pydicom():
    accepted = {p.name for p in FILES if parsed(p) is not None}
    assert {"CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm"} <= accepted  # explicit, compressed, implicit
    assert not {"MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm"} & accepted  # big-endian, deflated, no preamble
    assert len(accepted) >= 0.5 * len(FILES)


def test_a_truncated_or_garbled_header_is_left_to_pydicom():
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    assert read_header(io.BytesIO(data[:600]), dicom._WANTED) is None  # ends inside the header
    garbled = bytearray(data)
    at = data.index(b"\x28\x00\x10\x00US")  # Rows, explicit VR
    garbled[at + 4:at + 6] = b"ZZ"
    assert read_header(io.BytesIO(bytes(garbled)), dicom._WANTED) is None


def test_a_demo_series_reads_the_same_through_either_parser(demo, monkeypatch):
    root = demo[0]
    folder = next(p for p in sorted((root / "series").iterdir()) if p.is_dir())
    fast = dicom.load_series(folder)
    monkeypatch.setattr(dicom, "read_header", lambda fp, wanted: None)
    reference = dicom.load_series(folder)
    np.testing.assert_array_equal(fast.array, reference.array)
    np.testing.assert_array_equal(fast.affine, reference.affine)
    assert fast.info == reference.info and fast.warnings == reference.warnings
