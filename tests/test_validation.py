"""The documented validation: every family and shift scored, each set generated once, kept by name."""

from __future__ import annotations

import shutil

from pipeline.__main__ import main
from pipeline.runs import RunFolder, set_kind
from pipeline.validation import ValidationSet, evaluate_families, validation_sets


def test_the_documented_sets_cover_the_demo_test_seed_every_shift_and_the_external_family():
    sets = validation_sets()
    names = [s.name for s in sets]
    assert names[0] == "demo" and names[-1] == "external" and len(names) == len(set(names)) == 12
    assert [set_kind(n) for n in names] == ["in family"] + ["shifted demo"] * 10 + ["external family"]
    assert "demo, calibre x0.7" in names and "demo, rotation 25 deg" in names


def test_a_run_is_scored_on_each_set_which_is_generated_once(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    sets = [ValidationSet("demo", 11, 1, "noise=2.5"), ValidationSet("external", 3, 1)]
    reports = []
    results = evaluate_families(run, tmp_path / "validation", sets=sets,
                                report=lambda name, what, done, total: reports.append((name, what)))
    assert list(results) == ["demo, noise x2.5", "external"]
    assert {("external", "generating"), ("external", "scoring"), ("demo, noise x2.5", "generating")} <= set(reports)
    assert results["external"]["series"] == 1 and results["external"]["family"]["validation_only"]
    assert {"demo, noise x2.5", "external"} <= set(RunFolder(run).read_test_evaluations())
    written = (tmp_path / "validation" / "external" / "train.csv").stat().st_mtime_ns

    reports.clear()
    evaluate_families(run, tmp_path / "validation", sets=sets,
                      report=lambda name, what, done, total: reports.append((name, what)))
    assert not any(what == "generating" for _, what in reports)  # kept, not written again
    assert (tmp_path / "validation" / "external" / "train.csv").stat().st_mtime_ns == written


def test_the_command_refuses_families_and_a_test_set_together(trained, tmp_path, capsys):
    assert main(["evaluate", "--run", str(trained), "--families", "--test-set", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
