"""Training runs: series split, heatmap targets, augmentation with label swap, checkpoints, resume, stop."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
import torch

from pipeline.labels import LOCATIONS
from pipeline.crops import Aneurysms, CropPlans, VolumeBank, crop_starts, cut_crops, heatmap_targets, plan_crops
from pipeline.train import STATUS, STOP_FILE, TrainConfig, load_cubes, load_model, series_labels, read_metrics, \
    resolve_datasets, split_series, train

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


def _bank(*arrays, spacing=0.8) -> VolumeBank:
    bank = VolumeBank("cpu")
    bank.fill((f"s{i}", np.asarray(a, np.float16), np.full(3, spacing)) for i, a in enumerate(arrays))
    return bank


def _plans(points, locations, spacing=(0.8, 0.8, 0.8), volume=0, start=(0, 0, 0), axes=(0, 1, 2),
           flips=(False, False, False)) -> CropPlans:
    """One crop's plan (a batch of one)."""
    points = np.asarray(points, float).reshape(1, -1, 3)
    present = np.ones(points.shape[:2], bool)
    if points.shape[1] == 0:
        points, present = np.zeros((1, 1, 3)), np.zeros((1, 1), bool)
    locations = np.asarray(locations, np.int64).reshape(1, -1) if present.any() else np.full((1, 1), -1)
    return CropPlans(np.array([volume]), np.array([start]), np.array([axes]), np.array([flips]), points, locations,
                     present, np.array([spacing], float))


def _join(*plans: CropPlans) -> CropPlans:
    return CropPlans(*(np.concatenate([getattr(p, f.name) for p in plans]) for f in fields(CropPlans)))


def test_heatmap_targets_are_spheres_around_the_localizer_with_an_ignored_ring():
    point = np.array([[30.0, 34.0, 21.0]])
    label, location, weight = heatmap_targets(_join(_plans(point, [LEFT_MCA]), _plans(np.zeros((0, 3)), [])),
                                              64, 4.0, 10.0)
    assert label.shape == location.shape == weight.shape == (2, 16, 16, 16)
    centres = np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"), axis=-1) * 4
    distance = np.linalg.norm((centres - point) * 0.8, axis=-1)
    assert (label[0].numpy() == (distance <= 4.0)).all() and label[0].sum() > 0
    assert (location[0].numpy()[label[0].numpy() > 0] == LEFT_MCA).all()
    assert (location[0].numpy()[label[0].numpy() == 0] == -1).all()
    assert (weight[0].numpy() == ~((distance > 4.0) & (distance <= 10.0))).all()
    assert label[1].sum() == 0 and (weight[1] == 1).all() and (location[1] == -1).all()  # a crop without one


def test_two_aneurysms_in_one_crop_each_label_their_own_cells():
    points = np.array([[12.0, 12.0, 12.0], [44.0, 44.0, 44.0]])
    label, location, weight = heatmap_targets(_plans(points, [LEFT_MCA, RIGHT_MCA], (0.5, 0.5, 0.5)), 64, 4.0, 10.0)
    assert location[0, 3, 3, 3] == LEFT_MCA and location[0, 11, 11, 11] == RIGHT_MCA
    assert label[0, 3, 3, 5] == 1 and label[0, 3, 3, 6] == 0 and weight[0, 3, 3, 6] == 0  # 4 mm: in; 6 mm: ignored
    assert label.sum() == 2 * 33  # a 4 mm ball on 2 mm cells (|offset|^2 <= 4 cells), twice


def _marked(shape, point):
    volume = np.zeros(shape, np.float32)
    volume[tuple(int(v) for v in point)] = 1.0
    return volume


def _around(bank, point, seeds, symmetry_share=0.0):
    """Plans of crops around the one aneurysm of the bank's one volume, one per seed."""
    aneurysms = Aneurysms.of(bank.uids, {bank.uids[0]: point}, {bank.uids[0]: np.array([LEFT_MCA])})
    return plan_crops(bank, aneurysms, np.zeros(seeds, int), np.zeros(seeds, int), 64, np.random.default_rng(0),
                      symmetry_share)


def test_left_right_flip_moves_the_aneurysm_with_the_image_and_swaps_the_label():
    point = np.array([[40.0, 50.0, 30.0]])
    bank = _bank(_marked((90, 100, 80), point[0]))
    plans = _around(bank, point, 12)
    crops = cut_crops(bank, plans, 64)
    for crop, start, flips, points, locations in zip(crops, plans.starts, plans.flips, plans.points, plans.locations):
        assert crop[tuple(int(v) for v in points[0])] == 1.0 and crop.sum() == 1.0  # the target follows the image
        unflipped = point[0] - start
        assert ((unflipped >= 8) & (unflipped < 56)).all()  # around the aneurysm: at least 8 voxels inside
        if flips[2]:
            assert points[0].tolist() == [*unflipped[:2], 63 - unflipped[2]] and locations[0] == RIGHT_MCA
        else:
            assert points[0].tolist() == unflipped.tolist() and locations[0] == LEFT_MCA
    assert 0 < plans.flips[:, 2].sum() < 12 and not plans.flips[:, :2].any() and (plans.axes == [0, 1, 2]).all()


def test_rotated_crops_keep_their_aneurysm_under_the_target_and_lose_the_location():
    point = np.array([[40.0, 50.0, 30.0]])
    bank = _bank(_marked((90, 100, 80), point[0]))
    bank.spacings[0] = [0.5, 0.6, 0.7]
    plans = _around(bank, point, 24, symmetry_share=1.0)
    crops = cut_crops(bank, plans, 64)
    for crop, points in zip(crops, plans.points):
        assert crop[tuple(int(v) for v in points[0])] == 1.0
    assert (plans.locations == -1).all()  # which artery is unknown once the crop has been turned
    assert (plans.spacings == np.array([0.5, 0.6, 0.7])[plans.axes]).all()  # millimetres turn with the axes
    assert len({(tuple(a), tuple(f)) for a, f in zip(plans.axes, plans.flips)}) > 12


def test_crops_around_an_aneurysm_hold_it_and_small_volumes_are_padded():
    rng = np.random.default_rng(0)
    target = np.array([[50.0, 7.0, 85.0]])
    starts = crop_starts(np.repeat([[100, 120, 90]], 50, axis=0), 64, np.repeat(target, 50, axis=0), rng)
    assert ((starts >= 0) & (starts + 64 <= np.array([100, 120, 90]))).all()
    inside = target - starts
    assert ((inside >= 0) & (inside < 64)).all() and len(np.unique(starts, axis=0)) > 10
    bank = _bank(np.full((100, 100, 100), 0.5), np.ones((40, 70, 70)))  # the second is shorter than a crop
    start = crop_starts(bank.shapes[1:], 64, np.full((1, 3), np.nan), rng)[0]
    crop = cut_crops(bank, _plans(np.zeros((0, 3)), [], volume=1, start=start), 64)[0]
    assert crop.shape == (64, 64, 64) and crop.dtype == torch.float32
    assert crop[:40].min() == 1.0 and crop[40:].max() == 0.0  # the builder's fill beyond the volume
    turned = cut_crops(bank, _plans(np.zeros((0, 3)), [], volume=1, axes=(2, 1, 0), flips=(False, False, True)), 64)[0]
    assert turned.sum() == 40 * 64 * 64 and turned[..., :24].max() == 0.0  # the padding turns with the crop


def test_a_volume_bank_holds_what_fits_its_budget(tmp_path):
    from pipeline.dataset import save_processed
    from pipeline.volume import Volume

    paths = {}
    for i in range(6):
        paths[f"s{i}"] = tmp_path / f"s{i}.npz"
        save_processed(paths[f"s{i}"], Volume(np.full((20, 30, 40), i, np.float32), np.diag([0.8, 0.8, 0.8, 1.0]),
                                              "CTA", f"s{i}"))
    everything = VolumeBank("cpu", budget_bytes=6 * 2 * 20 * 30 * 40)
    assert everything.working_set(paths, np.random.default_rng(0)) == sorted(paths)
    bank = VolumeBank("cpu", budget_bytes=2 * 2 * 20 * 30 * 40)
    chosen = [bank.working_set(paths, np.random.default_rng(seed)) for seed in range(5)]
    assert all(len(c) == 2 for c in chosen) and len({tuple(c) for c in chosen}) > 1  # each epoch its own share
    bank.hold({uid: paths[uid] for uid in chosen[0]})
    assert bank.uids == chosen[0] and bank.data.numel() == 2 * 20 * 30 * 40
    crop = cut_crops(bank, _plans(np.zeros((0, 3)), [], volume=1), 16)[0]
    assert (crop == int(chosen[0][1][1:])).all()  # the second volume held, read back whole


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
