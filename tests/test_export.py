"""A prediction as standard DICOM (`pipeline.inference.export`): the SR measurement report and
the Segmentation pass ``dciodvfy`` without an Error line, are read back by highdicom and
pydicom, and say what the prediction says, where it says it, in the source's frame of reference."""

from __future__ import annotations

import json
import subprocess
import sys

import highdicom as hd
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from pipeline.inference import export
from pipeline.inference.predictor import Predictor
from pipeline.io.dicom import load_series
from pipeline.labels import ANEURYSM_PRESENT, LOCATIONS
from pipeline.phantoms import MANIFEST
from tests.test_dicom_conformance import errors_of


def demo_folder(demo, multiframe: bool, modality: str | None = None):
    manifest = json.loads((demo[0] / MANIFEST).read_text())
    uid = next(uid for uid, s in manifest["series"].items()
               if s["plan"]["multiframe"] == multiframe and modality in (None, s["plan"]["modality"]))
    return demo[0] / "series" / uid


@pytest.fixture(scope="module")
def predictor():
    return Predictor()  # the shipped model: its candidates sit where a real user's would


@pytest.fixture(scope="module")
def multiframe(demo, predictor):
    """An Enhanced MR (one multi-frame file) series and its prediction."""
    folder = demo_folder(demo, multiframe=True)
    return folder, predictor.predict(folder)


def source_uids(folder) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in folder.iterdir()}


def check_report(path, folder, prediction):
    """What a PACS user reads in the SR is what the prediction says."""
    assert not errors_of(path)
    sr = hd.sr.srread(path)
    source = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    assert (sr.Modality, sr.StudyInstanceUID, sr.PatientID) == ("SR", source.StudyInstanceUID, source.PatientID)
    assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "COMPLETE"
    evidence = {str(image.ReferencedSOPInstanceUID) for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for image in series.ReferencedSOPSequence}
    assert evidence == source_uids(folder)  # every source image, nothing else

    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(prediction.candidates) > 0
    for group, candidate in zip(groups, prediction.candidates):
        assert candidate["location"] in str(group.tracking_identifier)
        assert group.roi.GraphicType == "POINT" and group.roi.ReferencedFrameOfReferenceUID == \
            source.FrameOfReferenceUID
        np.testing.assert_allclose(group.roi.value[0], candidate["position_mm"], atol=1e-3)  # LPS mm, as predicted
        (measurement,) = group.get_measurements()
        assert measurement.value == pytest.approx(candidate["probability"], abs=1e-6)
        (site,) = group.finding_sites
        assert site.value == export.ARTERIES[candidate["location"].removeprefix("Left ").removeprefix("Right ")]
        side = candidate["location"].split(" ")[0]
        assert (site.laterality.meaning if site.laterality else None) == (side if side in export.SIDES else None)

    (series_group,) = sr.content.get_image_measurement_groups()  # the 14 RSNA probabilities
    values = [m.value for m in series_group.get_measurements()]
    expected = [prediction.probabilities[ANEURYSM_PRESENT]] + [prediction.probabilities[n] for n in LOCATIONS]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert pydicom.dcmread(path).SOPClassUID == pydicom.uid.Comprehensive3DSRStorage


def check_segmentation(path, folder, prediction):
    """The SEG's voxels, placed by its own geometry, are the heatmap on the source grid."""
    assert not errors_of(path)
    seg = hd.seg.segread(path)
    source = load_series(folder)
    assert seg.FrameOfReferenceUID == prediction.volume.source_headers[0].FrameOfReferenceUID
    assert {str(uid) for _, _, uid in seg.get_source_image_uids()} == source_uids(folder)
    assert int(seg.NumberOfFrames) == source.shape[0] and (seg.Rows, seg.Columns) == source.shape[1:]
    volume = seg.get_volume(combine_segments=False, rescale_fractional=True)
    # index of each SEG voxel in the source grid: a permutation (and flips) of its axes
    to_source = np.linalg.solve(source.affine, volume.affine)
    assert np.allclose(to_source, np.round(to_source), atol=1e-4)
    index = np.indices(volume.spatial_shape).reshape(3, -1)
    at = np.round(to_source[:3, :3] @ index + to_source[:3, 3:]).astype(int)
    expected, affine = prediction.heatmap_on_source()
    np.testing.assert_allclose(affine, source.affine, atol=1e-6)
    np.testing.assert_allclose(volume.array[..., 0].reshape(-1), expected[tuple(at)], atol=0.5 / 255 + 1e-6)
    assert expected.max() > 0.02  # a heatmap, not a blank
    raw = pydicom.dcmread(path)
    assert (raw.SegmentationType, raw.SegmentationFractionalType) == ("FRACTIONAL", "PROBABILITY")


def test_predict_writes_an_sr_and_a_seg_of_a_ct_series_that_pass_the_validator(demo, tmp_path):
    folder = demo_folder(demo, multiframe=False, modality="CTA")
    sr, seg = tmp_path / "out" / "report.dcm", tmp_path / "out" / "heatmap.dcm"
    result = subprocess.run([sys.executable, "-m", "pipeline", "predict", str(folder), "--json", "--sr", str(sr),
                             "--seg", str(seg)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    prediction = Predictor().predict(folder)  # the same, deterministic prediction, in this process
    assert printed["candidates"] == json.loads(json.dumps(prediction.to_json()))["candidates"]
    check_report(sr, folder, prediction)
    check_segmentation(seg, folder, prediction)
    assert not [p for p in sr.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_an_enhanced_mr_series_gets_an_sr_and_a_seg_that_pass_the_validator(multiframe, tmp_path):
    folder, prediction = multiframe
    check_report(export.save(export.structured_report(prediction), tmp_path / "sr.dcm"), folder, prediction)
    check_segmentation(export.save(export.segmentation(prediction), tmp_path / "seg.dcm"), folder, prediction)


def test_the_objects_name_the_algorithm_and_its_model(multiframe, predictor):
    _, prediction = multiframe
    algorithm = predictor.algorithm()
    assert "model demo" in algorithm.version
    seg = export.segmentation(prediction, algorithm)
    identification = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (identification.AlgorithmName, identification.AlgorithmVersion) == (algorithm.name, algorithm.version)
    assert seg.SoftwareVersions == algorithm.version


def test_a_source_without_a_frame_of_reference_or_dicom_headers_is_refused_with_the_reason(multiframe):
    _, prediction = multiframe
    header = export.copy_of(prediction.volume.source_headers[0])
    del header.FrameOfReferenceUID
    without = type(prediction)(**{**prediction.__dict__, "volume": prediction.volume.replace(source_headers=(header,))})
    with pytest.raises(export.ExportError, match="FrameOfReferenceUID"):
        export.structured_report(without)
    nifti_like = type(prediction)(**{**prediction.__dict__, "volume": prediction.volume.replace(source_headers=())})
    with pytest.raises(export.ExportError, match="NIfTI"):
        export.segmentation(nifti_like)
    assert "FrameOfReferenceUID" in prediction.volume.source_headers[0]  # the reader's headers untouched


def test_the_heatmap_reaches_an_oblique_source_grid_by_trilinear_interpolation(multiframe):
    _, prediction = multiframe
    shape, affine = prediction.volume.source_grid
    angle = np.radians(20.0)
    rotation = np.eye(4)
    rotation[:3, :3] = [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    centre = affine[:3, :3] @ (np.array(shape) / 2) + affine[:3, 3]
    about = np.eye(4)
    about[:3, 3] = centre
    oblique = about @ rotation @ np.linalg.inv(about) @ affine
    tilted = type(prediction)(**{**prediction.__dict__,
                                 "volume": prediction.volume.replace(source_grid=(shape, oblique))})
    heat, returned = tilted.heatmap_on_source()
    assert heat.shape == tuple(shape) and np.array_equal(returned, oblique)
    # the reference: scipy's linear interpolation of the window grid at each source voxel
    index = np.indices(shape).reshape(3, -1)[:, ::97]
    grid = np.linalg.solve(prediction.heatmap_affine, oblique)[:3] @ np.vstack([index, np.ones(index.shape[1])])
    span = np.array(prediction.heatmap.shape)[:, None] - 1
    inside = np.all((grid > -1e-3) & (grid < span + 1e-3), axis=0)  # the span, to within a thousandth of a window
    expected = np.where(inside, ndimage.map_coordinates(prediction.heatmap, grid, order=1, mode="nearest"), 0.0)
    np.testing.assert_allclose(heat[tuple(index)], expected, atol=1e-5)
    assert expected.max() > 0.02
    aligned, _ = prediction.heatmap_on_source()  # the fast path agrees with the general one
    np.testing.assert_allclose(aligned, prediction._sampled(shape, np.linalg.solve(prediction.heatmap_affine, affine)),
                               atol=1e-5)
