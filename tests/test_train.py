"""Training runs: series split, heatmap targets, augmentation with label swap, checkpoints, resume, stop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.labels import LOCATIONS
from pipeline.train import STATUS, STOP_FILE, TrainConfig, crop_start, cut_crop, heatmap_targets, load_cubes, \
    load_model, series_labels, read_metrics, resolve_datasets, split_series, train, turn, zoomed

LEFT_MCA = LOCATIONS.index("Left Middle Cerebral Artery")
RIGHT_MCA = LOCATIONS.index("Right Middle Cerebral Artery")


@pytest.fixture(scope="module")
def config(built):
    _, out, _, _ = built
    return TrainConfig(datasets=resolve_datasets([out]), epochs=2, steps_per_epoch=5, crop=64, batch_size=2)


def test_split_is_by_series_and_keeps_both_classes():
    series = np.repeat([f"s{i}" for i in range(20)], 5)
    labels = np.array([1 if i < 8 else 0 for i in range(20)]).repeat(5) * np.tile([1, 0, 0, 0, 0], 20)
    split = split_series(series, labels, 0.25, seed=0)
    assert not set(split["train"]) & set(split["validation"])
    assert set(split["train"]) | set(split["validation"]) == set(series)
    positive = {f"s{i}" for i in range(8)}
    assert positive & set(split["validation"]) and (set(split["validation"]) - positive)
    assert split == split_series(series, labels, 0.25, seed=0)


def test_heatmap_targets_are_spheres_around_the_localizer_with_an_ignored_ring():
    point = np.array([[30.0, 34.0, 21.0]])
    label, location, weight = heatmap_targets(point, np.array([LEFT_MCA]), 64, np.array([0.8, 0.8, 0.8]), 4.0, 10.0)
    assert label.shape == location.shape == weight.shape == (16, 16, 16)
    centres = np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"), axis=-1) * 4
    distance = np.linalg.norm((centres - point) * 0.8, axis=-1)
    assert (label.numpy() == (distance <= 4.0)).all() and label.sum() > 0
    assert (location.numpy()[label.numpy() > 0] == LEFT_MCA).all() and (location.numpy()[label.numpy() == 0] == -1).all()
    assert (weight.numpy() == ~((distance > 4.0) & (distance <= 10.0))).all()


def _marked_crop(point):
    crop = torch.zeros(64, 64, 64)
    crop[tuple(int(v) for v in point)] = 1.0
    return crop


def test_left_right_flip_moves_the_aneurysm_with_the_image_and_swaps_the_label():
    point = np.array([[20.0, 30.0, 10.0]])
    flipped = 0
    for seed in range(12):
        crop, points, locations, _ = turn(_marked_crop(point[0]), point, np.array([LEFT_MCA]), np.full(3, 0.8),
                                          np.random.default_rng(seed))
        assert crop[tuple(int(v) for v in points[0])] == 1.0  # the target follows the image exactly
        if points[0, 2] != 10.0:
            flipped += 1
            assert points[0, 2] == 53.0 and locations[0] == RIGHT_MCA
        else:
            assert locations[0] == LEFT_MCA
    assert 0 < flipped < 12


def test_rotated_crops_keep_their_aneurysm_under_the_target_and_lose_the_location():
    point = np.array([[20.0, 30.0, 10.0]])
    moved = 0
    for seed in range(12):
        crop, points, locations, _ = turn(_marked_crop(point[0]), point, np.array([LEFT_MCA]), np.full(3, 0.8),
                                          np.random.default_rng(seed), symmetry_share=1.0)
        assert crop[tuple(int(v) for v in points[0])] == 1.0
        assert locations[0] == -1  # which artery is unknown once the crop has been turned
        moved += sorted(points[0].tolist()) != [10.0, 20.0, 30.0] or points[0].tolist() != [20.0, 30.0, 10.0]
    assert moved > 6


def test_zoomed_crops_keep_their_aneurysm_under_the_target_at_its_size_in_mm():
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"), axis=-1)
    point = np.array([[14.0, 22.0, 27.0]])
    ball = torch.from_numpy(np.exp(-((grid - point[0]) ** 2).sum(-1) / 4.0)).float()  # a blob, sd ~1.4 voxels
    for size in (48, 32):  # magnified, then shrunk
        crop, points, spacing = zoomed(ball, point, np.full(3, 0.8), size)
        assert crop.shape == (size,) * 3
        peak = np.unravel_index(int(crop.argmax()), crop.shape)
        assert np.abs(np.array(peak) - points[0]).max() <= 0.6  # the point moved with the image
        assert spacing == pytest.approx(np.full(3, 0.8 * 40 / size))
        label, _, _ = heatmap_targets(points, np.array([LEFT_MCA]), size, spacing, 4.0, 10.0)
        cells = np.argwhere(label.numpy() > 0) * 4
        assert np.linalg.norm((cells - points[0]) * spacing, axis=1).max() <= 4.0  # 4 mm in the patient


def test_crops_around_an_aneurysm_hold_it_and_small_volumes_are_padded():
    rng = np.random.default_rng(0)
    for _ in range(50):
        start = crop_start((100, 120, 90), 64, np.array([50.0, 7.0, 85.0]), rng)
        assert ((start >= 0) & (start + 64 <= np.array([100, 120, 90]))).all()
        inside = np.array([50.0, 7.0, 85.0]) - start
        assert ((inside >= 0) & (inside < 64)).all()
    array = torch.ones(40, 70, 70, dtype=torch.float16)
    crop = cut_crop(array, crop_start(array.shape, 64, None, rng), 64)
    assert crop.shape == (64, 64, 64) and crop.dtype == torch.float32
    assert crop[:40].min() == 1.0 and crop[40:].max() == 0.0  # the builder's fill beyond the volume


def test_only_the_kept_series_cubes_are_loaded_but_every_series_aneurysms_are(config):
    series, labels = series_labels(config.datasets)
    everything = load_cubes(config.datasets)
    assert len(everything.labels) == len(series) and (everything.labels.numpy() == labels).all()
    one = sorted(everything.aneurysms)[0]
    kept = load_cubes(config.datasets, keep={one})
    assert set(kept.series) == {one} and len(kept.cubes) == len(kept.labels) == (series == one).sum()
    assert kept.aneurysms.keys() == everything.aneurysms.keys()  # positions of all series, for training
    assert kept.volumes == everything.volumes


def test_a_run_writes_its_folder_and_loadable_checkpoints(config, tmp_path):
    run = tmp_path / "run"
    record = train(config, run)
    assert {"config.json", "split.json", "metrics.jsonl", "last.pt", "best.pt", STATUS} <= {p.name for p in run.iterdir()}
    assert json.loads((run / STATUS).read_text())["state"] == "finished"
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics if m["kind"] == "epoch"] == [1, 2]
    assert record["epoch"] == 2 and record["cubes_per_second"] > 0
    model, meta = load_model(run / "best.pt")  # weights_only=True inside
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


def test_a_run_fits_its_location_prior_and_refuses_a_bad_crop(config, tmp_path):
    run = tmp_path / "run"
    train(config, run)
    _, meta = load_model(run / "best.pt")
    assert meta["location_prior"]["samples"] > 0  # fitted on the training series' aneurysms
    assert meta["train_config"]["crop"] == 64
    steps = [m for m in read_metrics(run) if m["kind"] == "step"]
    assert steps and all(m["crops_per_second"] > 0 for m in steps)
    with pytest.raises(ValueError, match="multiple of 16"):
        train(TrainConfig(datasets=config.datasets, crop=70), tmp_path / "bad")


def test_a_lighter_model_and_sparser_cube_validation_are_kept_in_the_run(config, tmp_path):
    from dataclasses import replace

    from pipeline.model import ModelConfig

    run = tmp_path / "run"
    train(replace(config, epochs=3, cube_validation_every=2, model=ModelConfig(first_stage=False)), run)
    aucs = [m["validation_auc"] for m in read_metrics(run) if m["kind"] == "epoch"]
    assert aucs[0] is None and aucs[1] is not None and aucs[2] is not None  # every 2nd epoch, and the last
    model, meta = load_model(run / "best.pt")
    assert meta["model"]["first_stage"] is False and len(model.stages) == 3


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
        if record["kind"] == "epoch":  # asked to stop while the second epoch runs
            (run / STOP_FILE).touch()

    train(config, run, progress=stop)
    status = json.loads((run / STATUS).read_text())
    assert status["state"] == "stopped" and status["epoch"] == 1
    assert (run / "last.pt").is_file()
