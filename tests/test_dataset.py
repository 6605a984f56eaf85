"""DatasetBuilder: the .npz contract, positives on their aneurysms, negatives away from them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.dataset.build import balance_table, build_datasets
from pipeline.dataset.store import DATASET_FILES, MANIFEST_NAME
from pipeline.labels import LOCATIONS
from pipeline.io.rsna import parse_coordinates

from tests.conftest import BUILD_CONFIG as CONFIG


def load(path):
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def test_contract_files_keys_shapes(built):
    _, out, manifest, _ = built
    assert sorted(p.name for p in out.glob("*.npz")) == sorted(DATASET_FILES.values())
    for modality, name in DATASET_FILES.items():
        data = load(out / name)
        n = len(data["labels"])
        assert n == manifest["datasets"][modality]["total"] > 0
        assert data["cubes"].shape == (n, 48, 48, 48)
        assert data["positions"].shape == (n, 13) and data["centres_voxel"].shape == (n, 3)
        assert data["centres_mm"].shape == (n, 3) and data["patient_ids"].shape == (n,)
        assert data["patient_ids"].dtype.kind == "U"  # plain strings, no pickled objects
        assert set(np.unique(data["labels"])) <= {0, 1}
        assert 0.0 <= data["cubes"].min() and data["cubes"].max() <= 1.0
        np.testing.assert_array_equal(data["positions"].sum(axis=1), data["labels"])  # one-hot for positives only


def test_positive_cubes_are_centred_on_their_aneurysm_with_the_right_one_hot(built):
    root, out, _, truth = built
    localizers = pd.read_csv(root / "train_localizers.csv")
    checked = 0
    for modality, name in DATASET_FILES.items():
        data = load(out / name)
        for index in np.flatnonzero(data["kinds"] == "positive"):
            uid = data["patient_ids"][index]
            location = LOCATIONS[int(np.argmax(data["positions"][index]))]
            aneurysms = [a for a in truth["series"][uid]["aneurysms"] if a["location"] == location]
            assert len(aneurysms) == 1 and location in set(localizers[localizers.SeriesInstanceUID == uid].location)
            distance = np.linalg.norm(data["centres_mm"][index] - aneurysms[0]["centre_mm"])
            assert distance < aneurysms[0]["diameter_mm"] / 2
            cube = data["cubes"][index].astype(np.float32)
            centre = cube[22:27, 22:27, 22:27].mean()
            if modality == "MRI T2":
                assert centre < np.median(cube)  # a flow void
            else:
                assert centre > np.percentile(cube, 97)  # the brightest blob sits at the centre
            checked += 1
    assert checked == sum(len(e["aneurysms"]) for e in truth["series"].values())


def test_negatives_keep_their_distance_from_every_aneurysm(built):
    _, out, _, truth = built
    for name in DATASET_FILES.values():
        data = load(out / name)
        for index in np.flatnonzero(data["labels"] == 0):
            uid = data["patient_ids"][index]
            for aneurysm in truth["series"][uid]["aneurysms"]:
                distance = np.linalg.norm(data["centres_mm"][index] - aneurysm["centre_mm"])
                assert distance >= CONFIG.min_distance_mm - aneurysm["diameter_mm"] / 2
        kinds = set(data["kinds"][data["labels"] == 0])
        assert "hard negative" in kinds


def test_hard_negatives_sit_on_vessels(built):
    _, out, _, _ = built
    cta = load(out / DATASET_FILES["CTA"])
    centre = cta["cubes"][cta["kinds"] == "hard negative"][:, 24, 24, 24].astype(np.float32)
    assert len(centre) and np.all((centre > 0.3) & (centre < 0.65))  # contrast-filled lumen, 200-550 HU
    t2 = load(out / DATASET_FILES["MRI T2"])
    hard = t2["cubes"][t2["kinds"] == "hard negative"][:, 24, 24, 24].astype(np.float32)
    easy = t2["cubes"][t2["kinds"] == "negative"][:, 24, 24, 24].astype(np.float32)
    assert hard.mean() < easy.mean()  # flow voids are darker than ordinary tissue


def test_balance_table_matches_the_manifest(built):
    _, _, manifest, _ = built
    table = balance_table(manifest)
    assert list(table.columns) == ["Modality", "Series", "Positive cubes", "Negative cubes", "Total", "Positive share"]
    assert list(table.Modality) == ["CTA", "MRA", "MRI T2", "MRI T1post", "All"]
    for row in table.itertuples(index=False):
        if row.Modality != "All":
            counts = manifest["datasets"][row.Modality]
            assert (row.Series, row._2, row._3, row.Total) == (
                counts["series"], counts["positive_cubes"], counts["negative_cubes"], counts["total"])
    assert table.iloc[-1].Total == sum(c["total"] for c in manifest["datasets"].values())
    assert all(o["status"] == "ok" for o in manifest["series"].values())
    assert (built[1] / MANIFEST_NAME).is_file()


def test_a_rebuild_reuses_the_cached_volumes_and_gives_the_same_cubes(built, tmp_path):
    root, out, _, _ = built
    again = tmp_path / "again"
    shutil.copytree(out / "cache", again / "cache")
    manifest = build_datasets(root, again, CONFIG, workers=1)
    assert all(o["from_cache"] for o in manifest["series"].values())
    for name in DATASET_FILES.values():
        first, second = load(out / name), load(again / name)
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])


def test_a_series_folder_changed_after_a_build_is_read_again_not_taken_from_the_cache(built, tmp_path):
    root, out, _, _ = built
    data, again = tmp_path / "data", tmp_path / "again"
    shutil.copytree(root, data)
    shutil.copytree(out / "cache", again / "cache")
    table = pd.read_csv(data / "train.csv", dtype=str)
    emptied, rewritten = table.SeriesInstanceUID[0], table.SeriesInstanceUID[1]
    for path in (data / "series" / emptied).iterdir():
        path.unlink()
    first = sorted((data / "series" / rewritten).iterdir())[0]
    first.write_bytes(first.read_bytes())  # same bytes, a newer file: read again to be safe
    manifest = build_datasets(data, again, CONFIG, workers=1)
    outcomes = manifest["series"]
    assert outcomes[emptied]["status"] == "skipped" and "DICOM" in outcomes[emptied]["reason"]
    assert not outcomes[rewritten]["from_cache"] and outcomes[rewritten]["status"] == "ok"
    others = set(outcomes) - {emptied, rewritten}
    assert others and all(outcomes[uid]["from_cache"] for uid in others)
    assert not list((again / "cache").glob(f"*/{emptied}.npz"))  # the stale volume is gone


def test_broken_series_and_bad_localizers_are_reported_not_fatal(built, tmp_path):
    root, _, _, truth = built
    data = tmp_path / "data"
    shutil.copytree(root, data)
    uids = list(truth["series"])
    broken = uids[0]
    for path in (data / "series" / broken).iterdir():
        path.write_bytes(b"not a dicom file")
    positives = [u for u, e in truth["series"].items() if e["aneurysms"] and u != broken]
    localizers = pd.read_csv(data / "train_localizers.csv", dtype=str)
    localizers.loc[localizers.SeriesInstanceUID == positives[0], "SOPInstanceUID"] = "1.2.3.4.5"
    localizers = localizers[localizers.SeriesInstanceUID != positives[1]]
    localizers.to_csv(data / "train_localizers.csv", index=False)
    manifest = build_datasets(data, tmp_path / "out", CONFIG, workers=1, use_cache=False)
    series = manifest["series"]
    assert series[broken]["status"] == "skipped" and "DICOM" in series[broken]["reason"]
    assert series[positives[0]]["status"] == "skipped" and "localizer" in series[positives[0]]["reason"]
    assert any("not in the series" in w for w in series[positives[0]]["warnings"])
    assert series[positives[1]]["status"] == "skipped"
    assert sum(o["status"] == "ok" for o in series.values()) == len(uids) - 3
    for name in DATASET_FILES.values():
        ids = load(tmp_path / "out" / name)["patient_ids"]
        assert broken not in ids and positives[0] not in ids


def test_an_interrupted_build_leaves_no_partial_file(built, tmp_path):
    root, _, _, _ = built
    out = tmp_path / "out"
    out.mkdir()
    (out / DATASET_FILES["CTA"]).write_bytes(b"previous dataset")

    def interrupt(done, total, result):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_datasets(root, out, CONFIG, workers=1, progress=interrupt, use_cache=False)
    assert sorted(p.name for p in out.iterdir()) == [DATASET_FILES["CTA"]]
    assert (out / DATASET_FILES["CTA"]).read_bytes() == b"previous dataset"


def test_cli_builds_and_prints_the_balance_table(built, tmp_path):
    root, _, _, _ = built
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--data", str(root), "--out", str(tmp_path / "cli"),
         "--workers", "1", "--modalities", "MRA,MRI T1post", "--negatives", "2", "--jitter", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Positive share" in result.stdout and "MRA" in result.stdout and "CTA" not in result.stdout
    manifest = json.loads((tmp_path / "cli" / MANIFEST_NAME).read_text())
    assert manifest["config"]["negatives"] == 2 and manifest["config"]["modalities"] == ["MRA", "MRI T1post"]


def test_parse_coordinates_is_safe():
    assert parse_coordinates("{'x': 258.36, 'y': 261.36}") == (258.36, 261.36, 0)
    assert parse_coordinates("{'x': 1, 'y': 2, 'f': 7}") == (1.0, 2.0, 7)
    with pytest.raises(ValueError):
        parse_coordinates("__import__('os').system('echo hacked')")
