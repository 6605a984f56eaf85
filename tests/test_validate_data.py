"""`python -m pipeline validate DATA`: every problem of a data folder in one table, before a
build (the Exploration page shows the same report)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.io.rsna import ERROR, WARNING, check_data_folder


@pytest.fixture
def folder(demo, tmp_path):
    """A copy of the demo's tables, each series folder linked."""
    root, _, _ = demo
    copy = tmp_path / "data"
    (copy / "series").mkdir(parents=True)
    for name in ("train.csv", "train_localizers.csv"):
        shutil.copy(root / name, copy / name)
    for series in (root / "series").iterdir():
        (copy / "series" / series.name).symlink_to(series)
    return copy


def spoil(folder):
    """Break the folder in every way the check knows; returns the identifiers involved."""
    table = pd.read_csv(folder / "train.csv", dtype=str)
    positive = table.index[table["Aneurysm Present"] == "1"]
    negative = table.index[table["Aneurysm Present"] == "0"]
    uids = {"path": "../../etc", "twice": table.SeriesInstanceUID[negative[0]],
            "unlocated": table.SeriesInstanceUID[positive[0]], "no folder": table.SeriesInstanceUID[negative[1]],
            "empty": table.SeriesInstanceUID[negative[2]], "pet": table.SeriesInstanceUID[negative[3]]}
    table.loc[positive[1], "SeriesInstanceUID"] = uids["path"]
    table.loc[negative[3], "Modality"] = "PET"
    table.loc[positive[0], "Basilar Tip"] = "yes"
    table = pd.concat([table, table.loc[[negative[0]]]], ignore_index=True)
    table.to_csv(folder / "train.csv", index=False)
    localizers = pd.read_csv(folder / "train_localizers.csv", dtype=str)
    localizers = localizers[localizers.SeriesInstanceUID != uids["unlocated"]]
    extra = localizers.iloc[[0]].assign(SeriesInstanceUID="1.2.3.4.5")
    broken = localizers.iloc[[0]].assign(coordinates="{'x': 1e999, 'y': 2}")
    pd.concat([localizers, extra, broken]).to_csv(folder / "train_localizers.csv", index=False)
    (folder / "series" / uids["no folder"]).unlink()
    (folder / "series" / uids["empty"]).unlink()
    (folder / "series" / uids["empty"]).mkdir()
    (folder / "series" / "9.9.9").mkdir()
    return uids


def test_the_demo_data_pass_the_check(demo):
    assert check_data_folder(demo[0]) == []


def test_every_problem_is_listed_with_its_file_and_row(folder):
    uids = spoil(folder)
    findings = check_data_folder(folder)
    text = [(f.severity, f.file, f.message) for f in findings]

    def has(severity, file, *words):
        assert any(s == severity and f == file and all(w in m for w in words) for s, f, m in text), (words, text)

    has(ERROR, "train.csv", "'../../etc' is not a DICOM SeriesInstanceUID")
    has(ERROR, "train.csv", uids["twice"], "more than once (2 rows")
    has(ERROR, "train.csv", "column 'Basilar Tip'", "'yes' is not 0 or 1")
    has(WARNING, "train.csv", uids["pet"], "'PET'", "leaves it out")
    has(WARNING, "train_localizers.csv", "row", "skipped", "out of range")
    has(WARNING, "train_localizers.csv", "1.2.3.4.5", "not listed in train.csv")
    has(WARNING, "train_localizers.csv", uids["unlocated"], "positive but has no localizer")
    has(WARNING, "series/", uids["no folder"], "has no folder")
    has(WARNING, "series/", uids["empty"], "holds no file")
    has(WARNING, "series/", "series/9.9.9 is not listed")
    assert [f.severity for f in findings] == sorted((f.severity for f in findings), key=lambda s: s != ERROR)
    assert next(f for f in findings if "Basilar Tip" in f.message).row >= 2


def test_the_command_prints_the_table_and_exits_2_on_errors(folder):
    spoil(folder)
    result = subprocess.run([sys.executable, "-m", "pipeline", "validate", str(folder)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stdout.splitlines()[0].split() == ["Severity", "File", "Row", "Problem"]
    assert "is not a DICOM SeriesInstanceUID" in result.stdout and "holds no file" in result.stdout
    assert "3 error(s)" in result.stderr and "fix the errors before a build" in result.stderr
    listed = json.loads(subprocess.run([sys.executable, "-m", "pipeline", "validate", str(folder), "--json"],
                                       capture_output=True, text=True, timeout=120).stdout)
    assert {f["severity"] for f in listed} == {ERROR, WARNING} and all(f["message"] for f in listed)


def test_a_clean_folder_exits_0(demo):
    result = subprocess.run([sys.executable, "-m", "pipeline", "validate", str(demo[0])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "0 error(s), 0 warning(s); a build can use it." in result.stderr


def test_a_folder_without_tables_is_one_error(tmp_path):
    findings = check_data_folder(tmp_path)
    assert [(f.severity, f.file) for f in findings] == [(ERROR, "train.csv")]
    assert "no train.csv" in findings[0].message


def test_the_exploration_page_shows_the_same_report(folder, monkeypatch):
    spoil(folder)
    monkeypatch.setenv("ANEURYSM_DATA", str(folder))
    app = AppTest.from_file("../app.py", default_timeout=120).run()
    app.switch_page("pages/explore.py").run()
    assert not app.exception
    assert app.expander[0].label == f"Data folder check: 3 error(s), {len(check_data_folder(folder)) - 3} warning(s)"
    findings = check_data_folder(folder)
    lines = [m.value for m in app.markdown if "**error**" in m.value or "**warning**" in m.value]
    assert len(lines) == len(findings)
    assert "**error**" in lines[0] and "`train.csv, row" in lines[0] and "is not a DICOM SeriesInstanceUID" in lines[0]
    assert any("cannot be used" in e.value for e in app.error)  # and nothing else is drawn from the broken folder
