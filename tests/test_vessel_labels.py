"""Vessel label maps: the demo writes one per series in the RSNA ``segmentations/`` layout,
they lie on the arteries of the series they belong to (by affine, whatever the array order),
the build samples them on the processed grid and keeps them in its cache, and a map that
does not fit its series is refused with its reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.dataset.build import build_datasets
from pipeline.errors import IngestError
from pipeline.io.nifti import load_label_map, save_nifti
from pipeline.io.rsna import find_vessel_labels, vessel_labels_path
from pipeline.labels import LOCATIONS, MIRRORED_VESSEL_LABELS, OTHER_ARTERY, VESSEL_LABELS, vessel_label
from pipeline.preprocess.cache import ProcessedCache, load_processed, load_vessels
from pipeline.preprocess.vessels import labels_on_grid
from tests.conftest import BUILD_CONFIG
from tests.helpers import make_volume

LEFT_MCA = vessel_label("Left Middle Cerebral Artery")
RIGHT_MCA = vessel_label("Right Middle Cerebral Artery")


def test_label_values_and_their_mirror():
    assert len(VESSEL_LABELS) == 14 and VESSEL_LABELS[LEFT_MCA - 1] == "Left Middle Cerebral Artery"
    assert vessel_label(None) == OTHER_ARTERY == 14
    assert MIRRORED_VESSEL_LABELS[LEFT_MCA] == RIGHT_MCA and MIRRORED_VESSEL_LABELS[RIGHT_MCA] == LEFT_MCA
    basilar = vessel_label("Basilar Tip")
    assert MIRRORED_VESSEL_LABELS[basilar] == basilar and MIRRORED_VESSEL_LABELS[0] == 0
    assert sorted(MIRRORED_VESSEL_LABELS) == list(range(15))


def test_every_demo_series_has_a_label_map_on_its_own_arteries(demo):
    root, _, truth = demo
    for uid, entry in truth["series"].items():
        path = find_vessel_labels(root, uid)
        assert path == vessel_labels_path(root, uid)  # segmentations/<uid>/<uid>_cowseg.nii.gz
        labels = load_label_map(path)
        assert labels.shape == tuple(entry["shape"])  # the acquisition grid
        values = set(np.unique(labels.array).tolist())
        assert {0, LEFT_MCA, RIGHT_MCA, OTHER_ARTERY} <= values <= set(range(15))
        # Left arteries lie at the patient's left (+x in LPS) of the circle of Willis, right ones at its right.
        origin = np.asarray(entry["head_origin_mm"])
        for label, side in ((LEFT_MCA, +1), (RIGHT_MCA, -1)):
            voxels = np.argwhere(labels.array == label)
            lateral = (labels.voxel_to_patient(voxels)[:, 0] - origin[0]).mean()
            assert side * lateral > 15, (entry["plan"]["modality"], label, lateral)


def test_the_labels_sit_on_the_bright_lumen_of_a_tof_mra(built):
    root, out, _, truth = built
    mra = [uid for uid, e in truth["series"].items() if e["plan"]["modality"] == "MRA"]
    assert mra
    cache = ProcessedCache(out, BUILD_CONFIG.preprocess)
    for uid in mra:
        volume, vessels = load_processed(cache.path(uid)), load_vessels(cache.path(uid))
        assert vessels is not None and vessels.shape == volume.shape
        image, labelled = volume.array.astype(np.float32), vessels > 0
        head = image > 0.05
        assert image[labelled].mean() > 1.8 * image[head & ~labelled].mean()
        moved = np.roll(labelled, 4, axis=2)  # 3 mm to the side: off the lumen
        assert image[labelled].mean() > 1.3 * image[moved & ~labelled].mean()


def test_labels_follow_the_affine_not_the_array_order():
    target = make_volume(np.zeros((20, 20, 20)), spacing=(1.0, 1.0, 1.0), origin=(-9.5, -9.5, -9.5))
    # The map on another grid: 2 mm voxels, every axis running backwards.
    affine = np.array([[0, 0, -2.0, 10.0], [0, -2.0, 0, 10.0], [-2.0, 0, 0, 10.0], [0, 0, 0, 1]])
    labels = make_volume(np.zeros((11, 11, 11)), affine=affine)
    labels.array = labels.array.astype(np.uint8)
    point = np.array([4.0, -6.0, 2.0])  # patient mm (x, y, z)
    index = np.round(labels.patient_to_voxel(point)).astype(int)
    labels.array[tuple(index)] = 7
    on_grid = labels_on_grid(labels, target)
    found = target.voxel_to_patient(np.argwhere(on_grid == 7))
    assert len(found) == 8  # one 2 mm voxel covers 2x2x2 one-mm voxels
    assert np.allclose(found.mean(axis=0), point, atol=0.51)


def test_a_map_off_its_series_or_empty_is_refused():
    target = make_volume(np.zeros((10, 10, 10)))
    labels = make_volume(np.zeros((10, 10, 10)), origin=(200.0, 0.0, 0.0))
    labels.array = np.ones((10, 10, 10), np.uint8)
    with pytest.raises(IngestError, match="does not lie on series"):
        labels_on_grid(labels, target)
    labels.array[:] = 0
    with pytest.raises(IngestError, match="holds no label"):
        labels_on_grid(labels, target)


def test_a_nifti_that_is_no_label_map_is_refused(tmp_path):
    path = save_nifti(tmp_path / "x_cowseg.nii.gz", np.full((4, 4, 4), 0.5), np.eye(4))
    with pytest.raises(IngestError, match="not a label map"):
        load_label_map(path)
    path = save_nifti(tmp_path / "y_cowseg.nii", np.full((4, 4, 4), 300.0), np.eye(4))
    with pytest.raises(IngestError, match="not a label map"):
        load_label_map(path)


def test_the_build_keeps_usable_maps_and_says_why_it_drops_the_others(demo, tmp_path):
    root, _, truth = demo
    data = tmp_path / "data"
    shutil.copytree(root, data)
    uids = sorted(truth["series"])
    missing, foreign, plain = uids[0], uids[1], uids[2]
    shutil.rmtree(vessel_labels_path(data, missing).parent)
    shutil.copy(vessel_labels_path(root, uids[3]), vessel_labels_path(data, foreign))  # another head's map
    moved = load_label_map(vessel_labels_path(data, foreign))
    moved.affine[:3, 3] += 400.0  # far from the series
    save_nifti(vessel_labels_path(data, foreign), moved.array, moved.affine, dtype=np.uint8)
    gzipped = load_label_map(vessel_labels_path(data, plain))
    save_nifti(vessel_labels_path(data, plain, gzipped=False), gzipped.array, gzipped.affine, dtype=np.uint8)
    vessel_labels_path(data, plain).unlink()  # left: a plain .nii, as in the RSNA data
    manifest = build_datasets(data, tmp_path / "out", BUILD_CONFIG, workers=1)
    outcomes = manifest["series"]
    assert not outcomes[missing]["vessel_labels"] and not outcomes[foreign]["vessel_labels"]
    assert any("Vessel labels not used" in w and "does not lie on series" in w for w in outcomes[foreign]["warnings"])
    assert outcomes[plain]["vessel_labels"] and all(outcomes[u]["vessel_labels"] for u in uids[3:])
    cache = ProcessedCache(tmp_path / "out", BUILD_CONFIG.preprocess)
    assert load_vessels(cache.path(missing)) is None
    # A map added later is a change of the series' sources: the next build reads it.
    shutil.copytree(vessel_labels_path(root, missing).parent, vessel_labels_path(data, missing).parent)
    again = build_datasets(data, tmp_path / "out", BUILD_CONFIG, workers=1)["series"]
    assert again[missing]["vessel_labels"] and not again[missing]["from_cache"]
    assert again[uids[4]]["from_cache"] and again[uids[4]]["vessel_labels"]
    assert json.loads((tmp_path / "out" / "build_manifest.json").read_text())["series"][missing]["vessel_labels"]


def test_vessel_labels_cover_the_thin_and_thick_acquisitions(demo):
    root, _, truth = demo
    thick = [u for u, e in truth["series"].items() if e["plan"]["slice_mm"] > 2]
    assert thick  # MRI T2: labels of the fullest sub-slice, on the acquisition grid
    for uid in thick:
        labels = load_label_map(find_vessel_labels(root, uid))
        assert {vessel_label(name) for name in LOCATIONS[:6]} <= set(np.unique(labels.array).tolist())
