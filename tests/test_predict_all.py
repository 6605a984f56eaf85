"""predict-all (pipeline.inference.batch): a data folder scored into the submission table, one
row per series in the challenge's column order, resumable after a kill, a fallback row for a
series that cannot be read, and a table it did not write left alone."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline.__main__ import main
from pipeline.inference.batch import SUBMISSION_COLUMNS, failures_path, predict_all
from pipeline.inference.predictor import Predictor
from pipeline.labels import LABEL_COLUMNS
from pipeline.model.checkpoint import load_checkpoint


def _rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == SUBMISSION_COLUMNS
        return list(reader)


def test_every_series_gets_one_row_of_the_14_columns_as_predict_gives_them(demo, trained, tmp_path, capsys):
    root, _, truth = demo
    out = tmp_path / "predictions.csv"
    assert main(["predict-all", str(root), "--out", str(out), "--model", str(trained / "best.pt")]) == 0
    rows = _rows(out)
    assert [r["SeriesInstanceUID"] for r in rows] == sorted(truth["series"])
    uid = rows[0]["SeriesInstanceUID"]
    expected = Predictor(trained / "best.pt").predict(root / "series" / uid).probabilities
    assert all(float(rows[0][name]) == pytest.approx(expected[name], abs=1e-6) for name in LABEL_COLUMNS)
    assert f"{len(rows)} scored now, 0 already there, 0 given the fallback" in capsys.readouterr().out
    assert main(["predict-all", str(root), "--out", str(out), "--model", str(trained / "best.pt")]) == 0
    assert f"0 scored now, {len(rows)} already there" in capsys.readouterr().out  # nothing scored twice
    assert _rows(out) == rows


def test_a_series_that_cannot_be_read_gets_the_training_prevalence_and_its_reason(demo, trained, tmp_path):
    root, _, truth = demo
    data = tmp_path / "data"
    shutil.copytree(root / "series", data / "series")
    broken = sorted(truth["series"])[2]
    for path in (data / "series" / broken).iterdir():
        path.write_bytes(b"not DICOM at all")
    summary = predict_all(data, tmp_path / "p.csv", trained / "best.pt")
    assert summary["fell_back"] == 1 and summary["scored"] == len(truth["series"]) - 1
    row = next(r for r in _rows(tmp_path / "p.csv") if r["SeriesInstanceUID"] == broken)
    prevalence = load_checkpoint(trained / "best.pt").meta.label_prevalence
    assert prevalence is not None and 0 < prevalence["Aneurysm Present"] < 1
    assert {name: float(row[name]) for name in LABEL_COLUMNS} == pytest.approx(prevalence)
    with open(failures_path(tmp_path / "p.csv"), newline="") as handle:
        failures = list(csv.DictReader(handle))
    assert [f["SeriesInstanceUID"] for f in failures] == [broken] and "DICOM" in failures[0]["reason"]


def test_a_killed_run_leaves_a_whole_table_and_the_next_one_completes_it(demo, trained, tmp_path):
    root, _, truth = demo
    out = tmp_path / "predictions.csv"
    command = [sys.executable, "-m", "pipeline", "predict-all", str(root), "--out", str(out),
               "--model", str(trained / "best.pt")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and not (out.is_file() and len(_rows(out))):
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = _rows(out)  # whatever moment the kill struck, a complete table
    assert 0 < len(partial) < len(truth["series"]), "killed before its first save or after its last one"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left"
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    final = _rows(out)
    uids = [r["SeriesInstanceUID"] for r in final]
    assert uids == sorted(truth["series"]) and len(set(uids)) == len(uids)  # none missing, none twice
    assert all(row in final for row in partial)  # what was done was kept, not redone differently


def test_a_file_that_is_not_its_table_is_left_alone(demo, trained, tmp_path, capsys):
    out = tmp_path / "notes.csv"
    out.write_text("name,value\nsomething,1\n")
    assert main(["predict-all", str(demo[0]), "--out", str(out), "--model", str(trained / "best.pt")]) == 2
    assert "is not a table of predict-all" in capsys.readouterr().err
    assert out.read_text() == "name,value\nsomething,1\n"
    assert main(["predict-all", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "is not a folder" in capsys.readouterr().err
