"""NIfTI in and out (pipeline.io.nifti): the RAS <-> LPS conversion checked against SimpleITK
and against the DICOM series a NIfTI was made from; predictions on a NIfTI equal those on its
DICOM series; bad NIfTI files are one sentence."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.errors import IngestError
from pipeline.inference.predictor import Predictor
from pipeline.io.dicom import load_series
from pipeline.io.image import read_image
from pipeline.io.nifti import load_nifti, save_nifti
from pipeline.labels import LABEL_COLUMNS
from pipeline.phantoms import MANIFEST
from tests.helpers import make_volume, oblique_cosines


def demo_series(demo, modality: str, plane: str | None = None) -> str:
    manifest = json.loads((demo[0] / MANIFEST).read_text())
    return next(uid for uid, s in manifest["series"].items() if s["plan"]["modality"] == modality
                and not s["plan"]["multiframe"] and (plane is None or s["plan"]["plane"] == plane))


def to_nifti_with_simpleitk(folder, out):
    """What a researcher's converter writes: SimpleITK (GDCM) reads the series, writes NIfTI."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    sitk.WriteImage(sitk.Cast(reader.Execute(), sitk.sitkFloat32), str(out))
    return out


@pytest.mark.parametrize("modality", ["CTA", "MRI T2"])
def test_a_nifti_of_a_dicom_series_reads_as_that_series(demo, tmp_path, modality):
    folder = demo[0] / "series" / demo_series(demo, modality)
    nifti = to_nifti_with_simpleitk(folder, tmp_path / "series.nii.gz")
    from_dicom = load_series(folder)
    from_nifti = load_nifti(nifti, "CT" if modality == "CTA" else "MR")
    assert from_nifti.shape == from_dicom.shape
    np.testing.assert_allclose(from_nifti.array, from_dicom.array, atol=1e-3)
    np.testing.assert_allclose(from_nifti.affine, from_dicom.affine, atol=1e-3)  # mm: the same voxel, same place
    assert from_nifti.orientation == from_dicom.orientation


def test_simpleitk_places_every_voxel_of_a_written_nifti_where_the_volume_does(tmp_path):
    row, column = oblique_cosines((20.0, -12.0, 8.0))
    normal = np.cross(row, column)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = normal * 1.5, np.asarray(column) * 0.7, np.asarray(row) * 0.5
    affine[:3, 3] = (-40.0, 25.0, 60.0)
    volume = make_volume(np.random.default_rng(0).random((7, 9, 11)), affine=affine)
    path = save_nifti(tmp_path / "v.nii.gz", volume.array, volume.affine)
    image = sitk.ReadImage(str(path))  # ITK reports physical points in LPS
    for k, j, i in [(0, 0, 0), (6, 8, 10), (3, 1, 7), (5, 8, 0)]:
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((i, j, k)), volume.voxel_to_patient((k, j, i)),
                                   atol=1e-4)
        assert sitk.GetArrayViewFromImage(image)[k, j, i] == pytest.approx(volume.array[k, j, i], abs=1e-6)
    again = load_nifti(path, "MR")
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-5)
    np.testing.assert_array_equal(again.array, volume.array)


@pytest.fixture(scope="module")
def shipped():
    return Predictor()


def test_predict_on_the_nifti_gives_the_probabilities_of_the_dicom_series(demo, tmp_path, shipped):
    folder = demo[0] / "series" / demo_series(demo, "CTA")
    nifti = to_nifti_with_simpleitk(folder, tmp_path / "cta.nii.gz")
    on_dicom, on_nifti = shipped.predict(folder), shipped.predict(nifti, modality="CTA")
    for name in LABEL_COLUMNS:
        assert on_nifti.probabilities[name] == pytest.approx(on_dicom.probabilities[name], abs=0.02), name
    spacing = np.asarray(on_dicom.volume.spacing)
    first, again = on_dicom.candidates[0], on_nifti.candidates[0]
    assert np.all(np.abs(np.subtract(first["position_mm"], again["position_mm"])) <= spacing / 2)
    kji = np.asarray(again["nifti_voxel"])[::-1]  # where the candidate is in the NIfTI file
    np.testing.assert_allclose(load_nifti(nifti, "CT").voxel_to_patient(kji), again["position_mm"], atol=0.05)


def test_the_command_line_scores_a_nifti_and_writes_its_heatmap(demo, tmp_path):
    folder = demo[0] / "series" / demo_series(demo, "MRI T2")
    nifti = to_nifti_with_simpleitk(folder, tmp_path / "t2.nii.gz")
    heatmap = tmp_path / "heatmap.nii.gz"
    result = subprocess.run([sys.executable, "-m", "pipeline", "predict", str(nifti), "--modality", "MRI T2", "--json",
                             "--heatmap", str(heatmap)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["probabilities"]) == set(LABEL_COLUMNS)
    written, source = load_nifti(heatmap, "MR"), load_nifti(nifti, "MR")  # on the NIfTI's own grid
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    assert 0.0 <= written.array.min() and 0.0 < written.array.max() <= 1.0
    no_dicom = subprocess.run([sys.executable, "-m", "pipeline", "predict", str(nifti), "--modality", "MRI T2",
                               "--sr", str(tmp_path / "sr.dcm")], capture_output=True, text=True, timeout=300)
    assert no_dicom.returncode == 2 and "--heatmap" in no_dicom.stderr and not (tmp_path / "sr.dcm").exists()
    refused = subprocess.run([sys.executable, "-m", "pipeline", "predict", str(nifti)], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--modality" in refused.stderr
    scanned = subprocess.run([sys.executable, "-m", "pipeline", "scan", str(nifti)], capture_output=True, text=True,
                             timeout=300)
    assert scanned.returncode == 2 and "a NIfTI image" in scanned.stderr


def write(path, data, affine=np.diag([0.8, 0.8, 0.8, 1.0]), codes=(1, 1)):
    image = nibabel.Nifti1Image(np.asarray(data, np.float32), affine)
    image.set_sform(affine, code=codes[0])
    image.set_qform(affine, code=codes[1])
    nibabel.save(image, path)
    return path


def test_bad_nifti_files_are_one_sentence(tmp_path):
    cube = np.zeros((8, 8, 8))
    with pytest.raises(IngestError, match="does not say its modality"):
        load_nifti(write(tmp_path / "a.nii", cube), None)
    with pytest.raises(IngestError, match="2-D image"):
        load_nifti(write(tmp_path / "flat.nii", np.zeros((8, 8))), "MR")
    with pytest.raises(IngestError, match="neither an sform nor a qform"):
        load_nifti(write(tmp_path / "bare.nii", cube, codes=(0, 0)), "MR")
    whole = (tmp_path / "whole.nii.gz")
    write(whole, np.random.default_rng(0).random((30, 30, 30)))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(IngestError, match="truncated.nii.gz"):
        load_nifti(truncated, "MR")
    with pytest.raises(IngestError, match="not a readable NIfTI"):
        read_image([("junk.nii.gz", gzip.compress(b"not a nifti" * 100))], modality="MR")
    with pytest.raises(IngestError, match="too large"):
        load_nifti(whole, "MR", max_voxels=1000)


def test_a_four_d_nifti_is_read_as_its_first_volume_with_a_warning(tmp_path):
    data = np.stack([np.full((6, 7, 8), float(t)) for t in range(3)], axis=-1)
    volume = load_nifti(write(tmp_path / "4d.nii.gz", data), "MR")
    assert volume.shape == (8, 7, 6) and np.all(volume.array == 0)
    assert any("3 volumes" in w and "first" in w for w in volume.warnings)


def test_an_uploaded_nifti_reads_from_memory(tmp_path):
    path = write(tmp_path / "m.nii.gz", np.random.default_rng(1).random((5, 6, 7)))
    in_memory = read_image([("m.nii.gz", path.read_bytes())], modality="MR")
    on_disk = read_image(path, modality="MR")
    np.testing.assert_array_equal(in_memory.array, on_disk.array)
    np.testing.assert_allclose(in_memory.affine, on_disk.affine)
