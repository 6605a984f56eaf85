"""The default chain on real DICOM series: canonical, 0.8 mm, cropped, normalised, traceable."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.io.dicom import load_series
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.transforms import Preprocessor, preprocess
from tests.helpers import PLANES, oblique_cosines


def phantom_series(write, plane, spacing, slice_spacing, n, size, modality="CT"):
    """A head-like ellipsoid with one bright 'aneurysm' at a known patient point."""
    cosines = oblique_cosines((15, -20, 10)) if plane == "oblique" else PLANES[plane]
    row, column = (np.array(c, float) for c in cosines)
    normal = np.cross(row, column)
    half = np.array([n * slice_spacing, size * spacing, size * spacing]) / 2
    origin = -(normal * half[0] + column * half[1] + row * half[2])
    k, i, j = np.meshgrid(np.arange(n), np.arange(size), np.arange(size), indexing="ij")
    points = origin + k[..., None] * slice_spacing * normal + i[..., None] * spacing * column + j[..., None] * spacing * row
    head = ((points / np.array([30.0, 36.0, 28.0])) ** 2).sum(-1) < 1
    target = np.array([8.0, -5.0, 4.0])  # LPS mm: left, anterior, superior of the centre
    blob = np.linalg.norm(points - target, axis=-1) < 2.5
    if modality == "CT":
        pixels = np.where(head, 40, -1000) + np.where(blob, 400, 0) + 1024
    else:
        pixels = np.where(head, 300, 5) + np.where(blob, 900, 0)
    folder, _, _ = write(
        plane=cosines, n=n, rows=size, columns=size, pixel_spacing=(spacing, spacing),
        slice_spacing=slice_spacing, origin=origin, pixels=pixels.astype(np.int16), modality=modality,
        rescale_intercept=-1024.0 if modality == "CT" else 0.0,
    )
    return folder, target


@pytest.mark.parametrize(
    "plane, spacing, slice_spacing, n, size, modality",
    [
        ("axial", 0.5, 0.6, 110, 150, "CT"),
        ("sagittal", 0.6, 1.0, 70, 130, "MR"),
        ("coronal", 0.5, 4.0, 18, 150, "MR"),
        ("oblique", 0.6, 0.8, 90, 130, "CT"),
    ],
)
def test_chain_output_and_geometry(write, plane, spacing, slice_spacing, n, size, modality):
    folder, target = phantom_series(write, plane, spacing, slice_spacing, n, size, modality)
    volume = load_series(folder)
    result = preprocess(volume)
    assert result.orientation == "SPL"
    assert result.spacing == pytest.approx((0.8, 0.8, 0.8))
    assert 0.0 <= result.array.min() and result.array.max() <= 1.0
    assert [h["step"] for h in result.history] == ["reorient", "crop", "resample", "normalize"]
    assert all(n <= 100 for n in result.shape)  # cropped to the ~60-72 mm head plus margins
    # The bright blob is where the patient coordinates say it is (before normalisation,
    # which may saturate it together with the brightest tissue).
    unnormalised = volume
    for step in Preprocessor().steps[:-1]:
        unnormalised = step(unnormalised)
    np.testing.assert_allclose(unnormalised.affine, result.affine)
    blob = np.array(np.unravel_index(np.argmax(unnormalised.array), result.shape))
    assert np.linalg.norm(result.voxel_to_patient(blob) - target) < 2.5 + 0.8
    # Left-right: the blob is on the patient's left, i.e. the high-x half of the array.
    centre = result.patient_to_voxel(np.zeros(3))
    assert blob[2] > centre[2]


@pytest.mark.parametrize("plane", ["axial", "sagittal", "oblique"])
def test_source_points_map_to_the_processed_array_and_back_within_half_a_voxel(write, plane):
    folder, _ = phantom_series(write, plane, 0.6, 1.0, 60, 110, "CT")
    volume = load_series(folder)
    result = preprocess(volume)
    rng = np.random.default_rng(0)
    keys = list(volume.sources)
    for index in rng.choice(len(keys), size=20):
        sop, frame = keys[index]
        x, y = rng.uniform(20, 90, size=2)
        voxel = result.source_to_voxel(sop, x, y, frame)
        assert np.all(voxel > -0.5) and np.all(voxel < np.array(result.shape) - 0.5)
        # back, exactly, from the continuous voxel
        back_sop, back_frame, back_x, back_y = result.voxel_to_source(voxel)
        assert (back_sop, back_frame) == (sop, frame)
        assert (back_x, back_y) == pytest.approx((x, y), abs=1e-6)
        # back from the nearest voxel: within half a voxel along every processed axis
        original = volume.sources[(sop, frame)].pixel_to_patient(x, y)
        rounded = result.voxel_to_patient(np.round(voxel))
        along_axes = result.patient_to_voxel(rounded) - result.patient_to_voxel(original)
        assert np.all(np.abs(along_axes) <= 0.5 + 1e-9)


def test_config_round_trip_and_key():
    config = PreprocessConfig(target_spacing=(1.0, 1.0, 1.0))
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert config.key() != PreprocessConfig().key()
    assert PreprocessConfig().key() == PreprocessConfig().key()
    assert [type(s).__name__ for s in Preprocessor(config).steps] == ["Reorient", "CropForeground", "Resample", "Normalize"]
