"""Reading DICOM series: `scan` (headers only) and `load_series` (a `Volume`).

A *source* is a folder (searched recursively, files with or without ``.dcm``), a
single file, a list of paths, or a list of ``(name, bytes)`` pairs (an upload).

Geometry comes from the headers only: slices are sorted by their position projected
on the slice normal (never by ``ImagePositionPatient[2]`` or InstanceNumber), the
affine is built from ImageOrientationPatient / ImagePositionPatient / PixelSpacing
(or, for Enhanced multi-frame files, from the per-frame and shared functional
groups), and an irregular stack is resampled on its true slice positions.
"""

from __future__ import annotations

import functools
import io
import os
import struct
from concurrent.futures import ThreadPoolExecutor
import warnings as python_warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, NamedTuple, Sequence, Union

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.valuerep import VR

from pipeline.errors import IngestError
from pipeline.io.dicomheader import plain_value, read_header
from pipeline.volume import SourceImage, Volume, plane_of_normal

PathLike = Union[str, os.PathLike]
Source = Union[PathLike, Sequence[PathLike], Sequence[tuple[str, bytes]]]

#: Largest volume decoded by default (rows x columns x frames, summed over the series):
#: 2**29 voxels is 2 GiB as float32, about 2000 slices of 512 x 512.
DEFAULT_MAX_VOXELS = 2**29

#: The only elements parsed (private and other tags are skipped, which is faster).
_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "ImageType", "InstanceNumber",
    "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "GridFrameOffsetVector", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence", "PixelData",
    # what tells apart the volumes of a 4-D series (see `_one_volume`)
    "EchoTime", "EchoNumbers", "DiffusionBValue", "DiffusionGradientOrientation", "TemporalPositionIdentifier",
    "TriggerTime", "AcquisitionNumber",
    # what a derived object (SR, SEG: pipeline.inference.export) copies or references; never shown
    "StudyInstanceUID", "FrameOfReferenceUID", "PositionReferenceIndicator", "SpecificCharacterSet",
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
    "StudyTime", "ReferringPhysicianName", "LossyImageCompression",
]
_TAG_NUMBERS = [pydicom.tag.Tag(keyword) for keyword in _TAGS]  # converted once, not per file
_WANTED = {int(tag) for tag in _TAG_NUMBERS}
_TAG_OF = dict(zip(_TAGS, _TAG_NUMBERS))
_READ_THREADS = min(4, os.cpu_count() or 1)
LISTED_SERIES = 5  # series named in the error for a source that holds several
#: Companions of images in a data folder (tables, label maps, documents): `scan` does not read them.
SIDECAR_SUFFIXES = (".csv", ".json", ".nii", ".nii.gz", ".txt", ".md")
_SAME_ORIENTATION_COS = np.cos(np.radians(1.0))
_NATIVE_LITTLE_ENDIAN = {
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.ExplicitVRLittleEndian,
}


# --------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class _Item:
    """One file of a source: on disk (``path``) or in memory (``data``)."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    def open(self) -> BinaryIO:
        return open(self.path, "rb") if self.path is not None else io.BytesIO(self.data or b"")


def _items(source: Source) -> list[_Item]:
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise IngestError(f"No files in the folder {root.name}: it holds no DICOM images.")
            return [_Item(str(p.relative_to(root)), path=p) for p in files]
        if root.is_file():
            return [_Item(root.name, path=root)]
        raise IngestError(f"{root} does not exist.")
    items = []
    for entry in source:
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], (bytes, bytearray, memoryview)):
            items.append(_Item(str(entry[0]), data=bytes(entry[1])))
        elif isinstance(entry, (str, os.PathLike)):
            path = Path(entry)
            if not path.is_file():
                raise IngestError(f"{path} is not a file.")
            items.append(_Item(path.name, path=path))
        else:
            raise IngestError("A source must be a folder, a list of file paths or a list of (name, bytes) pairs.")
    return items


# --------------------------------------------------------------------------------------
# Reading one file


class _FileProblem(Exception):
    """A file of a series that cannot be used; becomes a warning unless all files fail."""


def _quiet(function):
    """Silence pydicom's warnings about odd header values: the reader reports what matters."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with python_warnings.catch_warnings():
            python_warnings.simplefilter("ignore")
            return function(*args, **kwargs)

    return wrapper


class _File(NamedTuple):
    """A parsed header (pixels not read) and where its pixel data start."""

    item: _Item
    ds: Dataset
    pixels_at: int  # offset of the PixelData element; -1: only a full pydicom read finds it


_PIXEL_DATA_TAG = {True: b"\xe0\x7f\x10\x00", False: b"\x7f\xe0\x00\x10"}  # by little-endianness


def _read(item: _Item) -> _File | None:
    """Parse the header of one file (up to its pixel data); None when it is not DICOM."""
    try:
        with item.open() as fp:
            parsed = read_header(fp, _WANTED)  # the common files, in one pass; None: pydicom reads it
            if parsed is not None:
                return _File(item, *parsed)
            fp.seek(0)
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_TAG_NUMBERS)
            except InvalidDicomError:
                # No preamble: accept only if it parses to something image-like.
                fp.seek(0)
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True, specific_tags=_TAG_NUMBERS)
                if "SOPClassUID" not in ds and "Rows" not in ds:
                    return None
            _drop_unreadable_elements(ds)
            return _File(item, ds, _pixel_data_offset(fp, ds))
    except (InvalidDicomError, EOFError):
        return None
    except OSError as exc:
        raise _FileProblem(f"{item.name} could not be read ({exc.strerror or exc}).") from None
    except Exception:  # pydicom raises many types on garbage; treat as not DICOM
        return None


_KNOWN_VRS = {vr.value for vr in VR}


def _drop_unreadable_elements(ds: Dataset) -> None:
    """Remove the parsed elements whose value representation is garbage (a damaged file):
    reading them would raise, and a missing element is something the reader already handles."""
    for tag in list(ds.keys()):
        element = ds.get_item(tag)
        vr = element.VR if element is not None else None
        if vr is not None and str(vr) not in _KNOWN_VRS:
            del ds[tag]
        elif vr == "SQ":  # functional groups: the items' elements too
            try:
                items = ds[tag].value
            except Exception:
                del ds[tag]
                continue
            for item in items:
                _drop_unreadable_elements(item)


def _pixel_data_offset(fp: BinaryIO, ds: Dataset) -> int | None:
    """Where the header parse stopped, if the PixelData element starts there."""
    if _syntax(ds) == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return -1  # the stream is compressed as a whole: offsets mean nothing
    position = fp.tell()
    little_endian = getattr(ds, "original_encoding", (None, True))[1] is not False
    return position if fp.read(4) == _PIXEL_DATA_TAG[little_endian] else None


def _syntax(ds: Dataset):
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def _read_all(items: list[_Item]) -> tuple[list[_File], list[str]]:
    """Headers of all image files, and one sentence per file left aside."""
    files, skipped = [], []
    for item in items:
        try:
            file = _read(item)
        except _FileProblem as exc:
            skipped.append(str(exc))
            continue
        if file is None:
            skipped.append(f"{item.name} is not a DICOM file.")
        elif file.pixels_at is None or not _positive(file.ds, "Rows") or not _positive(file.ds, "Columns"):
            skipped.append(f"{item.name} holds no image (no pixel data).")
        else:
            files.append(file)
    return files, skipped


def _positive(ds: Dataset, keyword: str) -> bool:
    value = _header_value(ds, keyword)
    return isinstance(value, int) and value > 0


def _no_images_error(items: list[_Item], skipped: list[str]) -> IngestError:
    if not items:
        return IngestError("No files were given.")
    not_dicom = sum("is not a DICOM file" in s for s in skipped)
    if not_dicom == len(items):
        return IngestError(
            f"None of the {len(items)} file(s) is DICOM (first: {items[0].name})."
            if len(items) > 1
            else f"{items[0].name} is not a DICOM file."
        )
    return IngestError(f"No DICOM image could be read: {skipped[0]}")


# --------------------------------------------------------------------------------------
# Scanning


@dataclass
class SeriesInfo:
    """A series found by `scan`, described from headers only (no pixel decoding)."""

    series_uid: str
    modality: str
    n_files: int
    n_images: int
    rows: int
    columns: int
    plane: str
    files: list[str] = field(default_factory=list)
    pixel_spacing: tuple[float, float] | None = None  # (rows, columns) mm
    slice_spacing: float | None = None  # median distance between slice positions, mm

    def describe(self) -> str:
        return (
            f"{self.series_uid} ({self.modality}, {self.n_images} image{'s' if self.n_images != 1 else ''} of "
            f"{self.rows} x {self.columns}, {self.plane})"
        )


@dataclass
class ScanResult:
    """What `scan` found: the series (largest first), the files left aside, and how many
    companion files (tables, label maps, documents: `SIDECAR_SUFFIXES`) it did not read."""

    series: list[SeriesInfo]
    skipped: list[str]
    sidecars: int = 0


def _series_uid(ds: Dataset) -> str:
    return str(_header_value(ds, "SeriesInstanceUID") or "(no SeriesInstanceUID)")


def _group_by_series(files: list[_File]) -> dict[str, list[_File]]:
    groups: dict[str, list[_File]] = {}
    for file in files:
        groups.setdefault(_series_uid(file.ds), []).append(file)
    return groups


def _describe_group(uid: str, members: list[_File]) -> SeriesInfo:
    first = members[0][1]
    sizes = Counter(_size(ds) for _, ds, _ in members)
    (rows, columns), _ = sizes.most_common(1)[0]
    planes = Counter()
    geometries = [g for _, ds, _ in members for g in _frame_geometries(ds) if g is not None]
    for geometry in geometries:
        planes[plane_of_normal(geometry.normal)] += 1
    slice_spacing = None
    if len(geometries) > 1:
        normal = geometries[0].normal
        steps = np.diff(np.unique(np.round([g.position @ normal for g in geometries], 3)))
        slice_spacing = float(np.median(steps)) if steps.size else None
    return SeriesInfo(
        series_uid=uid,
        modality=str(_header_value(first, "Modality") or "unknown"),
        n_files=len(members),
        n_images=sum(_n_frames(ds) for _, ds, _ in members),
        rows=rows,
        columns=columns,
        plane=planes.most_common(1)[0][0] if planes else "unknown",
        files=[file.item.name for file in members],
        pixel_spacing=geometries[0].pixel_spacing if geometries else None,
        slice_spacing=slice_spacing,
    )


@_quiet
def scan(source: Source) -> ScanResult:
    """Group the DICOM files of a source into series without decoding pixels.

    Args:
        source: a folder, a file, a list of paths or a list of ``(name, bytes)``.

    Returns:
        The series found (largest first) and one sentence per file left aside.
    """
    items = _items(source)
    images = [item for item in items if not item.name.lower().endswith(SIDECAR_SUFFIXES)]
    files, skipped = _read_all(images)
    series = [_describe_group(uid, members) for uid, members in _group_by_series(files).items()]
    series.sort(key=lambda s: (-s.n_images, s.series_uid))
    return ScanResult(series=series, skipped=skipped, sidecars=len(items) - len(images))


# --------------------------------------------------------------------------------------
# Geometry of frames


@dataclass
class _Frame:
    """One 2D image of the series, before pixel decoding."""

    file_index: int
    frame: int
    geometry: SourceImage
    slope: float
    intercept: float
    is_localizer: bool
    instance_number: int
    size: tuple[int, int]
    volume: tuple = ()  # the value of each of `VOLUME_ATTRIBUTES` (None where not given)


def _n_frames(ds: Dataset) -> int:
    try:
        return max(1, int(_header_value(ds, "NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _header_value(ds: Dataset, keyword: str):
    """A header value, converted; None when absent or unreadable (garbage VRs raise).

    Plain values are converted from the raw bytes (`plain_value`): pydicom's own conversion
    was most of the time spent on a large series after its headers were parsed.
    """
    tag = _TAG_OF.get(keyword) or pydicom.tag.Tag(keyword)
    element = ds.get_item(tag)
    if element is None:
        return None
    if isinstance(element, RawDataElement):
        value = plain_value(element, element.VR if element.VR not in (None, "UN") else _vr_of(tag))
        if value is not NotImplemented:
            return value
    try:
        return ds.get(keyword)
    except Exception:
        return None


@functools.lru_cache(maxsize=None)
def _vr_of(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _size(ds: Dataset) -> tuple[int, int]:
    """(Rows, Columns) of a file the reader kept (both checked positive)."""
    return int(_header_value(ds, "Rows")), int(_header_value(ds, "Columns"))


def _image_type(ds: Dataset) -> list[str]:
    value = _header_value(ds, "ImageType") or []
    return [str(v).upper() for v in (value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
                                     else [value])]


def _raw(ds: Dataset, keyword: str):
    """Value of an element without pydicom's conversion (bytes for a not-yet-parsed
    text element: much faster for the few numbers read from every file)."""
    element = ds.get_item(_TAG_OF.get(keyword) or pydicom.tag.Tag(keyword))
    return None if element is None else element.value


def _floats(value, count: int) -> np.ndarray | None:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).strip(b"\x00 ").split(b"\\")
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        return None
    return array


def _group_value(groups: Iterable[Dataset | None], sequence: str, keyword: str):
    """First value of ``keyword`` inside functional-group ``sequence`` of the given groups."""
    for group in groups:
        if group is None or sequence not in group:
            continue
        items = group[sequence].value
        if items and keyword in items[0]:
            return _raw(items[0], keyword)
    return None


def _unit_cosines(iop: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    if iop is None:
        return None
    row, column = iop[:3], iop[3:]
    row_norm, column_norm = np.linalg.norm(row), np.linalg.norm(column)
    if row_norm < 0.5 or column_norm < 0.5:
        return None
    row, column = row / row_norm, column / column_norm
    if abs(row @ column) > 0.05:  # not an orthogonal pair
        return None
    column = column - (row @ column) * row  # remove rounding error in the header
    return row, column / np.linalg.norm(column)


def _functional_groups(ds: Dataset) -> tuple[Dataset | None, Sequence | None]:
    """The shared functional group and the per-frame ones of an enhanced file (None if absent)."""
    shared = _header_value(ds, "SharedFunctionalGroupsSequence")
    return (shared[0] if shared else None), _header_value(ds, "PerFrameFunctionalGroupsSequence")


def _frame_geometries(ds: Dataset) -> list[SourceImage | None]:
    """Geometry of every frame of a file; None for a frame without usable geometry.

    Enhanced multi-frame files keep geometry in PerFrameFunctionalGroupsSequence and
    SharedFunctionalGroupsSequence. Fallback for multi-frame files without per-frame
    positions: frames stacked along the normal from the top-level ImagePositionPatient
    at GridFrameOffsetVector offsets, else SpacingBetweenSlices, else SliceThickness.
    """
    n = _n_frames(ds)
    sop = str(_header_value(ds, "SOPInstanceUID") or "")
    shared, per_frame = _functional_groups(ds)
    per_frame = per_frame if per_frame is not None and len(per_frame) == n else [None] * n

    top_iop = _floats(_raw(ds, "ImageOrientationPatient"), 6)
    top_ipp = _floats(_raw(ds, "ImagePositionPatient"), 3)
    top_spacing = _floats(_raw(ds, "PixelSpacing"), 2)
    offsets = _stack_offsets(ds, n)

    geometries: list[SourceImage | None] = []
    for index, group in enumerate(per_frame):
        groups = (group, shared)
        iop = _floats(_group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        cosines = _unit_cosines(iop if iop is not None else top_iop)
        ipp = _floats(_group_value(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
        spacing = _floats(_group_value(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
        spacing = spacing if spacing is not None else top_spacing
        if cosines is None:
            geometries.append(None)
            continue
        if ipp is None and top_ipp is not None and n == 1:
            ipp = top_ipp
        elif ipp is None and top_ipp is not None and offsets is not None:
            ipp = top_ipp + offsets[index] * np.cross(*cosines)
        if ipp is None or spacing is None or np.any(spacing <= 0):
            geometries.append(None)
            continue
        geometries.append(SourceImage(sop, index, ipp, cosines[0], cosines[1], (float(spacing[0]), float(spacing[1]))))
    return geometries


def _stack_offsets(ds: Dataset, n: int) -> np.ndarray | None:
    if n == 1:
        return None
    grid = _header_value(ds, "GridFrameOffsetVector")
    if grid is not None:
        values = _floats(grid, n)
        if values is not None:
            return values
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        for group in (ds, *(ds.get("SharedFunctionalGroupsSequence") or [])):
            value = group.get(keyword) or _group_value([group], "PixelMeasuresSequence", keyword)
            try:
                step = float(value)
            except (TypeError, ValueError):
                continue
            if step > 0:
                return np.arange(n) * step
    return None


def _rescale(ds: Dataset, group: Dataset | None, shared: Dataset | None) -> tuple[float, float]:
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        value = _group_value((group, shared), "PixelValueTransformationSequence", keyword)
        value = _header_value(ds, keyword) if value is None else value
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = default
        values.append(value if np.isfinite(value) else default)
    slope, intercept = values
    return (slope if slope != 0 else 1.0), intercept


def _frames_of(file_index: int, ds: Dataset) -> list[_Frame | None]:
    image_type = _image_type(ds)
    is_localizer = "LOCALIZER" in image_type
    try:
        instance = int(_header_value(ds, "InstanceNumber") or 0)
    except (TypeError, ValueError):
        instance = 0
    shared, per_frame = _functional_groups(ds)
    size = _size(ds)
    frames: list[_Frame | None] = []
    for index, geometry in enumerate(_frame_geometries(ds)):
        if geometry is None:
            frames.append(None)
            continue
        group = per_frame[index] if per_frame is not None and len(per_frame) > index else None
        slope, intercept = _rescale(ds, group, shared)
        frames.append(_Frame(file_index, index, geometry, slope, intercept, is_localizer, instance, size,
                             _volume_values(ds, group, shared)))
    return frames


#: What tells apart the volumes of a series that holds several at the same positions, in the
#: order they are tried: (what the series is, attribute, where an enhanced file keeps it per frame).
VOLUME_ATTRIBUTES = (
    ("diffusion-weighted", "b-value", "DiffusionBValue", ("MRDiffusionSequence", "DiffusionBValue")),
    ("diffusion-weighted", "gradient direction", "DiffusionGradientOrientation", None),
    ("multi-echo", "echo time", "EchoTime", ("MREchoSequence", "EffectiveEchoTime")),
    ("multi-echo", "echo number", "EchoNumbers", None),
    ("a time series", "temporal position", "TemporalPositionIdentifier", ("FrameContentSequence", "TemporalPositionIndex")),
    ("cardiac-gated", "trigger time", "TriggerTime", None),
    ("several acquisitions", "acquisition number", "AcquisitionNumber", None),
)


def _volume_values(ds: Dataset, group: Dataset | None, shared: Dataset | None) -> tuple:
    """The `VOLUME_ATTRIBUTES` of a frame as text (values converted: some are binary floats)."""
    values = []
    for _, _, keyword, functional in VOLUME_ATTRIBUTES:
        value = None
        if functional:
            sequence, inner = functional
            for source in (group, shared):
                items = source.get(sequence) if source is not None else None
                if items and inner in items[0]:
                    value = items[0].get(inner)
                    break
        if value is None:
            value = _header_value(ds, keyword)  # a malformed value tells no volume apart
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = "\\".join(f"{float(v):g}" if isinstance(v, (int, float)) else str(v) for v in value)
        elif isinstance(value, (int, float)):
            value = f"{float(value):g}"
        values.append(None if value is None or str(value).strip() == "" else str(value).strip())
    return tuple(values)


# --------------------------------------------------------------------------------------
# Pixel decoding


def _decode(file: _File) -> np.ndarray:
    """All frames of a file as an array (frames, rows, columns) of raw stored values.

    Uncompressed little-endian pixels are read straight from the file into the
    array; everything else (compressed, big-endian, deflated) goes through
    pydicom's decoders on a full read of that one file.
    """
    item, ds = file.item, file.ds
    (rows, columns), n = _size(ds), _n_frames(ds)
    syntax = _syntax(ds)
    native = syntax in _NATIVE_LITTLE_ENDIAN or (syntax is None and ds.original_encoding[1] is not False)
    if native and file.pixels_at >= 0:
        raw = _read_native(file, rows, columns, n)
        if raw is not None:
            return raw
    try:
        with item.open() as fp:
            array = pydicom.dcmread(fp, force=True).pixel_array
    except Exception as exc:  # decoders raise assorted types
        name = getattr(syntax, "name", str(syntax))
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "plugin" in reason.lower() or "no pixel data handler" in reason.lower():
            raise _FileProblem(f"{item.name} is compressed as {name}, for which no decoder is installed.") from None
        raise _FileProblem(f"{item.name} could not be decoded ({name}): {reason}") from None
    if array.size != n * rows * columns:
        raise _FileProblem(f"{item.name} decodes to {array.size} pixels instead of {n * rows * columns}.")
    return array.reshape(n, rows, columns)


def _read_native(file: _File, rows: int, columns: int, n: int) -> np.ndarray | None:
    """Uncompressed little-endian integer pixels, read into the array; None to defer to pydicom."""
    ds = file.ds
    bits = int(_header_value(ds, "BitsAllocated") or 16)
    if bits not in (8, 16, 32):
        return None
    signed = int(_header_value(ds, "PixelRepresentation") or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    raw = np.empty((n, rows, columns), dtype=dtype)
    with file.item.open() as fp:
        fp.seek(file.pixels_at)
        header = fp.read(8)
        implicit = _syntax(ds) == pydicom.uid.ImplicitVRLittleEndian or ds.original_encoding[0] is True
        if not implicit and header[4:6] in (b"OB", b"OW", b"UN"):
            header += fp.read(4)  # explicit VR, long form: 2 reserved bytes then a 4-byte length
        length = struct.unpack("<I", header[-4:])[0] if len(header) >= 8 else 0
        if length == 0xFFFFFFFF:
            return None  # encapsulated after all: let pydicom handle it
        received = fp.readinto(memoryview(raw).cast("B"))
    if min(length, received) < raw.nbytes:
        raise _FileProblem(f"{file.item.name} is truncated (pixel data is {min(length, received)} of {raw.nbytes} bytes).")
    stored = int(_header_value(ds, "BitsStored") or bits)
    if 0 < stored < bits:  # bits above BitsStored are not part of the value
        unsigned = dtype.str.replace("i", "u")
        values = raw.view(unsigned) & np.array((1 << stored) - 1, dtype=unsigned)
        if signed:
            shift = bits - stored
            values = (values << np.array(shift, dtype=unsigned)).view(dtype) >> shift
        raw = values
    return raw


# --------------------------------------------------------------------------------------
# Building the volume


@_quiet
def load_series(
    source: Source,
    *,
    series_uid: str | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
) -> Volume:
    """Read one DICOM series into a `Volume` (float32, z/y/x, rescaled values).

    Args:
        source: a folder, a file, a list of paths or a list of ``(name, bytes)``.
        series_uid: which series to read when the source holds several
            (see `scan`); without it, several series are an error.
        max_voxels: refuse series larger than this (rows x columns x frames summed
            over the files), checked from the headers before any decoding.

    Raises:
        IngestError: with a sentence saying what is wrong with the input.
    """
    items = _items(source)
    files, skipped = _read_all(items)
    if not files:
        raise _no_images_error(items, skipped)
    warnings = _skipped_warnings(skipped)

    groups = _group_by_series(files)
    if series_uid is not None:
        if series_uid not in groups:
            raise IngestError(f"Series {series_uid} is not in this source.")
        members = groups[series_uid]
    elif len(groups) > 1:
        described = sorted((_describe_group(uid, m) for uid, m in groups.items()), key=lambda s: -s.n_images)
        more = f"; and {len(described) - LISTED_SERIES} more (scan lists them all)" \
            if len(described) > LISTED_SERIES else ""
        raise IngestError(
            f"This source holds {len(groups)} series; choose one by its SeriesInstanceUID: "
            + "; ".join(s.describe() for s in described[:LISTED_SERIES]) + more + "."
        )
    else:
        members = next(iter(groups.values()))

    total = sum(int(np.prod(_size(ds))) * _n_frames(ds) for _, ds, _ in members)
    if total > max_voxels:
        raise IngestError(
            f"The series is too large: {total:,} voxels in its headers, above the limit of {max_voxels:,}."
        )

    members = _greyscale_only(members, warnings)
    members, duplicates = _drop_repeated_files(members)
    if duplicates:
        warnings.append(f"{duplicates} file(s) appeared twice (same SOPInstanceUID) and were read once.")
    _refuse_mosaic(members)
    frames = _one_volume(_stack_frames(members, warnings), warnings)
    while True:  # decode straight into the sorted stack; drop undecodable files and redo
        stack, positions, duplicates = _sorted_stack(frames, warnings)
        array, problems = _fill(members, stack)
        if not problems:
            break
        warnings.append(
            problems[0] if len(problems) == 1 else f"{len(problems)} files could not be used (first: {problems[0]})"
        )
        failed = {f.file_index for f in stack if f.file_index in problems}
        frames = [f for f in frames if f.file_index not in failed]
        if not frames:
            raise IngestError(next(iter(problems.values())))
    if duplicates:
        warnings.append(f"{duplicates} image(s) at the same position as another one (duplicates) were left out.")
    return _assemble(members, frames, stack, positions, array, warnings, max_voxels)


def _skipped_warnings(skipped: list[str]) -> list[str]:
    if not skipped:
        return []
    if len(skipped) <= 3:
        return [f"Left out: {s}" for s in skipped]
    return [f"Left out {len(skipped)} files that are not DICOM images (first: {skipped[0]})"]


def _greyscale_only(members: list[_File], warnings: list[str]) -> list[_File]:
    kept, colour = [], []
    for file in members:
        item, ds = file.item, file.ds
        photometric = _header_value(ds, "PhotometricInterpretation")
        photometric = "MONOCHROME2" if photometric is None else str(photometric).upper()
        if int(_header_value(ds, "SamplesPerPixel") or 1) != 1 or not photometric.startswith("MONOCHROME"):
            colour.append(f"{item.name} is a colour image ({photometric}); only greyscale CT and MR are supported.")
        else:
            kept.append(file)
    if colour and not kept:
        raise IngestError(colour[0])
    if colour:
        warnings.append(f"{len(colour)} colour image(s) were left out (first: {colour[0]})")
    return kept


def _drop_repeated_files(members: list[_File]) -> tuple[list[_File], int]:
    seen, kept = set(), []
    for file in members:
        key = str(_header_value(file.ds, "SOPInstanceUID") or "") or file.item.name
        if key in seen:
            continue
        seen.add(key)
        kept.append(file)
    return kept, len(members) - len(kept)


def _stack_frames(members: list[_File], warnings: list[str]) -> list[_Frame]:
    """The frames forming the main stack: same orientation and size, scouts left out."""
    frames: list[_Frame] = []
    missing = 0
    for index, (_, ds, _) in enumerate(members):
        for frame in _frames_of(index, ds):
            if frame is None:
                missing += 1
            else:
                frames.append(frame)
    if not frames:
        raise IngestError(
            "The images have no usable geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing)."
        )
    if missing:
        warnings.append(f"{missing} image(s) without usable position or orientation were left out.")

    localizers = [f for f in frames if f.is_localizer]
    if localizers and len(localizers) < len(frames):
        frames = [f for f in frames if not f.is_localizer]
        warnings.append(f"{len(localizers)} localizer (scout) image(s) were left out.")

    def key(f: _Frame):
        g = f.geometry
        return f.size, tuple(round(float(v), 2) for v in (*g.row_cosine, *g.column_cosine))

    keys = [key(f) for f in frames]
    dominant = Counter(keys).most_common(1)[0][0]
    dominant_size = dominant[0]
    reference = frames[keys.index(dominant)].geometry
    spacing = np.asarray(reference.pixel_spacing)

    def belongs(f: _Frame) -> bool:
        g = f.geometry
        return (
            f.size == dominant_size
            and g.row_cosine @ reference.row_cosine > _SAME_ORIENTATION_COS
            and g.column_cosine @ reference.column_cosine > _SAME_ORIENTATION_COS
            and abs(g.pixel_spacing[0] - spacing[0]) <= 0.01 * spacing[0]
            and abs(g.pixel_spacing[1] - spacing[1]) <= 0.01 * spacing[1]
        )

    kept = [f for f in frames if belongs(f)]
    if len(kept) < len(frames):
        warnings.append(
            f"{len(frames) - len(kept)} image(s) of another orientation, size or pixel spacing "
            "(scouts or localizers) were left out."
        )
    return kept


def _refuse_mosaic(members: list[_File]) -> None:
    """A Siemens mosaic tiles a whole volume in each image: read as slices, it is garbage."""
    mosaics = sum("MOSAIC" in _image_type(ds) for _, ds, _ in members)
    if mosaics:
        raise IngestError(f"The series is a Siemens mosaic ({mosaics} image(s), each tiling many slices in one "
                          "picture), which cannot be read as a volume: convert it to one image per slice first "
                          "(e.g. with dcm2niix, or the scanner's export).")


def _one_volume(frames: list[_Frame], warnings: list[str]) -> list[_Frame]:
    """The frames of one volume, when the series holds several at the same positions
    (diffusion, multi-echo, dynamic, repeated acquisitions): the first by the attribute that
    tells them apart, with a warning naming what the series is and what was kept."""
    normal = frames[0].geometry.normal
    positions = [round(float(f.geometry.position @ normal), 2) for f in frames]
    if len(set(positions)) == len(positions):
        return frames
    for index, (kind, attribute, _, _) in enumerate(VOLUME_ATTRIBUTES):
        groups: dict[str | None, list[int]] = {}
        for k, frame in enumerate(frames):
            groups.setdefault(frame.volume[index], []).append(k)
        if len(groups) < 2 or not all(len({positions[k] for k in g}) == len(g) for g in groups.values()):
            continue
        values = sorted(groups, key=_volume_order)
        chosen = groups[values[0]]
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        warnings.append(f"The series holds {len(groups)} volumes at the same positions ({kind}; {attribute}s "
                        f"{shown}); only the first, {attribute} {values[0]} ({len(chosen)} images), was read.")
        return [frames[k] for k in chosen]
    repeats = Counter(positions).most_common(1)[0][1]
    warnings.append(f"Some positions hold up to {repeats} images and no header (echo, diffusion, temporal "
                    "position, trigger time, acquisition number) tells them apart: the series may hold several "
                    "volumes; the first image at each position was read.")
    return frames


def _volume_order(value: str | None):
    """Volumes in their natural order: by number where the values are numbers."""
    if value is None:
        return (2, 0.0, "")
    try:
        return (0, float(value.split("\\")[0]), value)
    except ValueError:
        return (1, 0.0, value)


def _sorted_stack(frames: list[_Frame], warnings: list[str]) -> tuple[list[_Frame], np.ndarray, int]:
    """Frames sorted along the slice normal, one per position; their positions; duplicates dropped."""
    normal = frames[0].geometry.normal
    frames.sort(key=lambda f: (float(f.geometry.position @ normal), f.instance_number, f.geometry.sop_uid, f.frame))
    positions = np.array([f.geometry.position @ normal for f in frames])
    unique = _unique_positions(positions)
    if len(frames) == 1:
        why = f" ({warnings[-1][:-1]})" if warnings else ""
        raise IngestError(f"The series has one usable image only{why}; a 3D volume needs at least two slices.")
    if len(unique) == 1:
        raise IngestError(f"All {len(frames)} images of the series are at the same position; it is not a 3D volume.")
    return [frames[i] for i in unique], positions[unique], len(frames) - len(unique)


def _fill(members: list[_File], stack: list[_Frame]) -> tuple[np.ndarray, dict[int, str]]:
    """Decode the files of the stack into one float32 array, rescaled slice by slice.

    Files are read by a few threads: reading and numpy's casts release the GIL.
    Returns the array and, by file index, the problem of each file that failed.
    """
    array = np.empty((len(stack), *stack[0].size), dtype=np.float32)
    slots: dict[int, list[tuple[int, _Frame]]] = {}
    for k, frame in enumerate(stack):
        slots.setdefault(frame.file_index, []).append((k, frame))

    def decode(index: int) -> tuple[int, str | None]:
        try:
            raw = _decode(members[index])
        except _FileProblem as exc:
            return index, str(exc)
        for k, frame in slots[index]:
            if frame.slope != 1.0:
                np.multiply(raw[frame.frame], np.float32(frame.slope), out=array[k], dtype=np.float32)
                array[k] += np.float32(frame.intercept)
            else:
                np.add(raw[frame.frame], np.float32(frame.intercept), out=array[k], dtype=np.float32)
        return index, None

    workers = min(_READ_THREADS, len(slots))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(decode, slots))
    else:
        results = [decode(index) for index in slots]
    return array, {index: problem for index, problem in results if problem}


def _assemble(
    members: list[_File],
    frames: list[_Frame],
    stack: list[_Frame],
    positions: np.ndarray,
    array: np.ndarray,
    warnings: list[str],
    max_voxels: int,
) -> Volume:
    reference = stack[0].geometry
    normal = reference.normal
    step_vector = _step_vector(stack, positions, reference, warnings)
    array, positions, spacing = _regular_slices(array, positions, warnings, max_voxels)

    affine = np.eye(4)
    affine[:3, 0] = step_vector * spacing
    affine[:3, 1] = reference.column_cosine * reference.pixel_spacing[0]
    affine[:3, 2] = reference.row_cosine * reference.pixel_spacing[1]
    affine[:3, 3] = stack[0].geometry.position

    first = members[stack[0].file_index].ds
    syntaxes = sorted({str(getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "unknown"))
                       for _, ds, _ in members if hasattr(ds, "file_meta")})
    info = {
        "rows": _size(first)[0],
        "columns": _size(first)[1],
        "n_files": len({f.file_index for f in stack}),
        "n_images": len(stack),
        "plane": plane_of_normal(normal),
        "source_spacing": (float(np.median(np.diff(positions))) if len(positions) > 1 else 0.0,
                           *reference.pixel_spacing),
        "transfer_syntaxes": syntaxes,
        "multiframe": any(_n_frames(ds) > 1 for _, ds, _ in members),
    }
    return Volume(
        array=array,
        affine=affine,
        modality=str(_header_value(first, "Modality") or "unknown"),
        series_uid=_series_uid(first),
        sources={(f.geometry.sop_uid, f.frame): f.geometry for f in frames},
        warnings=warnings,
        info=info,
        source_headers=tuple(members[index].ds for index in dict.fromkeys(f.file_index for f in stack)),
    ).as_read()


def _unique_positions(positions: np.ndarray) -> list[int]:
    """Indices of the first image at each distinct position (positions sorted)."""
    steps = np.diff(positions)
    moving = steps[steps > 1e-3]
    tolerance = max(1e-3, 0.01 * float(np.median(moving))) if moving.size else 1e-3
    keep = [0]
    for i in range(1, len(positions)):
        if positions[i] - positions[keep[-1]] > tolerance:
            keep.append(i)
    return keep


def _step_vector(stack: list[_Frame], positions: np.ndarray, reference: SourceImage, warnings: list[str]) -> np.ndarray:
    """Patient displacement per mm along the normal, fitted on all slice positions.

    Equals the normal for an ordinary stack; has an in-plane part for a sheared
    stack (CT gantry tilt), which the affine then represents exactly.
    """
    origins = np.array([f.geometry.position for f in stack])
    distance = positions - positions[0]
    offsets = origins - origins[0]
    vector = (distance @ offsets) / (distance @ distance)
    residual = np.abs(offsets - np.outer(distance, vector)).max()
    if residual > 0.5 * min(reference.pixel_spacing):
        warnings.append(
            f"Slice positions do not lie on a straight line (up to {residual:.1f} mm off); "
            "the geometry uses the best-fitting line."
        )
    tilt = float(np.degrees(np.arccos(min(1.0, 1.0 / np.linalg.norm(vector)))))
    if tilt > 0.5:
        warnings.append(f"The slices are sheared by {tilt:.1f} degrees (gantry tilt); the affine includes the shear.")
    return vector


def _regular_slices(
    array: np.ndarray, positions: np.ndarray, warnings: list[str], max_voxels: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Check slice spacing; resample along z on the true positions when it is not regular."""
    steps = np.diff(positions)
    median = float(np.median(steps))
    span = float(positions[-1] - positions[0])
    if np.all(np.abs(steps - median) <= max(0.05 * median, 0.01)):
        return array, positions, span / (len(positions) - 1)

    n = int(round(span / median)) + 1
    if n > 2 * len(positions) or n * array[0].size > max_voxels:
        raise IngestError(
            f"The slices are too sparse to form a volume: {len(positions)} slices spread over {span:.0f} mm "
            f"(gaps up to {steps.max():.1f} mm where most slices are {median:.2f} mm apart)."
        )
    step, grid = _grid_step(positions, median, array[0].size, max_voxels)
    n = int(round(span / step)) + 1
    grid = f"the volume was resampled on the true slice positions to {grid} ({span / (n - 1):.3g} mm)"
    gaps = steps > 1.5 * median
    if gaps.any():
        missing = int(sum(round(s / median) - 1 for s in steps[gaps]))
        warnings.append(f"{missing} slice(s) missing: {int(gaps.sum())} gap(s) up to {steps.max():.2f} mm where "
                        f"slices are {median:.2f} mm apart; {grid}.")
    else:
        warnings.append(f"Irregular slice spacing ({steps.min():.2f} to {steps.max():.2f} mm); {grid}.")
    targets = positions[0] + np.arange(n) * (span / (n - 1))
    upper = np.clip(np.searchsorted(positions, targets, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    weight = ((targets - positions[lower]) / (positions[upper] - positions[lower])).astype(np.float32)
    resampled = np.empty((n, *array.shape[1:]), dtype=np.float32)
    for k in range(n):
        np.multiply(array[lower[k]], 1.0 - weight[k], out=resampled[k])
        resampled[k] += weight[k] * array[upper[k]]
    return resampled, targets, span / (n - 1)


def _grid_step(positions: np.ndarray, median: float, slice_voxels: int, max_voxels: int) -> tuple[float, str]:
    """The step of the regular grid an irregular stack is resampled on, and its name: the
    largest that holds every original slice (the finest step or a half, third or quarter of
    it), so that no original slice is interpolated; else the finest step, which keeps the
    finest detail; either only while it at most doubles the slices; else the median step."""
    offsets = positions - positions[0]
    span, finest = float(offsets[-1]), float(np.diff(positions).min())
    tolerance = max(0.01, 0.02 * finest)

    def affordable(step: float, growth: float) -> bool:
        n = span / step + 1
        return n <= growth * len(positions) and n * slice_voxels <= max_voxels

    for divisor in (1, 2, 3, 4):
        step = finest / divisor
        if np.abs(offsets / step - np.round(offsets / step)).max() * step <= tolerance and affordable(step, 2.0):
            return step, "a regular grid that holds every original slice"
    if affordable(finest, 2.0):
        return finest, "a regular grid at the finest spacing"
    return median, "a regular grid at the median spacing"
