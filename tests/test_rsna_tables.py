"""The RSNA tables (pipeline.io.rsna) as an attacker or a careless export writes them: a series
identifier that is a path, malformed CSV, labels that are not 0/1, duplicate series, absurd
localizers. Each is refused with one sentence (exit 2 on the command line, a sidebar message
on every page), nothing outside the named folders is read or written."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.errors import IngestError
from pipeline.io.rsna import is_uid, parse_coordinates, read_localizers, read_train

PAGES = ("pages/explore.py", "pages/build.py", "pages/train.py", "pages/infer.py")


@pytest.fixture
def folder(demo, tmp_path):
    """A copy of the demo's tables (the series folders linked, not copied)."""
    root, _, _ = demo
    copy = tmp_path / "data"
    copy.mkdir()
    for name in ("train.csv", "train_localizers.csv"):
        shutil.copy(root / name, copy / name)
    (copy / "series").symlink_to(root / "series")
    return copy


def edit_train(folder, change):
    table = pd.read_csv(folder / "train.csv", dtype=str)
    change(table)
    table.to_csv(folder / "train.csv", index=False)


def test_uids_are_digits_and_dots():
    assert is_uid("1.2.826.0.1.3680043.10.1234.5") and is_uid("0.1")
    for bad in ("../../etc/passwd", "1.2/../3", "1..2", "1.02", "", "1.2.", "a.1", "1" * 65, None):
        assert not is_uid(bad), bad


def test_a_series_identifier_that_is_a_path_is_refused_and_nothing_is_written_outside(folder, tmp_path):
    outside = tmp_path / "outside"
    (outside / "series").mkdir(parents=True)
    edit_train(folder, lambda t: t.loc.__setitem__((0, "SeriesInstanceUID"), "../../outside/series"))
    with pytest.raises(IngestError, match="row 2: '../../outside/series' is not a DICOM SeriesInstanceUID"):
        read_train(folder)
    out = tmp_path / "datasets"
    result = subprocess.run([sys.executable, "-m", "pipeline", "build", "--data", str(folder), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.name for p in outside.rglob("*")) == ["series"]


@pytest.mark.parametrize("content, message", [
    (b"", "train.csv is empty"),
    (bytes(range(256)) * 8, "cannot be read as CSV|lacks the column"),
    (b"SeriesInstanceUID,Modality\n1.2,CTA\n1.3,CTA,extra,cells\n", "cannot be read as CSV"),
])
def test_a_malformed_train_csv_is_one_sentence(folder, content, message):
    (folder / "train.csv").write_bytes(content)
    with pytest.raises(IngestError, match=message):
        read_train(folder)


@pytest.mark.parametrize("value", ["yes", "", "2", "0.5", "-1"])
def test_a_label_that_is_not_0_or_1_is_refused(folder, value):
    edit_train(folder, lambda t: t.loc.__setitem__((1, "Aneurysm Present"), value))
    with pytest.raises(IngestError, match="row 3, column 'Aneurysm Present'.* is not 0 or 1"):
        read_train(folder)


def test_a_series_listed_twice_is_refused(folder):
    edit_train(folder, lambda t: t.loc.__setitem__(len(t), t.iloc[0]))
    with pytest.raises(IngestError, match="more than once"):
        read_train(folder)


def test_labels_are_integers_after_the_checks(folder):
    table = read_train(folder)
    assert table["Aneurysm Present"].dtype.kind == "i" and set(table["Aneurysm Present"]) <= {0, 1}


@pytest.mark.parametrize("text", ["{'x': 1e999, 'y': 2}", "{'x': 1, 'y': 2, 'f': 1e999}", "{'x': float('nan')}",
                                  "{'x': 1, 'y': 2, 'f': -1}", "{'x': 1, 'y': 2, 'f': 1.5}", "[1, 2]", "x" * 10])
def test_absurd_coordinates_are_refused(text):
    with pytest.raises((ValueError, SyntaxError, TypeError, OverflowError)):
        parse_coordinates(text)


def test_bad_localizer_rows_are_reported_and_an_empty_file_means_none(folder):
    table = pd.read_csv(folder / "train_localizers.csv", dtype=str)
    table.loc[0, "coordinates"] = "{'x': 1, 'y': 2, 'f': 1e999}"
    table.loc[1, "SeriesInstanceUID"] = "../x"
    table.to_csv(folder / "train_localizers.csv", index=False)
    found, problems = read_localizers(folder)
    assert len(problems) == 2 and "row 2" in problems[0] and "row 3" in problems[1]
    assert sum(map(len, found.values())) == len(table) - 2
    (folder / "train_localizers.csv").write_bytes(b"")
    assert read_localizers(folder) == ({}, ["train_localizers.csv is empty: no aneurysm position is known."])


def test_an_unknown_modality_is_reported_by_the_build(folder, tmp_path):
    from pipeline.dataset.build import _tasks
    from pipeline.dataset.config import BuildConfig

    edit_train(folder, lambda t: t.loc.__setitem__((0, "Modality"), "PET"))
    tasks, problems = _tasks(folder, tmp_path, BuildConfig(), use_cache=False)
    uid = pd.read_csv(folder / "train.csv", dtype=str).loc[0, "SeriesInstanceUID"]
    assert uid not in {t.series_uid for t in tasks}
    assert any(uid in p and "'PET'" in p for p in problems)


def test_every_page_says_why_a_bad_train_csv_cannot_be_used(folder, monkeypatch):
    (folder / "train.csv").write_bytes(bytes(range(256)) * 8)
    monkeypatch.setenv("ANEURYSM_DATA", str(folder))
    app = AppTest.from_file("../app.py", default_timeout=120).run()
    assert not app.exception
    assert any("cannot be used" in e.value for e in app.sidebar.error)
    for page in PAGES:
        app.switch_page(page).run()
        assert not app.exception, page
