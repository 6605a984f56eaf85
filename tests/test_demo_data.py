"""The demo dataset: RSNA layout, intended geometry, localizers inside their aneurysms."""

from __future__ import annotations

import ast
import csv
from collections import Counter

import numpy as np
import pydicom
import pytest

from pipeline.demo.generate import generate_demo_data, plan_dataset
from pipeline.demo.generate import PLANES
from pipeline.phantoms import FAKE_PATIENT_TOKEN, LOCALIZER_COLUMNS, TRAIN_COLUMNS
from pipeline.io.dicom import load_series
from pipeline.labels import LOCATIONS
from pipeline.preprocess.transforms import preprocess

def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_default_plan_mix_positives_and_locations():
    plans = plan_dataset(60, seed=0)
    modalities = Counter(p.modality for p in plans)
    assert modalities == {"CTA": 27, "MRI T2": 21, "MRA": 9, "MRI T1post": 3}  # CTA > T2 > MRA > T1post
    assert sum(bool(p.locations) for p in plans) == 24  # 40 % positive
    assert {p.modality for p in plans if p.locations} == set(modalities)  # every modality has positives
    locations = Counter(name for p in plans for name in p.locations)
    assert set(locations) == set(LOCATIONS) and min(locations.values()) >= 2
    assert all(len(set(p.locations)) == len(p.locations) for p in plans)
    assert Counter(p.plane for p in plans)["axial"] > 40 and {"coronal", "sagittal"} <= {p.plane for p in plans}
    assert any(p.multiframe for p in plans) and not any(p.multiframe for p in plans if p.modality == "CTA")
    assert len({p.series_uid for p in plans}) == 60
    assert plan_dataset(60, seed=0) == plans and plan_dataset(60, seed=1) != plans


def test_layout_and_csv_columns(demo):
    root, summary, manifest = demo
    train = read_csv(root / "train.csv")
    localizers = read_csv(root / "train_localizers.csv")
    assert list(train[0]) == TRAIN_COLUMNS
    assert list(localizers[0]) == LOCALIZER_COLUMNS
    assert len(train) == 8 == summary.n_series
    for row in train:
        folder = root / "series" / row["SeriesInstanceUID"]
        assert folder.is_dir() and all(p.suffix == ".dcm" for p in folder.iterdir())
        assert row["Modality"] in ("CTA", "MRA", "MRI T2", "MRI T1post")
        assert row["PatientSex"] in ("Female", "Male") and 18 <= int(row["PatientAge"]) <= 90
        flags = [int(row[name]) for name in LOCATIONS]
        assert int(row["Aneurysm Present"]) == int(any(flags))
        rows = [r for r in localizers if r["SeriesInstanceUID"] == row["SeriesInstanceUID"]]
        assert sorted(r["location"] for r in rows) == sorted(n for n, f in zip(LOCATIONS, flags) if f)
    for row in localizers:
        coordinates = ast.literal_eval(row["coordinates"])
        plan = manifest["series"][row["SeriesInstanceUID"]]["plan"]
        assert set(coordinates) == ({"x", "y", "f"} if plan["multiframe"] else {"x", "y"})


def test_series_read_back_with_the_intended_geometry(demo):
    root, _, manifest = demo
    for uid, entry in manifest["series"].items():
        plan = entry["plan"]
        volume = load_series(root / "series" / uid)
        assert volume.warnings == []
        assert volume.modality == ("CT" if plan["modality"] == "CTA" else "MR")
        assert volume.info["plane"] == plan["plane"]
        assert volume.shape == tuple(entry["shape"])
        assert volume.spacing == pytest.approx((plan["slice_mm"], plan["pixel_mm"], plan["pixel_mm"]), abs=1e-3)
        row, column = (np.array(v) for v in PLANES[plan["plane"]])
        np.testing.assert_allclose(volume.affine[:3, 2] / plan["pixel_mm"], row, atol=1e-6)
        np.testing.assert_allclose(volume.affine[:3, 0] / plan["slice_mm"], np.cross(row, column), atol=1e-3)
        assert volume.info["multiframe"] == plan["multiframe"]
        assert volume.info["transfer_syntaxes"] == [pydicom.uid.UID(plan["transfer_syntax"]).name]


def test_every_localizer_lands_inside_its_aneurysm_in_the_processed_volume(demo):
    root, _, manifest = demo
    localizers = read_csv(root / "train_localizers.csv")
    checked = 0
    for uid, entry in manifest["series"].items():
        if not entry["aneurysms"]:
            continue
        processed = preprocess(load_series(root / "series" / uid))
        rows = [r for r in localizers if r["SeriesInstanceUID"] == uid]
        for row, aneurysm in zip(rows, entry["aneurysms"]):
            assert row["location"] == aneurysm["location"]
            c = ast.literal_eval(row["coordinates"])
            voxel = np.round(processed.source_to_voxel(row["SOPInstanceUID"], c["x"], c["y"], c.get("f", 0)))
            assert np.all(voxel >= 0) and np.all(voxel < processed.shape)
            distance = np.linalg.norm(processed.voxel_to_patient(voxel) - aneurysm["centre_mm"])
            assert distance < aneurysm["diameter_mm"] / 2
            checked += 1
    assert checked >= 4


def test_left_is_the_patients_left(demo):
    _, _, manifest = demo
    sides = [(a["location"], a["centre_mm"][0]) for e in manifest["series"].values() for a in e["aneurysms"]]
    assert sides
    for location, x in sides:
        if location.startswith("Left"):
            assert x > 0, location
        if location.startswith("Right"):
            assert x < 0, location


def test_modality_appearance(demo):
    root, _, manifest = demo
    for uid, entry in manifest["series"].items():
        volume = load_series(root / "series" / uid)
        modality = entry["plan"]["modality"]
        array = volume.array
        brain = float(np.median(array[array > np.percentile(array, 60)])) if modality != "CTA" else 36.0
        for aneurysm in entry["aneurysms"]:
            centre = tuple(np.round(volume.patient_to_voxel(aneurysm["centre_mm"])).astype(int))
            value = float(array[centre])
            if modality == "CTA":
                assert 180 < value < 600  # contrast-filled lumen, Hounsfield units
            elif modality == "MRI T2":
                assert value < 0.8 * brain  # flow void darker than brain
            else:
                assert value > brain  # bright lumen
        if modality == "CTA":
            assert array.max() > 700 and array.min() < -900  # bone and air
        else:
            assert array.min() >= 0


def test_fake_patient_fields_are_written(demo):
    root, _, manifest = demo
    uid = next(iter(manifest["series"]))
    ds = pydicom.dcmread(next((root / "series" / uid).iterdir()), stop_before_pixels=True)
    assert FAKE_PATIENT_TOKEN in str(ds.PatientName) and FAKE_PATIENT_TOKEN in ds.PatientID
    assert ds.PatientBirthDate and ds.PatientAge.endswith("Y")


@pytest.mark.slow  # generates the demo twice (~9 s)
def test_same_seed_same_bytes(tmp_path):
    first = generate_demo_data(tmp_path / "a", n_series=2, seed=7, workers=1).root
    second = generate_demo_data(tmp_path / "b", n_series=2, seed=7, workers=1).root
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_a_subset_of_series_is_written_byte_for_byte_as_in_the_whole_dataset(tmp_path):
    whole = generate_demo_data(tmp_path / "whole", n_series=3, seed=7, workers=1).root
    wanted = plan_dataset(3, seed=7)[1].series_uid
    part = generate_demo_data(tmp_path / "part", n_series=3, seed=7, workers=1, only={wanted}).root
    assert [row["SeriesInstanceUID"] for row in read_csv(part / "train.csv")] == [wanted]
    assert {p.name for p in (part / "series").iterdir()} == {wanted}
    for path in (part / "series" / wanted).iterdir():
        assert path.read_bytes() == (whole / "series" / wanted / path.name).read_bytes()


def test_an_interrupted_run_leaves_nothing_and_an_existing_folder_is_refused(tmp_path):
    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_demo_data(tmp_path / "demo", n_series=2, seed=1, workers=1, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        generate_demo_data(tmp_path / "full", n_series=1)
    assert (tmp_path / "full" / "keep.txt").read_text() == "user data"
