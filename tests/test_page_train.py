"""The training page: follows a run from its folder, starts one that outlives the page, evaluates it."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import unseen_dataset


def open_page(monkeypatch, demo, built, runs):
    root, _, _ = demo
    monkeypatch.setenv("ANEURYSM_DATA", str(root))
    monkeypatch.setenv("ANEURYSM_DATASETS_DIR", str(built[1]))
    monkeypatch.setenv("ANEURYSM_RUNS_DIR", str(runs))
    app = AppTest.from_file("../app.py", default_timeout=300).run()
    app.switch_page("pages/train.py").run()
    assert not app.exception
    return app


def test_a_finished_run_is_shown_with_its_numbers(monkeypatch, demo, built, trained, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs / "first")
    app = open_page(monkeypatch, demo, built, runs)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["State"] == "finished" and metrics["Epoch"] == "1 / 1"
    epoch = [json.loads(l) for l in (trained / "metrics.jsonl").read_text().splitlines() if '"epoch"' in l][-1]
    assert metrics["Best held-out series score"] == f"{epoch['series_score']:.3f}"  # the series scored whole
    assert app.dataframe[-1].value.Run.tolist() == ["first"]


def test_a_run_says_how_many_processes_trained_it(monkeypatch, demo, built, trained, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs / "alone")
    shutil.copytree(trained, runs / "shared")
    status = json.loads((runs / "shared" / "status.json").read_text())
    (runs / "shared" / "status.json").write_text(json.dumps(dict(status, processes=2)))  # as a DDP run writes it
    app = open_page(monkeypatch, demo, built, runs)
    table = app.dataframe[-1].value.set_index("Run")
    assert table.loc["shared", "Processes"] == 2 and table.loc["alone", "Processes"] == 1
    for name, trained_by in (("shared", "2 data-parallel processes on CPU"), ("alone", "1 process on CPU")):
        app.selectbox(key="train_selected").set_value(name).run()
        assert any(c.value.startswith(f"Trained by {trained_by}, ") for c in app.caption)


def test_a_run_scored_on_a_test_set_shows_every_score_by_family(monkeypatch, demo, built, trained, tmp_path):
    from pipeline.inference.evaluate import evaluate_run

    runs = tmp_path / "runs"
    run = runs / "tested"
    shutil.copytree(trained, run)
    held_out = evaluate_run(run, demo[0])
    test = evaluate_run(run, unseen_dataset(demo[0], run, tmp_path / "unseen"), test_set=True)
    app = open_page(monkeypatch, demo, built, runs)
    table = next(frame.value for frame in app.dataframe if "measures" in frame.value.columns)
    assert table["test set"].tolist() == ["held-out series", "unseen"]
    assert table["measures"].tolist() == ["in family", "other data"]
    assert table["series"].tolist() == [held_out["series"], test["series"]]
    assert table["final score"].tolist() == pytest.approx([held_out["final_score"], test["final_score"]], nan_ok=True)
    froc = [float("nan") if r["froc"]["sensitivity"]["1"] is None else r["froc"]["sensitivity"]["1"]
            for r in (held_out, test)]
    assert table["FROC sensitivity at 1 FP per case"].tolist() == pytest.approx(froc, nan_ok=True)
    assert not any("Only in-family figures" in c.value for c in app.caption)  # other data measures transfer


@pytest.mark.slow  # a real training process (~50 s)
def test_a_run_started_from_the_page_trains_in_its_own_process(monkeypatch, demo, built, tmp_path):
    runs = tmp_path / "runs"
    app = open_page(monkeypatch, demo, built, runs)
    app.number_input(key="train_epochs").set_value(1)
    app.number_input(key="train_steps").set_value(6)
    app.text_input(key="train_name").set_value("from-page")
    app.checkbox(key="train_light").check()
    app.button[0].click().run()
    assert not app.exception
    status = runs / "from-page" / "status.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if status.is_file() and json.loads(status.read_text())["state"] in ("finished", "failed"):
            break
        time.sleep(1)
    assert json.loads(status.read_text())["state"] == "finished"
    config = json.loads((runs / "from-page" / "config.json").read_text())
    assert config["model"]["first_stage"] is False and config["steps_per_epoch"] == 6
    app.run()
    estimate = " ".join(c.value for c in app.caption if c.value.startswith("Time:"))
    assert "crops/s run from-page measured here" in estimate  # the next run's time, from this one's speed
    app.run()
    evaluate = [b for b in app.button if b.label == "Evaluate on held-out series"]
    assert evaluate
    evaluate[0].click().run()
    assert (runs / "from-page" / "evaluation.json").is_file()
