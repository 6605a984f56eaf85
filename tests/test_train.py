"""Training runs: series split, augmentation with label swap, checkpoints, resume, stop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.labels import LOCATIONS
from pipeline.train import MINED, STATUS, STOP_FILE, TrainConfig, augment, load_cubes, load_model, mining_epochs, \
    read_metrics, resolve_datasets, split_series, train


@pytest.fixture(scope="module")
def config(built):
    _, out, _, _ = built
    return TrainConfig(datasets=resolve_datasets([out]), epochs=2, batch_size=16)


def test_split_is_by_series_and_keeps_both_classes():
    series = np.repeat([f"s{i}" for i in range(20)], 5)
    labels = np.array([1 if i < 8 else 0 for i in range(20)]).repeat(5) * np.tile([1, 0, 0, 0, 0], 20)
    split = split_series(series, labels, 0.25, seed=0)
    assert not set(split["train"]) & set(split["validation"])
    assert set(split["train"]) | set(split["validation"]) == set(series)
    positive = {f"s{i}" for i in range(8)}
    assert positive & set(split["validation"]) and (set(split["validation"]) - positive)
    assert split == split_series(series, labels, 0.25, seed=0)


def test_left_right_flip_swaps_the_lateral_labels():
    cubes = torch.zeros(64, 1, 8, 8, 8)
    cubes[:, :, :, :, 0] = 1.0  # a marker on the low-x (patient's right) face
    left_mca = LOCATIONS.index("Left Middle Cerebral Artery")
    basilar = LOCATIONS.index("Basilar Tip")
    locations = torch.tensor([left_mca, basilar, -1, left_mca] * 16)
    out, new = augment(cubes, locations, torch.Generator().manual_seed(0), max_shift=0)
    flipped = out[:, 0, 4, 4, -1] > out[:, 0, 4, 4, 0]  # marker moved to the high-x face
    assert 0 < flipped.sum() < 64
    for i in range(64):
        if locations[i] == left_mca:
            expected = LOCATIONS.index("Right Middle Cerebral Artery") if flipped[i] else left_mca
            assert new[i] == expected
        else:
            assert new[i] == locations[i]  # midline and negatives unchanged


def test_rotated_cubes_keep_their_content_and_lose_their_location():
    cubes = torch.rand(32, 1, 8, 8, 8)
    cubes[:, :, 0, 0, :] = 2.0  # an asymmetric marker: a bright edge along x
    locations = torch.full((32,), LOCATIONS.index("Basilar Tip"))
    out, new = augment(cubes, locations, torch.Generator().manual_seed(0), max_shift=0, symmetry_share=1.0)
    assert (new == -1).all()  # which artery is unknown once the cube has been turned
    moved = 0
    for before, after in zip(cubes, out):
        assert np.corrcoef(np.sort(before.ravel().numpy()), np.sort(after.ravel().numpy()))[0, 1] > 0.99
        moved += not bool((after[0, 0, 0, :] > after.mean() + 0.5).all())
    assert moved > 8  # the edge points another way in most cubes


def test_a_run_writes_its_folder_and_loadable_checkpoints(config, tmp_path):
    run = tmp_path / "run"
    record = train(config, run)
    assert {"config.json", "split.json", "metrics.jsonl", "last.pt", "best.pt", STATUS} <= {p.name for p in run.iterdir()}
    assert json.loads((run / STATUS).read_text())["state"] == "finished"
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics if m["kind"] == "epoch"] == [1, 2]
    assert record["epoch"] == 2 and record["cubes_per_second"] > 0
    model, meta = load_model(run / "best.pt")  # weights_only=True inside
    assert meta["locations"] == list(LOCATIONS) and meta["preprocess"]["target_spacing"] == [0.8, 0.8, 0.8]
    assert len(meta["dataset_manifest_sha256"]) == 64
    torch.load(run / "last.pt", weights_only=True)
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["validation"])
    with pytest.raises(FileExistsError):
        train(config, run)


def test_hard_negative_mining_adds_windows_of_training_series_far_from_aneurysms(config, tmp_path):
    run = tmp_path / "run"
    train(config, run)  # two epochs: one mining round after the first
    split = json.loads((run / "split.json").read_text())
    rounds = json.loads((run / MINED).read_text())["rounds"]
    assert [r["epoch"] for r in rounds] == mining_epochs(config) == [1]
    windows = rounds[0]["windows"]
    assert set(windows) <= set(split["train"]) and windows  # never a validation series
    data = load_cubes(config.datasets)
    for uid, centres in windows.items():
        assert 0 < len(centres) <= config.mined_per_series
        for aneurysm in data.aneurysms.get(uid, []):
            distance = np.linalg.norm((np.array(centres) - aneurysm) * 0.8, axis=1)
            assert distance.min() >= data.min_distance_mm
    mining = [m for m in read_metrics(run) if m["kind"] == "mining"]
    assert mining[0]["cubes"] == sum(len(c) for c in windows.values())
    _, meta = load_model(run / "best.pt")
    assert meta["epoch"] == 2  # chosen only after the last mining round
    assert meta["location_prior"]["samples"] > 0  # fitted on the training series' aneurysms


def test_resume_continues_from_the_last_checkpoint_like_an_uninterrupted_run(config, tmp_path):
    whole = tmp_path / "whole"
    train(config, whole)

    def die_after_first_epoch(record):
        if record["kind"] == "epoch" and record["epoch"] == 1:
            raise KeyboardInterrupt

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        train(config, broken, progress=die_after_first_epoch)
    assert json.loads((broken / STATUS).read_text())["state"] == "stopped"
    train(None, broken, resume=True)
    epochs = [m for m in read_metrics(broken) if m["kind"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2]
    reference = [m for m in read_metrics(whole) if m["kind"] == "epoch"]
    assert epochs[1]["train_loss"] == pytest.approx(reference[1]["train_loss"], rel=1e-4)


def test_a_stop_file_ends_the_run_cleanly(config, tmp_path):
    run = tmp_path / "run"

    def stop(record):
        (run / STOP_FILE).touch()

    train(config, run, progress=stop)
    status = json.loads((run / STATUS).read_text())
    assert status["state"] == "stopped" and status["epoch"] == 1
    assert (run / "last.pt").is_file()
