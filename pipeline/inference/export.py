"""A prediction as standard DICOM that a PACS, OHIF or 3D Slicer shows, made with highdicom.

* `structured_report`: a Comprehensive 3D SR measurement report (TID 1500). One group per
  series (TID 1501) holds the 14 RSNA probabilities, each location's with its finding site;
  one planar-ROI group (TID 1410) per candidate holds its point (SCOORD3D POINT, in the
  source's frame of reference), its probability, its most likely location as finding site
  and, in its tracking identifier, the RSNA location name. Every source image is referenced
  as evidence.
* `segmentation`: a fractional (probability) DICOM Segmentation of the heatmap on the
  source grid, one frame per source slice, referencing the source images.

Both copy the patient and study of the source (a derived object belongs to them), are marked
unverified, and name the algorithm and its version. The source's headers are those the reader
kept (`Volume.source_headers`); a NIfTI image has none, and its heatmap goes out as NIfTI.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pipeline import __version__
from pipeline.files import temporary_beside
from pipeline.labels import ANEURYSM_PRESENT, LOCATIONS

MANUFACTURER = "Aneurysm detection project"
ANEURYSM = Code("85659009", "SCT", "Aneurysm")
PROBABILITY = Code("122157", "DCM", "Probability")
NO_UNITS = Code("1", "UCUM", "no units")
CENTRE = Code("111010", "DCM", "Center")
#: The finding site of each RSNA location (SNOMED CT), laterality apart.
ARTERIES = {
    "Infraclinoid Internal Carotid Artery": Code("86117002", "SCT", "Internal carotid artery"),
    "Supraclinoid Internal Carotid Artery": Code("86117002", "SCT", "Internal carotid artery"),
    "Middle Cerebral Artery": Code("17232002", "SCT", "Middle cerebral artery"),
    "Anterior Communicating Artery": Code("8012006", "SCT", "Anterior communicating artery"),
    "Anterior Cerebral Artery": Code("60176003", "SCT", "Anterior cerebral artery"),
    "Posterior Communicating Artery": Code("43119007", "SCT", "Posterior communicating artery"),
    "Basilar Tip": Code("59011009", "SCT", "Basilar artery"),
    "Other Posterior Circulation": Code("88556005", "SCT", "Cerebral artery"),
}
SIDES = {"Left": Code("7771000", "SCT", "Left"), "Right": Code("24028007", "SCT", "Right")}
#: Type 2 attributes of the Patient and General Study modules a derived object copies: empty
#: where a source lacks them (as the standard allows), so that the object stays valid.
PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                     "StudyDate", "StudyTime", "ReferringPhysicianName")
SR_SERIES_NUMBER, SEG_SERIES_NUMBER = 9001, 9002  # far from the scanner's own series numbers


class ExportError(ValueError):
    """A prediction that cannot become the DICOM object asked for (said why)."""


@dataclass(frozen=True)
class Algorithm:
    """What made the result, as the objects name it."""

    name: str = "Aneurysm detection 3D CNN"
    version: str = __version__

    def identification(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(self.name, codes.cid7162.ArtificialIntelligence, self.version)

    def sr_identification(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(self.name, self.version)


def finding_site(location: str) -> hd.sr.FindingSite:
    """An RSNA location as an anatomic site with its laterality."""
    side, _, artery = location.partition(" ")
    if side in SIDES:
        return hd.sr.FindingSite(ARTERIES[artery], laterality=SIDES[side])
    return hd.sr.FindingSite(ARTERIES[location])


def source_headers(prediction) -> list[Dataset]:
    """The source's headers, ready to be copied: patient and study attributes it lacks set
    empty. Raises `ExportError` for a source that is not DICOM or has no frame of reference."""
    headers = list(prediction.volume.source_headers)
    if not headers:
        raise ExportError("a DICOM SR or Segmentation refers to DICOM source images, and this image has none "
                          "(a NIfTI image); its heatmap can be written as NIfTI instead.")
    missing = [k for k in ("StudyInstanceUID", "FrameOfReferenceUID", "SOPClassUID") if not headers[0].get(k)]
    if missing:
        raise ExportError(f"the source series has no {', '.join(missing)}: a derived DICOM object cannot refer "
                          "to its study and frame of reference.")
    completed = []
    for header in headers:
        header = copy_of(header)
        for keyword in PATIENT_AND_STUDY:
            if keyword not in header:
                setattr(header, keyword, "")
        completed.append(header)
    return completed


def copy_of(header: Dataset) -> Dataset:
    """A new dataset with the same elements (``Dataset(ds)`` and ``copy.copy`` share the
    reader's dictionary: a change would reach it)."""
    copied = Dataset()
    copied.update(header)
    return copied


def structured_report(prediction, algorithm: Algorithm = Algorithm()) -> hd.sr.Comprehensive3DSR:
    """The prediction as a Comprehensive 3D SR measurement report (see the module's docstring)."""
    headers = source_headers(prediction)
    frame_of_reference = str(headers[0].FrameOfReferenceUID)
    identified = algorithm.sr_identification()
    groups = [_series_group(prediction, identified)]
    for rank, candidate in enumerate(prediction.candidates, start=1):
        point = np.asarray([candidate["position_mm"]], dtype=np.float64)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=hd.UID(), identifier=f"Candidate {rank}: {candidate['location']}"),
            referenced_region=hd.sr.ImageRegion3D(hd.sr.GraphicTypeValues3D.POINT, point, frame_of_reference),
            finding_type=ANEURYSM,
            algorithm_id=identified,
            finding_sites=[finding_site(candidate["location"])],
            geometric_purpose=CENTRE,
            measurements=[_probability(candidate["probability"], identified)],
        ))
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(), name=algorithm.name, manufacturer_name=MANUFACTURER, model_name=algorithm.version)
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.cid270.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(context, codes.SCT.ImagingProcedure, groups)
    return hd.sr.Comprehensive3DSR(
        evidence=headers, content=report, series_instance_uid=hd.UID(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description="Aneurysm detection (algorithm, unverified)")


def _series_group(prediction, identified: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The 14 probabilities of the series: Aneurysm Present, then each location's."""
    measurements = [_probability(prediction.probabilities[ANEURYSM_PRESENT], identified)]
    measurements += [_probability(prediction.probabilities[name], identified, finding_site(name)) for name in LOCATIONS]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Series: the 14 RSNA probabilities"),
        finding_type=ANEURYSM, algorithm_id=identified, measurements=measurements)


def _probability(value: float, identified: hd.sr.AlgorithmIdentification,
                 site: hd.sr.FindingSite | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=PROBABILITY, value=round(float(value), 6), unit=NO_UNITS, algorithm_id=identified,
                             finding_sites=[site] if site is not None else None)


def segmentation(prediction, algorithm: Algorithm = Algorithm()) -> hd.seg.Segmentation:
    """The heatmap on the source grid as a fractional (probability) Segmentation: one frame
    per slice of the image as read, each placed by its own position (a sheared stack too)."""
    headers = source_headers(prediction)
    heatmap, affine = prediction.heatmap_on_source()
    row_step, column_step = affine[:3, 2], affine[:3, 1]  # along a row (x), down a column (y)
    row_cosine, column_cosine = row_step / np.linalg.norm(row_step), column_step / np.linalg.norm(column_step)
    spacing = abs(float(affine[:3, 0] @ np.cross(row_cosine, column_cosine)))
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Aneurysm probability",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=ANEURYSM, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm.identification())
    seg = hd.seg.Segmentation(
        source_images=headers[:1], pixel_array=heatmap,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name, software_versions=algorithm.version, device_serial_number="none",
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=[float(np.linalg.norm(column_step)), float(np.linalg.norm(row_step))],
            slice_thickness=spacing, spacing_between_slices=spacing),
        plane_orientation=hd.PlaneOrientationSequence("PATIENT", [*row_cosine, *column_cosine]),
        plane_positions=[hd.PlanePositionSequence("PATIENT", affine[:3, 0] * z + affine[:3, 3])
                         for z in range(heatmap.shape[0])],
        omit_empty_frames=False, series_description="Aneurysm probability (algorithm, unverified)",
        content_label="ANEURYSM_P", content_description="Aneurysm probability of each voxel, calibrated")
    _reference_all(seg, headers)
    return seg


def _reference_all(seg: hd.seg.Segmentation, headers: list[Dataset]) -> None:
    """Reference every source image, as highdicom does for its source images: given them all,
    highdicom spends ~8 ms an image matching frames and checking IODs (1.5 s for a CT
    series), while the frames are placed by their own positions anyway."""
    references = []
    for header in headers:
        reference = Dataset()
        reference.ReferencedSOPClassUID = header.SOPClassUID
        reference.ReferencedSOPInstanceUID = header.SOPInstanceUID
        references.append(reference)
    seg.SourceImageSequence = references
    series = Dataset()
    series.SeriesInstanceUID = headers[0].SeriesInstanceUID
    series.ReferencedInstanceSequence = references
    seg.ReferencedSeriesSequence = [series]


def save(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Write a DICOM object atomically (a temporary file beside it, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(path)
    try:
        dataset.save_as(temporary, enforce_file_format=True)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def to_bytes(dataset: Dataset) -> bytes:
    """A DICOM object as the bytes of its file (a download)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
