"""Writing image series as real DICOM files (the demo generator, tests and benchmarks).

One file per slice (CT/MR Image Storage) or one Enhanced multi-frame file with its
geometry in functional groups, uncompressed or compressed (RLE, JPEG 2000 lossless,
and whatever other encoder pydicom has installed). UIDs are derived from a seed so
that the same call writes the same bytes. Files are written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from pipeline.io.iod import (add_common_modules, add_ct_image, add_enhanced_image, add_mr_image, frame_content,
                             protocol_of, shared_acquisition_groups)

SOP_CLASSES = {
    ("CT", False): "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    ("MR", False): "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    ("CT", True): "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    ("MR", True): "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
}
UID_PREFIX = "1.2.826.0.1.3680043.10.1234."  # project-local root for synthetic data


def derived_uid(*parts: object) -> str:
    """A valid, deterministic UID derived from ``parts``."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts])


@dataclass
class SeriesGeometry:
    """Where the slices of a series lie in patient space (LPS, mm).

    Attributes:
        positions: (n, 3) ImagePositionPatient of each slice, in file order.
        row_cosine: direction of increasing column index.
        column_cosine: direction of increasing row index.
        pixel_spacing: (between rows, between columns).
    """

    positions: np.ndarray
    row_cosine: Sequence[float]
    column_cosine: Sequence[float]
    pixel_spacing: tuple[float, float]

    @classmethod
    def regular(
        cls,
        n_slices: int,
        row_cosine: Sequence[float] = (1, 0, 0),
        column_cosine: Sequence[float] = (0, 1, 0),
        pixel_spacing: tuple[float, float] = (1.0, 1.0),
        slice_spacing: float = 1.0,
        origin: Sequence[float] = (0, 0, 0),
    ) -> "SeriesGeometry":
        """Evenly spaced slices along the normal (row x column cosine)."""
        normal = np.cross(row_cosine, column_cosine)
        positions = np.asarray(origin, float) + np.outer(np.arange(n_slices) * slice_spacing, normal)
        return cls(positions, row_cosine, column_cosine, pixel_spacing)

    @property
    def slice_spacing(self) -> float:
        normal = np.cross(self.row_cosine, self.column_cosine)
        projected = np.sort(self.positions @ normal)
        return float(np.median(np.diff(projected))) if len(projected) > 1 else 1.0


@dataclass
class SeriesHeader:
    """Header fields of a synthetic series (patient fields are fake on purpose)."""

    modality: str = "CT"
    series_uid: str | None = None
    study_uid: str | None = None
    patient_name: str = "PHANTOM^DEMO"
    patient_id: str = "PHANTOM-0000"
    patient_birth_date: str = "19700101"
    patient_age: str = "050Y"
    patient_sex: str = "O"
    series_description: str = "Synthetic phantom"
    protocol: str = "MRI T1post"  # for MR: the acquisition recorded (`pipeline.io.iod.protocol_of`)
    extra: dict = field(default_factory=dict)


def write_series(
    folder: str | os.PathLike,
    pixels: np.ndarray,
    geometry: SeriesGeometry,
    header: SeriesHeader | None = None,
    *,
    rescale_slope: float | Sequence[float] = 1.0,
    rescale_intercept: float | Sequence[float] = 0.0,
    multiframe: bool = False,
    per_frame_geometry: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: object = 0,
) -> list[Path]:
    """Write ``pixels`` (n, rows, columns) of integers as a DICOM series.

    Args:
        folder: created if needed; files are named ``<SOPInstanceUID>.dcm``.
        pixels: stored values, int16 (signed) or uint16.
        geometry: one position per slice, in the order of ``pixels``.
        header: modality, UIDs, fake patient fields and extra top-level keywords.
        rescale_slope: one value, or one per slice.
        rescale_intercept: one value, or one per slice.
        multiframe: one Enhanced CT/MR file instead of one file per slice.
        per_frame_geometry: for multi-frame, write per-frame positions; when False
            only the first position and SpacingBetweenSlices are written (the
            reader's documented fallback).
        transfer_syntax: UID; compressed syntaxes use pydicom's encoders.
        seed: makes the generated UIDs deterministic.

    Returns:
        The paths written.
    """
    header = header or SeriesHeader()
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 3 or pixels.dtype not in (np.int16, np.uint16):
        raise ValueError("pixels must be a (n, rows, columns) int16 or uint16 array")
    n = pixels.shape[0]
    slopes = np.broadcast_to(np.asarray(rescale_slope, float), (n,))
    intercepts = np.broadcast_to(np.asarray(rescale_intercept, float), (n,))
    series_uid = header.series_uid or derived_uid(seed, "series")
    study_uid = header.study_uid or derived_uid(seed, "study")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    if multiframe:
        sop = derived_uid(seed, series_uid, "multiframe")
        ds = _base_dataset(header, sop, series_uid, study_uid, pixels, True, transfer_syntax)
        _add_functional_groups(ds, geometry, slopes, intercepts, per_frame_geometry, header)
        _set_pixels(ds, pixels, transfer_syntax)
        return [_save(ds, folder / f"{sop}.dcm")]

    paths = []
    for k in range(n):
        sop = derived_uid(seed, series_uid, k)
        ds = _base_dataset(header, sop, series_uid, study_uid, pixels[k : k + 1], False, transfer_syntax)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds_values(geometry.positions[k])
        ds.ImageOrientationPatient = _ds_values([*geometry.row_cosine, *geometry.column_cosine])
        ds.PixelSpacing = _ds_values(geometry.pixel_spacing)
        ds.SliceThickness = _ds_value(geometry.slice_spacing)
        ds.SliceLocation = _ds_value(geometry.positions[k] @ np.cross(geometry.row_cosine, geometry.column_cosine))
        ds.RescaleSlope = _ds_value(slopes[k])
        ds.RescaleIntercept = _ds_value(intercepts[k])
        _set_pixels(ds, pixels[k], transfer_syntax)
        paths.append(_save(ds, folder / f"{sop}.dcm"))
    return paths


def _ds_value(value: float) -> str:
    text = f"{float(value):.6g}"
    return text if len(text) <= 16 else f"{float(value):.8e}"[:16]


def _ds_values(values) -> list[str]:
    return [_ds_value(v) for v in values]


def _base_dataset(
    header: SeriesHeader, sop: str, series_uid: str, study_uid: str, pixels: np.ndarray, multiframe: bool, syntax: str
) -> Dataset:
    modality = header.modality
    sop_class = SOP_CLASSES[(modality, multiframe)]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_PREFIX + "1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = derived_uid(study_uid, "frame of reference")
    ds.Modality = modality
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.patient_birth_date
    ds.PatientAge = header.patient_age
    ds.PatientSex = header.patient_sex
    ds.SeriesDescription = header.series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if not multiframe else ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.SeriesNumber = 1
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    add_common_modules(ds)
    if multiframe:
        add_enhanced_image(ds, modality, protocol_of(header.protocol))
    elif modality == "MR":
        add_mr_image(ds, protocol_of(header.protocol))
    else:
        add_ct_image(ds)
    for keyword, value in header.extra.items():
        setattr(ds, keyword, value)
    return ds


def _add_functional_groups(
    ds: Dataset, geometry: SeriesGeometry, slopes: np.ndarray, intercepts: np.ndarray, per_frame_geometry: bool,
    header: SeriesHeader,
) -> None:
    n = len(geometry.positions)
    ds.NumberOfFrames = n
    measures = Dataset()
    measures.PixelSpacing = _ds_values(geometry.pixel_spacing)
    measures.SliceThickness = _ds_value(geometry.slice_spacing)
    measures.SpacingBetweenSlices = _ds_value(geometry.slice_spacing)
    orientation = Dataset()
    orientation.ImageOrientationPatient = _ds_values([*geometry.row_cosine, *geometry.column_cosine])
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    acquisition = shared_acquisition_groups(header.modality, protocol_of(header.protocol),
                                            (n, int(ds.Rows), int(ds.Columns)), geometry.pixel_spacing,
                                            geometry.positions.mean(axis=0))
    for keyword, value in acquisition.items():
        setattr(shared, keyword, value)
    uniform_rescale = np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0])
    if uniform_rescale:
        shared.PixelValueTransformationSequence = DicomSequence([_rescale_item(slopes[0], intercepts[0])])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    if not per_frame_geometry:
        ds.ImagePositionPatient = _ds_values(geometry.positions[0])
    frames = []
    for k in range(n):
        group = Dataset()
        group.FrameContentSequence = DicomSequence([frame_content(k)])
        if per_frame_geometry:
            position = Dataset()
            position.ImagePositionPatient = _ds_values(geometry.positions[k])
            group.PlanePositionSequence = DicomSequence([position])
        if not uniform_rescale:
            group.PixelValueTransformationSequence = DicomSequence([_rescale_item(slopes[k], intercepts[k])])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)


def _rescale_item(slope: float, intercept: float) -> Dataset:
    item = Dataset()
    item.RescaleSlope = _ds_value(slope)
    item.RescaleIntercept = _ds_value(intercept)
    item.RescaleType = "HU" if intercept < 0 else "US"
    return item


def _set_pixels(ds: Dataset, pixels: np.ndarray, syntax: str) -> None:
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    if UID(syntax) != ExplicitVRLittleEndian:
        frames = pixels[0] if pixels.ndim == 3 and pixels.shape[0] == 1 else pixels
        ds.compress(syntax, arr=frames, generate_instance_uid=False)  # keep our deterministic UIDs


def _save(ds: Dataset, path: Path) -> Path:
    temporary = path.with_name(path.name + ".tmp")
    ds.save_as(temporary, enforce_file_format=True)
    os.replace(temporary, path)
    return path
