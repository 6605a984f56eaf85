"""The dataset building page: the balance table of the manifest, and a build run from the page."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.text import progress_text
from pipeline.dataset.store import MANIFEST_NAME


def open_page(monkeypatch, demo, out):
    root, _, _ = demo
    monkeypatch.setenv("ANEURYSM_DATA", str(root))
    monkeypatch.setenv("ANEURYSM_DATASETS_DIR", str(out))
    app = AppTest.from_file("../app.py", default_timeout=300).run()
    app.switch_page("pages/build.py").run()
    assert not app.exception
    return app


def test_the_balance_table_matches_the_manifest(monkeypatch, demo, built):
    _, out, manifest, _ = built
    app = open_page(monkeypatch, demo, out)
    table = app.dataframe[0].value
    for modality, counts in manifest["datasets"].items():
        row = table[table.Modality == modality].iloc[0]
        assert (row["Series"], row["Positive cubes"], row["Negative cubes"], row["Total"]) == (
            counts["series"], counts["positive_cubes"], counts["negative_cubes"], counts["total"])
    files = [name for name, counts in manifest["datasets"].items() if counts["total"]]
    assert len(app.get("download_button")) == len(files)  # every modality's file, not only the small ones


@pytest.mark.slow  # a real build process on a real 2-worker Dask cluster (~20 s)
def test_a_build_started_from_the_page_on_a_dask_cluster_writes_the_datasets(monkeypatch, demo, tmp_path):
    app = open_page(monkeypatch, demo, tmp_path / "datasets")
    assert "No dataset" in app.info[0].value
    app.button_group(key="build_modalities").set_value(["MRA", "MRI T1post"])
    app.number_input(key="build_negatives").set_value(2)
    app.radio(key="build_where").set_value("A Dask cluster")
    app.text_input(key="build_scheduler").set_value("local:2")
    app.button[0].click().run()
    assert not app.exception
    where = next(m.value for m in app.markdown if m.value.startswith("Running on"))
    assert "2 Dask workers at tcp://" in where and "[Dask dashboard](http" in where
    manifest = json.loads((tmp_path / "datasets" / MANIFEST_NAME).read_text())
    assert set(manifest["datasets"]) == {"MRA", "MRI T1post"} and manifest["config"]["negatives"] == 2
    balance = next(d.value for d in app.dataframe if "Positive share" in getattr(d.value, "columns", []))
    assert balance.Modality.tolist() == ["MRA", "MRI T1post", "All"]


def test_a_dask_cluster_without_an_address_is_refused_on_the_page(monkeypatch, demo, tmp_path):
    app = open_page(monkeypatch, demo, tmp_path / "datasets")
    app.radio(key="build_where").set_value("A Dask cluster")
    app.button[0].click().run()
    assert "Give the Dask scheduler's address" in app.error[0].value
    assert not (tmp_path / "datasets").exists()


def test_a_damaged_dataset_is_named_on_the_page_not_a_traceback(monkeypatch, demo, built, tmp_path):
    import shutil

    from pipeline.dataset.store import DATASET_FILES

    _, out, _, _ = built
    copy = tmp_path / "datasets"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("cache"))
    damaged = copy / DATASET_FILES["MRA"]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    app = open_page(monkeypatch, demo, copy)
    assert any(str(damaged) in w.value and "damaged or truncated" in w.value for w in app.warning)
    app.switch_page("pages/train.py").run()
    assert not app.exception


def test_the_progress_says_how_long_it_took_and_how_long_is_left():
    assert progress_text(0, 200, 1.0) == "0 / 200 series · 1 s elapsed"
    assert progress_text(50, 200, 30.0) == "50 / 200 series · 30 s elapsed · about 1 min 30 s left"
    assert progress_text(200, 200, 125.0) == "200 / 200 series · 2 min 05 s elapsed"
