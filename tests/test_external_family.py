"""The external phantom family: written independently of the demo family, for validation only.

What a user relies on: its series read as the modality the table says, every localizer points
at the centre of its aneurysm (which the image shows brighter than brain, or dark in T2), the
acquisitions differ from the demo family's, and no model can be trained on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.external.generate import generate_external_data, plan_external
from pipeline.io.dicom import load_series
from pipeline.io.rsna import read_localizers, read_train
from pipeline.labels import ANEURYSM_PRESENT, LOCATIONS, MODALITIES
from pipeline.phantoms import MANIFEST, family_label, read_family


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """Two series (a CTA and an MRA), both with aneurysms."""
    root = tmp_path_factory.mktemp("external") / "data"
    plans = plan_external(48, seed=0)
    chosen = [next(p for p in plans if p.modality == m and p.locations) for m in ("CTA", "MRA")]
    generate_external_data(root, workers=2, only={p.series_uid for p in chosen})
    return root


def test_the_plan_is_deterministic_half_positive_with_every_modality():
    plans = plan_external(48, seed=0)
    assert plans == plan_external(48, seed=0) and plans != plan_external(48, seed=1)
    assert sum(bool(p.locations) for p in plans) == 24
    assert {p.modality for p in plans} == set(MODALITIES)
    assert all(p.modality == "CTA" or abs(p.tilt_deg) > 0 or p.plane == "axial" for p in plans)
    assert len({p.series_uid for p in plans}) == 48
    assert all(location in LOCATIONS for p in plans for location in p.locations)


def test_its_tables_follow_the_rsna_layout_and_its_manifest_names_the_family(external):
    table = read_train(external)
    assert len(table) == 2 and table[ANEURYSM_PRESENT].tolist() == [1, 1]
    family = read_family(external)
    assert family["family"] == "external" and family["validation_only"] is True
    assert family_label(family, external) == "external"
    manifest = json.loads((external / MANIFEST).read_text())
    assert "ZZFAKE" not in json.dumps(family)  # the family record holds no patient field


def test_every_localizer_points_at_its_aneurysm_which_the_image_shows(external):
    localizers, skipped = read_localizers(external)
    manifest = json.loads((external / MANIFEST).read_text())["series"]
    table = read_train(external).set_index("SeriesInstanceUID")
    assert not skipped
    for uid, entry in manifest.items():
        volume = load_series(external / "series" / uid)
        assert volume.modality == ("CT" if table.loc[uid, "Modality"] == "CTA" else "MR")
        for localizer, aneurysm in zip(localizers[uid], entry["aneurysms"]):
            voxel = volume.source_to_voxel(localizer.sop_uid, localizer.x, localizer.y, localizer.frame)
            centre = volume.voxel_to_patient(voxel)
            assert np.linalg.norm(centre - aneurysm["centre_mm"]) < max(volume.spacing)  # within a voxel
            z, y, x = np.round(voxel).astype(int)
            dome = volume.array[z, y - 1:y + 2, x - 1:x + 2].mean()
            middle = volume.array[volume.shape[0] // 2]
            rows, columns = middle.shape
            brain = np.median(middle[rows // 2 - 20:rows // 2 + 20, columns // 2 - 20:columns // 2 + 20])
            assert dome > brain + 100, (table.loc[uid, "Modality"], dome, brain)


def test_its_acquisitions_are_not_the_demo_familys(external):
    for uid in read_train(external).SeriesInstanceUID:
        volume = load_series(external / "series" / uid)
        if volume.modality == "CT":
            assert volume.shape[1:] == (320, 320)  # the demo family's CTA are 256 x 256
        else:
            assert volume.shape[1:] == (384, 384) and volume.info["plane"] in ("axial", "oblique")


def test_no_model_can_be_trained_on_it(external, tmp_path, capsys):
    assert main(["build", "--data", str(external), "--out", str(tmp_path / "datasets")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "validation only" in error[0] and "--test-set" in error[0]
    assert not (tmp_path / "datasets").exists()
