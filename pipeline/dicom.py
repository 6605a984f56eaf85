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
import warnings as python_warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipeline.errors import IngestError
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
]
_TAG_NUMBERS = [pydicom.tag.Tag(keyword) for keyword in _TAGS]  # converted once, not per file
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


def _read(item: _Item, stop_before_pixels: bool) -> Dataset | None:
    """Parse one file; None when it is not DICOM at all."""
    try:
        with item.open() as fp:
            try:
                return pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, specific_tags=_TAG_NUMBERS)
            except InvalidDicomError:
                # No preamble: accept only if it parses to something image-like.
                fp.seek(0)
                ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, force=True, specific_tags=_TAG_NUMBERS)
                return ds if "SOPClassUID" in ds or "Rows" in ds else None
    except (InvalidDicomError, EOFError):
        return None
    except OSError as exc:
        raise _FileProblem(f"{item.name} could not be read ({exc.strerror or exc}).") from None
    except Exception:  # pydicom raises many types on garbage; treat as not DICOM
        return None


def _read_all(items: list[_Item], stop_before_pixels: bool) -> tuple[list[tuple[_Item, Dataset]], list[str]]:
    datasets, skipped = [], []
    for item in items:
        try:
            ds = _read(item, stop_before_pixels)
        except _FileProblem as exc:
            skipped.append(str(exc))
            continue
        if ds is None:
            skipped.append(f"{item.name} is not a DICOM file.")
        elif "Rows" not in ds or "Columns" not in ds or (not stop_before_pixels and "PixelData" not in ds):
            skipped.append(f"{item.name} holds no image (no pixel data).")
        else:
            datasets.append((item, ds))
    return datasets, skipped


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

    def describe(self) -> str:
        return (
            f"{self.series_uid} ({self.modality}, {self.n_images} image{'s' if self.n_images != 1 else ''} of "
            f"{self.rows} x {self.columns}, {self.plane})"
        )


@dataclass
class ScanResult:
    """What `scan` found: the series (largest first) and the files left aside."""

    series: list[SeriesInfo]
    skipped: list[str]


def _series_uid(ds: Dataset) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "(no SeriesInstanceUID)")


def _group_by_series(datasets: list[tuple[_Item, Dataset]]) -> dict[str, list[tuple[_Item, Dataset]]]:
    groups: dict[str, list[tuple[_Item, Dataset]]] = {}
    for item, ds in datasets:
        groups.setdefault(_series_uid(ds), []).append((item, ds))
    return groups


def _describe_group(uid: str, members: list[tuple[_Item, Dataset]]) -> SeriesInfo:
    first = members[0][1]
    sizes = Counter((int(ds.Rows), int(ds.Columns)) for _, ds in members)
    (rows, columns), _ = sizes.most_common(1)[0]
    planes = Counter()
    for _, ds in members:
        for geometry in _frame_geometries(ds):
            if geometry is not None:
                planes[plane_of_normal(np.cross(geometry.row_cosine, geometry.column_cosine))] += 1
                break
    return SeriesInfo(
        series_uid=uid,
        modality=str(first.get("Modality", "") or "unknown"),
        n_files=len(members),
        n_images=sum(_n_frames(ds) for _, ds in members),
        rows=rows,
        columns=columns,
        plane=planes.most_common(1)[0][0] if planes else "unknown",
        files=[item.name for item, _ in members],
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
    datasets, skipped = _read_all(items, stop_before_pixels=True)
    series = [_describe_group(uid, members) for uid, members in _group_by_series(datasets).items()]
    series.sort(key=lambda s: (-s.n_images, s.series_uid))
    return ScanResult(series=series, skipped=skipped)


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


def _n_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _raw(ds: Dataset, keyword: str):
    """Value of an element without pydicom's conversion (bytes for a not-yet-parsed
    text element: much faster for the few numbers read from every file)."""
    element = ds.get_item(keyword) if keyword in ds else None
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


def _frame_geometries(ds: Dataset) -> list[SourceImage | None]:
    """Geometry of every frame of a file; None for a frame without usable geometry.

    Enhanced multi-frame files keep geometry in PerFrameFunctionalGroupsSequence and
    SharedFunctionalGroupsSequence. Fallback for multi-frame files without per-frame
    positions: frames stacked along the normal from the top-level ImagePositionPatient
    at GridFrameOffsetVector offsets, else SpacingBetweenSlices, else SliceThickness.
    """
    n = _n_frames(ds)
    sop = str(ds.get("SOPInstanceUID", "") or "")
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
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
    grid = ds.get("GridFrameOffsetVector")
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
        value = ds.get(keyword) if value is None else value
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = default
        values.append(value if np.isfinite(value) else default)
    slope, intercept = values
    return (slope if slope != 0 else 1.0), intercept


def _frames_of(file_index: int, ds: Dataset) -> list[_Frame | None]:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    is_localizer = "LOCALIZER" in image_type
    try:
        instance = int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        instance = 0
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None
    size = (int(ds.Rows), int(ds.Columns))
    frames: list[_Frame | None] = []
    for index, geometry in enumerate(_frame_geometries(ds)):
        if geometry is None:
            frames.append(None)
            continue
        group = per_frame[index] if per_frame is not None and len(per_frame) > index else None
        slope, intercept = _rescale(ds, group, shared)
        frames.append(_Frame(file_index, index, geometry, slope, intercept, is_localizer, instance, size))
    return frames


# --------------------------------------------------------------------------------------
# Pixel decoding


def _decode(item: _Item, ds: Dataset) -> np.ndarray:
    """All frames of a file as an array (frames, rows, columns), raw stored values."""
    rows, columns, n = int(ds.Rows), int(ds.Columns), _n_frames(ds)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax in _NATIVE_LITTLE_ENDIAN:
        raw = _decode_native(item, ds, rows, columns, n)
        if raw is not None:
            return raw
    try:
        array = ds.pixel_array
    except Exception as exc:  # decoders raise assorted types
        name = getattr(syntax, "name", str(syntax))
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "plugin" in reason.lower() or "no pixel data handler" in reason.lower():
            raise _FileProblem(f"{item.name} is compressed as {name}, for which no decoder is installed.") from None
        raise _FileProblem(f"{item.name} could not be decoded ({name}): {reason}") from None
    return array.reshape(n, rows, columns)


def _decode_native(item: _Item, ds: Dataset, rows: int, columns: int, n: int) -> np.ndarray | None:
    """Fast path for uncompressed little-endian integer pixels; None to defer to pydicom."""
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if bits not in (8, 16, 32) or "PixelData" not in ds:
        return None
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    expected = rows * columns * n * dtype.itemsize
    data = ds.PixelData
    if len(data) < expected:
        raise _FileProblem(f"{item.name} is truncated (pixel data is {len(data)} of {expected} bytes).")
    raw = np.frombuffer(data, dtype=dtype, count=rows * columns * n).reshape(n, rows, columns)
    stored = int(ds.get("BitsStored", bits) or bits)
    if 0 < stored < bits:  # bits above BitsStored are not part of the value
        values = raw.view(dtype.str.replace("i", "u")) & np.array((1 << stored) - 1, dtype=dtype.str.replace("i", "u"))
        if signed:
            shift = bits - stored
            values = (values << np.array(shift, dtype=values.dtype)).view(dtype) >> shift
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
    datasets, skipped = _read_all(items, stop_before_pixels=False)
    if not datasets:
        raise _no_images_error(items, skipped)
    warnings = _skipped_warnings(skipped)

    groups = _group_by_series(datasets)
    if series_uid is not None:
        if series_uid not in groups:
            raise IngestError(f"Series {series_uid} is not in this source.")
        members = groups[series_uid]
    elif len(groups) > 1:
        described = sorted((_describe_group(uid, m) for uid, m in groups.items()), key=lambda s: -s.n_images)
        raise IngestError(
            f"This source holds {len(groups)} series; choose one: "
            + "; ".join(s.describe() for s in described)
            + "."
        )
    else:
        members = next(iter(groups.values()))

    total = sum(int(ds.Rows) * int(ds.Columns) * _n_frames(ds) for _, ds in members)
    if total > max_voxels:
        raise IngestError(
            f"The series is too large: {total:,} voxels in its headers, above the limit of {max_voxels:,}."
        )

    members = _greyscale_only(members, warnings)
    members, duplicates = _drop_repeated_files(members)
    if duplicates:
        warnings.append(f"{duplicates} file(s) appeared twice (same SOPInstanceUID) and were read once.")
    frames = _stack_frames(members, warnings)
    pixels = _decode_files(members, {f.file_index for f in frames}, warnings)
    frames = [f for f in frames if f.file_index in pixels]
    if not frames:
        raise IngestError(f"No image of the series could be decoded: {warnings[-1]}")
    return _assemble(members, frames, pixels, warnings, max_voxels)


def _skipped_warnings(skipped: list[str]) -> list[str]:
    if not skipped:
        return []
    if len(skipped) <= 3:
        return [f"Left out: {s}" for s in skipped]
    return [f"Left out {len(skipped)} files that are not DICOM images (first: {skipped[0]})"]


def _greyscale_only(members: list[tuple[_Item, Dataset]], warnings: list[str]) -> list[tuple[_Item, Dataset]]:
    kept, colour = [], []
    for item, ds in members:
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or not photometric.startswith("MONOCHROME"):
            colour.append(f"{item.name} is a colour image ({photometric}); only greyscale CT and MR are supported.")
        else:
            kept.append((item, ds))
    if colour and not kept:
        raise IngestError(colour[0])
    if colour:
        warnings.append(f"{len(colour)} colour image(s) were left out (first: {colour[0]})")
    return kept


def _drop_repeated_files(members: list[tuple[_Item, Dataset]]) -> tuple[list[tuple[_Item, Dataset]], int]:
    seen, kept = set(), []
    for item, ds in members:
        key = str(ds.get("SOPInstanceUID", "")) or item.name
        if key in seen:
            continue
        seen.add(key)
        kept.append((item, ds))
    return kept, len(members) - len(kept)


def _stack_frames(members: list[tuple[_Item, Dataset]], warnings: list[str]) -> list[_Frame]:
    """The frames forming the main stack: same orientation and size, scouts left out."""
    frames: list[_Frame] = []
    missing = 0
    for index, (_, ds) in enumerate(members):
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
        return f.size, tuple(np.round(np.concatenate([f.geometry.row_cosine, f.geometry.column_cosine]), 2))

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


def _decode_files(
    members: list[tuple[_Item, Dataset]], needed: set[int], warnings: list[str]
) -> dict[int, np.ndarray]:
    pixels, problems = {}, []
    for index in sorted(needed):
        item, ds = members[index]
        try:
            pixels[index] = _decode(item, ds)
        except _FileProblem as exc:
            problems.append(str(exc))
    if problems and not pixels:
        raise IngestError(problems[0])
    if problems:
        warnings.append(
            problems[0] if len(problems) == 1 else f"{len(problems)} files could not be used (first: {problems[0]})"
        )
    return pixels


def _assemble(
    members: list[tuple[_Item, Dataset]],
    frames: list[_Frame],
    pixels: dict[int, np.ndarray],
    warnings: list[str],
    max_voxels: int,
) -> Volume:
    reference = frames[0].geometry
    normal = reference.normal
    frames.sort(key=lambda f: (float(f.geometry.position @ normal), f.instance_number, f.geometry.sop_uid, f.frame))
    positions = np.array([f.geometry.position @ normal for f in frames])

    unique = _unique_positions(positions)
    if len(frames) == 1:
        why = f" ({warnings[-1][:-1]})" if warnings else ""
        raise IngestError(f"The series has one usable image only{why}; a 3D volume needs at least two slices.")
    if len(unique) == 1:
        raise IngestError(f"All {len(frames)} images of the series are at the same position; it is not a 3D volume.")
    if len(unique) < len(frames):
        warnings.append(
            f"{len(frames) - len(unique)} image(s) at the same position as another one (duplicates) were left out."
        )
    stack = [frames[i] for i in unique]
    positions = positions[unique]

    array = np.empty((len(stack), *stack[0].size), dtype=np.float32)
    for k, frame in enumerate(stack):
        array[k] = pixels[frame.file_index][frame.frame]
    slopes = np.array([f.slope for f in stack], dtype=np.float32)[:, None, None]
    intercepts = np.array([f.intercept for f in stack], dtype=np.float32)[:, None, None]
    if np.any(slopes != 1):
        array *= slopes
    if np.any(intercepts != 0):
        array += intercepts

    step_vector = _step_vector(stack, positions, reference, warnings)
    array, positions, spacing = _regular_slices(array, positions, warnings, max_voxels)

    affine = np.eye(4)
    affine[:3, 0] = step_vector * spacing
    affine[:3, 1] = reference.column_cosine * reference.pixel_spacing[0]
    affine[:3, 2] = reference.row_cosine * reference.pixel_spacing[1]
    affine[:3, 3] = stack[0].geometry.position

    first = members[stack[0].file_index][1]
    syntaxes = sorted({str(getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "unknown"))
                       for _, ds in members if hasattr(ds, "file_meta")})
    info = {
        "rows": int(first.Rows),
        "columns": int(first.Columns),
        "n_files": len({f.file_index for f in stack}),
        "n_images": len(stack),
        "plane": plane_of_normal(normal),
        "source_spacing": (float(np.median(np.diff(positions))) if len(positions) > 1 else 0.0,
                           *reference.pixel_spacing),
        "transfer_syntaxes": syntaxes,
        "multiframe": any(_n_frames(ds) > 1 for _, ds in members),
    }
    return Volume(
        array=array,
        affine=affine,
        modality=str(first.get("Modality", "") or "unknown"),
        series_uid=_series_uid(first),
        sources={(f.geometry.sop_uid, f.frame): f.geometry for f in frames},
        warnings=warnings,
        info=info,
    )


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
    gaps = steps > 1.5 * median
    if gaps.any():
        missing = int(sum(round(s / median) - 1 for s in steps[gaps]))
        warnings.append(
            f"{missing} slice(s) missing: {int(gaps.sum())} gap(s) up to {steps.max():.2f} mm where slices are "
            f"{median:.2f} mm apart; the volume was resampled to a regular grid on the true slice positions."
        )
    else:
        warnings.append(
            f"Irregular slice spacing ({steps.min():.2f} to {steps.max():.2f} mm); the volume was resampled "
            "to a regular grid on the true slice positions."
        )
    targets = positions[0] + np.arange(n) * (span / (n - 1))
    upper = np.clip(np.searchsorted(positions, targets, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    weight = ((targets - positions[lower]) / (positions[upper] - positions[lower])).astype(np.float32)
    resampled = np.empty((n, *array.shape[1:]), dtype=np.float32)
    for k in range(n):
        np.multiply(array[lower[k]], 1.0 - weight[k], out=resampled[k])
        resampled[k] += weight[k] * array[upper[k]]
    return resampled, targets, span / (n - 1)
