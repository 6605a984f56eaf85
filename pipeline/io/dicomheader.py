"""The header of an ordinary DICOM image file, parsed up to its pixel data in one pass.

What the reader needs from each file is a few dozen elements before the pixel data; pydicom's
generic reader spends most of a large series' read time on walking every element of every
file. This walks the elements of the common files (a preamble, little-endian, implicit or
explicit VR, compressed or not) over a buffer, keeps the wanted ones as pydicom's own raw
elements (pydicom converts their values, as after `pydicom.dcmread`), and says where the pixel
data start. Anything else (no preamble, big-endian or deflated, a wanted sequence, an unknown
VR, no pixel data, a truncated file) returns None: `pipeline.io.dicom` then reads the file with
pydicom, so the result is the same either way.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

PIXEL_DATA = 0x7FE00010
_FLOAT_PIXELS = (0x7FE00008, 0x7FE00009)  # float and double pixel data: left to pydicom
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_KNOWN_VRS = {vr.value.encode() for vr in VR}
_FIRST_READ = 16384
_MAX_HEADER = 1 << 20  # a header longer than this is read by pydicom
_CHARACTER_SET = 0x00080005
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_NUMBER_TEXT = frozenset(b"0123456789.+-eE \\")


class _Short(Exception):
    """The buffer ends before the element does: read more of the file."""


class _Unusual(Exception):
    """Something this parser leaves to pydicom."""


def read_header(fp: BinaryIO, wanted: set[int]) -> tuple[Dataset, int] | None:
    """The elements of ``wanted`` (tag numbers) of the file at the start of ``fp``, and the
    offset of its PixelData element; None when pydicom must read this file.

    The dataset carries ``file_meta`` and the original encoding as `pydicom.dcmread` sets them.
    """
    size = _FIRST_READ
    data = fp.read(size)
    while True:
        try:
            return _parse(data, wanted)
        except _Short:
            if len(data) < size or size >= _MAX_HEADER:  # the file ends, or the header is unusually long
                return None
            size *= 4
            data += fp.read(size - len(data))
        except (_Unusual, struct.error, ValueError, KeyError):
            return None


def plain_value(element: RawDataElement, vr: str | None):
    """The value pydicom gives a raw element of a plain VR (binary numbers, IS, DS, CS, UI),
    converted without pydicom's machinery (about 50 µs an element, and a reader needs dozens
    per file); ``NotImplemented`` where pydicom must convert it (another VR, an empty or
    big-endian value, a character or number pydicom would judge).

    These VRs are decoded as ASCII whatever the file's character set, by pydicom as here.
    """
    value = element.value
    if not isinstance(value, bytes) or not value or not element.is_little_endian:
        return NotImplemented
    if vr in _BINARY_NUMBERS:
        code = _BINARY_NUMBERS[vr]
        count, rest = divmod(len(value), struct.calcsize(code))
        if rest:
            return NotImplemented
        numbers = struct.unpack(f"<{count}{code}", value)
        return numbers[0] if count == 1 else list(numbers)
    if vr in ("IS", "DS"):
        if not _NUMBER_TEXT.issuperset(value):
            return NotImplemented
        try:
            numbers = [(int if vr == "IS" else float)(part) for part in value.split(b"\\")]
        except ValueError:  # an empty or odd number: pydicom's rules
            return NotImplemented
        return numbers[0] if len(numbers) == 1 else numbers
    if vr in ("CS", "UI") and value.isascii():
        items = value.decode("ascii").rstrip(" \x00").split("\\")
        return items[0] if len(items) == 1 else items
    return NotImplemented


def _parse(data: bytes, wanted: set[int]) -> tuple[Dataset, int]:
    if data[128:132] != b"DICM":
        raise _Unusual
    meta, position = _elements(data, 132, False, None, group=0x0002)
    file_meta = FileMetaDataset(meta)
    syntax = pydicom.uid.UID(_text(meta.get(0x00020010)))
    if syntax == pydicom.uid.ImplicitVRLittleEndian:
        implicit = True
    elif syntax == pydicom.uid.ExplicitVRLittleEndian or (syntax.is_compressed and syntax != pydicom.uid.DeflatedExplicitVRLittleEndian):
        implicit = False
    else:
        raise _Unusual  # big-endian, deflated or unknown: pydicom's reader
    file_meta.set_original_encoding(False, True)
    elements, pixels_at = _elements(data, position, implicit, wanted)
    if pixels_at is None:
        raise _Unusual  # no pixel data: pydicom says what the file holds
    dataset = Dataset(elements)
    encoding = default_encoding
    if _CHARACTER_SET in elements:
        encoding = convert_encodings(convert_raw_data_element(elements[_CHARACTER_SET]).value)
    dataset.set_original_encoding(implicit, True, encoding)
    dataset.file_meta = file_meta
    return dataset, pixels_at


def _text(element: RawDataElement | None) -> str:
    if element is None:
        raise _Unusual
    return element.value.decode("ascii", "replace").strip("\x00 ")


_IMPLICIT = struct.Struct("<HHI")  # group, element, 4-byte length
_EXPLICIT = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length
_LENGTH = struct.Struct("<I")
_VR_NAMES = {vr: vr.decode() for vr in _KNOWN_VRS}


def _element_header(data: bytes, position: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, where the value starts) of the element at ``position``."""
    if position + 8 > len(data):
        raise _Short
    if implicit:
        group, element, length = _IMPLICIT.unpack_from(data, position)
        return group << 16 | element, None, length, position + 8
    group, element, vr, length = _EXPLICIT.unpack_from(data, position)
    if group == 0xFFFE:  # items and delimiters have no VR
        return group << 16 | element, None, _LENGTH.unpack_from(data, position + 4)[0], position + 8
    if vr not in _KNOWN_VRS:
        raise _Unusual  # pydicom guesses here; its guess is the reference
    if vr in _LONG_VRS:
        if position + 12 > len(data):
            raise _Short
        return group << 16 | element, vr, _LENGTH.unpack_from(data, position + 8)[0], position + 12
    return group << 16 | element, vr, length, position + 8


def _elements(data: bytes, position: int, implicit: bool, wanted: set[int] | None,
              group: int | None = None) -> tuple[dict, int | None]:
    """The raw elements from ``position`` on (those of ``wanted``; all when None), until the
    pixel data (their offset returned), the end of ``group`` (the position after it)."""
    found = {}
    end = len(data)
    while True:
        if group is not None and (position + 2 > end or data[position] | data[position + 1] << 8 != group):
            if position + 2 > end:
                raise _Short
            return found, position
        tag, vr, length, start = _element_header(data, position, implicit)
        if tag == PIXEL_DATA:
            return found, position
        if tag in _FLOAT_PIXELS:
            raise _Unusual
        if length == _UNDEFINED:
            if wanted is None or tag in wanted:
                raise _Unusual  # a sequence (or encapsulated value) the caller wants: pydicom's
            position = _skip_sequence(data, start, implicit)
            continue
        position = start + length
        if position > end:
            raise _Short
        if wanted is None or tag in wanted:
            if (vr == b"SQ") or (vr is None and dictionary_VR(tag) == "SQ"):
                raise _Unusual  # a wanted sequence: pydicom parses its items
            tag = BaseTag(tag)
            found[tag] = RawDataElement(tag, None if vr is None else _VR_NAMES[vr], length, data[start:position],
                                        start, implicit, True)


def _skip_sequence(data: bytes, position: int, implicit: bool) -> int:
    """The position after an undefined-length sequence whose items start at ``position``."""
    while True:
        tag, _, length, start = _element_header(data, position, True)
        if tag == _SEQUENCE_END:
            return start
        if tag != _ITEM:
            raise _Unusual  # an undefined-length value that is not a sequence
        position = _skip_item(data, start, implicit) if length == _UNDEFINED else start + length


def _skip_item(data: bytes, position: int, implicit: bool) -> int:
    """The position after an undefined-length item whose elements start at ``position``."""
    while True:
        tag, _, length, start = _element_header(data, position, implicit)
        if tag == _ITEM_END:
            return start
        position = _skip_sequence(data, start, implicit) if length == _UNDEFINED else start + length
