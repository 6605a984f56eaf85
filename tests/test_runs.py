"""The run folder (pipeline.runs): one status vocabulary, the stop request, metrics that a
resumed run truncates, evaluation files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.runs import (FINISHED, INTERRUPTED, RUNNING, SETTLED, STARTING, STATES, STOPPED, RunFolder, headline,
                           list_runs, score_rows)


def test_a_new_folder_is_starting_and_holds_no_run(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert not run.holds_run() and run.read_status() == {"state": STARTING}
    with pytest.raises(FileNotFoundError, match="not a training run"):
        run.read_split()


def test_running_written_by_a_process_that_is_gone_reads_as_interrupted(tmp_path):
    run = RunFolder(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.write_status({"state": RUNNING, "pid": int(gone.stdout)})
    assert run.read_status()["state"] == INTERRUPTED
    run.write_status({"state": RUNNING, "pid": subprocess.os.getpid()})
    assert run.read_status()["state"] == RUNNING
    run.write_status({"state": FINISHED, "pid": int(gone.stdout)})
    assert run.read_status()["state"] == FINISHED and "updated" in run.read_status()


def test_only_the_known_states_are_written_and_read(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(ValueError, match="unknown run state"):
        run.write_status({"state": "done"})
    (tmp_path / "status.json").write_text(json.dumps({"state": "exploded"}))
    assert run.read_status()["state"] == STARTING
    (tmp_path / "status.json").write_text("{half")
    assert run.read_status()["state"] == STARTING
    assert set(SETTLED) <= set(STATES) and STOPPED in SETTLED


def test_stop_is_requested_and_cleared(tmp_path):
    run = RunFolder(tmp_path)
    assert not run.stop_requested()
    run.request_stop()
    assert run.stop_requested()
    run.clear_stop()
    assert not run.stop_requested()


def test_metrics_skip_a_half_written_line_and_truncate_to_an_epoch(tmp_path):
    run = RunFolder(tmp_path)
    for epoch in (1, 2, 3):
        run.append_metrics({"kind": "step", "epoch": epoch})
        run.append_metrics({"kind": "epoch", "epoch": epoch})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "st')
    assert len(run.read_metrics()) == 6
    run.truncate_metrics(2)
    assert [r["epoch"] for r in run.read_metrics()] == [1, 1, 2, 2]


def test_evaluations_and_runs_are_found(tmp_path):
    old, new = RunFolder(tmp_path / "old"), RunFolder(tmp_path / "new")
    for run in (old, new):
        run.create()
        run.write_config({"epochs": 1})
    assert run.read_evaluation() is None
    new.write_evaluation({"final_score": 0.7})
    for name, score in (("external", 0.55), ("demo, calibre x0.7", 0.8), ("demo", 0.9), ("demo, noise x2.5", 0.6)):
        new.write_test_evaluation({"test_set": name, "final_score": score})
    new.write_test_evaluation({"test_set": "external", "final_score": 0.6})  # a later evaluation replaces it
    assert new.read_evaluation()["final_score"] == 0.7
    tests = new.read_test_evaluations()
    assert list(tests) == ["demo", "demo, calibre x0.7", "demo, noise x2.5", "external"]
    assert tests["external"]["final_score"] == 0.6
    (tmp_path / "not-a-run").mkdir()
    assert {r.name for r in list_runs(tmp_path)} == {"old", "new"}
    asked = RunFolder(tmp_path / "asked")
    asked.write_request({"epochs": 2})  # started from the dashboard, its process not yet up
    assert list_runs(tmp_path)[0].name == "asked" and not asked.holds_run()
    assert asked.read_status()["state"] == STARTING
    assert list_runs(tmp_path / "absent") == []


def test_the_scores_every_display_shows_name_the_family_and_the_worst_shift(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create()
    run.write_evaluation({"final_score": 0.91, "series": 50})
    assert headline(score_rows(run)) == ["held-out 0.910"]
    for name, score in (("demo", 0.9), ("demo, calibre x0.7", 0.71), ("demo, rotation 25 deg", 0.84),
                        ("external", 0.6), ("my-hospital", None)):
        run.write_test_evaluation({"test_set": name, "final_score": score, "series": 48,
                                   "per_modality": {"CTA": {"series": 48, "final_score": score}}})
    rows = score_rows(run)
    assert [(r["test set"], r["measures"]) for r in rows] == [
        ("held-out series", "in family"), ("demo", "in family"), ("demo, calibre x0.7", "shifted demo"),
        ("demo, rotation 25 deg", "shifted demo"), ("external", "external family"), ("my-hospital", "other data")]
    assert headline(rows) == ["held-out 0.910", "demo test set 0.900", "external family 0.600",
                              "worst shift 0.710 (calibre x0.7)"]
