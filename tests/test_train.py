"""Training runs: series split, cube loading, checkpoints, resume, stop (batches: test_crops.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.labels import LOCATIONS
from pipeline.dataset.store import resolve_datasets, series_labels
from pipeline.model.checkpoint import load_checkpoint
from pipeline.runs import STATUS, STOP_FILE, RunFolder
from pipeline.training.config import TrainConfig
from pipeline.training.data import load_cubes, split_series
from pipeline.training.trainer import train


@pytest.fixture(scope="module")
def config(built):
    _, out, _, _ = built
    return TrainConfig(datasets=resolve_datasets([out]), epochs=2, steps_per_epoch=5, crop=64, batch_size=2)


@pytest.fixture(scope="module")
def finished(config, tmp_path_factory):
    """One finished run of ``config``, shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    return run, train(config, run)


def test_split_is_by_series_and_keeps_both_classes():
    series = np.repeat([f"s{i}" for i in range(20)], 5)
    labels = np.array([1 if i < 8 else 0 for i in range(20)]).repeat(5) * np.tile([1, 0, 0, 0, 0], 20)
    split = split_series(series, labels, 0.25, seed=0)
    assert not set(split["train"]) & set(split["validation"])
    assert set(split["train"]) | set(split["validation"]) == set(series)
    positive = {f"s{i}" for i in range(8)}
    assert positive & set(split["validation"]) and (set(split["validation"]) - positive)
    assert split == split_series(series, labels, 0.25, seed=0)


def test_only_the_kept_series_cubes_are_loaded_but_every_series_aneurysms_are(config):
    series, labels = series_labels(config.datasets)
    everything = load_cubes(config.datasets)
    assert len(everything.labels) == len(series) and (everything.labels.numpy() == labels).all()
    one = sorted(everything.aneurysms)[0]
    kept = load_cubes(config.datasets, keep={one})
    assert set(kept.series) == {one} and len(kept.cubes) == len(kept.labels) == (series == one).sum()
    assert kept.aneurysms.keys() == everything.aneurysms.keys()  # positions of all series, for training
    assert kept.volumes == everything.volumes


def test_a_run_writes_its_folder_and_loadable_checkpoints(config, finished):
    run, record = finished
    assert {"config.json", "split.json", "metrics.jsonl", "last.pt", "best.pt", STATUS} <= {p.name for p in run.iterdir()}
    assert json.loads((run / STATUS).read_text())["state"] == "finished"
    metrics = RunFolder(run).read_metrics()
    assert [m["epoch"] for m in metrics if m["kind"] == "epoch"] == [1, 2]
    assert record["epoch"] == 2 and record["cubes_per_second"] > 0
    model, meta = _load(run / "best.pt")  # weights_only=True inside
    # the last epochs score the held-out series whole; best.pt is the best of them
    scores = [m["series_score"] for m in metrics if m["kind"] == "epoch"]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert meta["series_validation_score"] == max(scores) and scores[meta["epoch"] - 1] == max(scores)
    assert meta["locations"] == list(LOCATIONS) and meta["preprocess"]["target_spacing"] == [0.8, 0.8, 0.8]
    assert len(meta["dataset_manifest_sha256"]) == 64
    torch.load(run / "last.pt", weights_only=True)
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["validation"])
    with pytest.raises(FileExistsError):
        train(config, run)


def test_a_run_fits_its_location_prior_and_refuses_a_bad_crop(config, finished, tmp_path):
    run, _ = finished
    _, meta = _load(run / "best.pt")
    assert meta["location_prior"]["samples"] > 0  # fitted on the training series' aneurysms
    assert meta["train_config"]["crop"] == 64
    steps = [m for m in RunFolder(run).read_metrics() if m["kind"] == "step"]
    assert steps and all(m["crops_per_second"] > 0 for m in steps)
    with pytest.raises(ValueError, match="multiple of 16"):
        train(TrainConfig(datasets=config.datasets, crop=70), tmp_path / "bad")


def test_a_lighter_model_and_sparser_cube_validation_are_kept_in_the_run(config, tmp_path):
    from dataclasses import replace

    from pipeline.model.config import ModelConfig

    run = tmp_path / "run"
    train(replace(config, epochs=3, cube_validation_every=2, model=ModelConfig(first_stage=False)), run)
    aucs = [m["validation_auc"] for m in RunFolder(run).read_metrics() if m["kind"] == "epoch"]
    assert aucs[0] is None and aucs[1] is not None and aucs[2] is not None  # every 2nd epoch, and the last
    model, meta = _load(run / "best.pt")
    assert meta["model"]["first_stage"] is False and len(model.stages) == 3


def test_resume_continues_from_the_last_checkpoint_like_an_uninterrupted_run(config, finished, tmp_path):
    whole, _ = finished

    def die_after_first_epoch(record):
        if record["kind"] == "epoch" and record["epoch"] == 1:
            raise KeyboardInterrupt

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        train(config, broken, progress=die_after_first_epoch)
    assert json.loads((broken / STATUS).read_text())["state"] == "stopped"
    train(None, broken, resume=True)
    epochs = [m for m in RunFolder(broken).read_metrics() if m["kind"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2]
    reference = [m for m in RunFolder(whole).read_metrics() if m["kind"] == "epoch"]
    assert epochs[1]["train_loss"] == pytest.approx(reference[1]["train_loss"], rel=1e-4)


def test_a_stop_file_ends_the_run_cleanly(config, tmp_path):
    run = tmp_path / "run"

    def stop(record):
        if record["kind"] == "epoch":  # asked to stop while the second epoch runs
            (run / STOP_FILE).touch()

    train(config, run, progress=stop)
    status = json.loads((run / STATUS).read_text())
    assert status["state"] == "stopped" and status["epoch"] == 1
    assert (run / "last.pt").is_file()


def test_a_stop_file_during_the_series_validation_stops_within_one_series(config, tmp_path, monkeypatch):
    import dataclasses

    import pipeline.training.validation as validation

    run, read = tmp_path / "run", []
    real = validation.load_processed

    def load_and_stop(path):  # the user presses Stop while the first held-out series is scored
        read.append(path)
        (run / STOP_FILE).touch()
        return real(path)

    monkeypatch.setattr(validation, "load_processed", load_and_stop)
    train(dataclasses.replace(config, epochs=1, series_validation_epochs=1), run)
    status = json.loads((run / STATUS).read_text())
    assert status["state"] == "stopped" and status["epoch"] == 0  # the epoch did not count
    assert len(read) == 1  # not every held-out series first
    assert not (run / "last.pt").exists() and not any(r["kind"] == "epoch" for r in RunFolder(run).read_metrics())


def test_a_run_records_its_training_prevalence_and_how_many_series_had_vessel_labels(finished):
    run, _ = finished
    meta = load_checkpoint(run / "best.pt").meta
    split = json.loads((run / "split.json").read_text())
    assert 0 < meta.label_prevalence["Aneurysm Present"] < 1
    assert meta.model.vessel_head  # the default: vessel-aware
    assert json.loads((run / STATUS).read_text())["vessel_labelled_series"] == len(split["train"])  # the demo has maps


def _load(path):
    """The network and the checkpoint's meta data as written."""
    trained = load_checkpoint(path)
    return trained.network, trained.meta.to_dict()
