"""Training batches (pipeline.training.crops): the volume bank, crop plans, the gather, heatmap targets,
augmentation that moves the aneurysm with the image and swaps Left/Right labels, and the vessel
labels cut with the image (the vessel head's targets and their mask)."""

from __future__ import annotations

import dataclasses
from dataclasses import fields

import numpy as np
import torch

from pipeline.training.crops import (Aneurysms, CropPlans, VolumeBank, crop_starts, cut_crops, cut_vessels,
                                     heatmap_targets, plan_crops, vessel_targets)
from pipeline.labels import LOCATIONS

LEFT_MCA = LOCATIONS.index("Left Middle Cerebral Artery")
RIGHT_MCA = LOCATIONS.index("Right Middle Cerebral Artery")


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
    return CropPlans(*(np.concatenate([getattr(p, f.name) for p in plans]) if getattr(plans[0], f.name) is not None
                       else None for f in fields(CropPlans)))


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
    from pipeline.preprocess.cache import save_processed
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


def _labelled_bank(volume_labels, unlabelled=None, spacing=0.8) -> VolumeBank:
    """A bank of one labelled volume (its intensities = its labels / 20) and maybe an unlabelled one."""
    bank = VolumeBank("cpu")
    entries = [("labelled", (volume_labels / 20.0).astype(np.float16), np.full(3, spacing), volume_labels)]
    if unlabelled is not None:
        entries.append(("unlabelled", np.asarray(unlabelled, np.float16), np.full(3, spacing), None))
    bank.fill(entries)
    return bank


def test_vessel_labels_are_cut_by_the_same_gather_as_the_image():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 15, size=(70, 60, 50)).astype(np.uint8)
    bank = _labelled_bank(labels, np.zeros((40, 40, 40)))
    aneurysms = Aneurysms.of(bank.uids, {}, {})
    plans = plan_crops(bank, aneurysms, np.array([0, 0, 0, 0, 1, 1]), np.full(6, -1), 48, rng, symmetry_share=0.5)
    image = cut_crops(bank, plans, 48)
    cut, labelled = cut_vessels(bank, plans, 48)
    assert cut.dtype == torch.uint8 and labelled.tolist() == [True] * 4 + [False] * 2
    assert torch.equal(cut[:4].float(), torch.round(image[:4] * 20))  # the same voxels, turned and padded alike
    assert cut[4:].max() == 0  # a series without labels has none


def test_vessel_targets_are_block_shares_and_swap_left_and_right_with_the_image():
    labels = np.zeros((48, 48, 48), np.uint8)
    labels[:, :, 32:36] = LEFT_MCA + 1  # a slab on one side: four voxels wide in x
    bank = _labelled_bank(labels)
    plain = _plans(np.zeros((0, 3)), [])
    mirrored = _plans(np.zeros((0, 3)), [], flips=(False, False, True))
    turned = _plans(np.zeros((0, 3)), [], axes=(2, 1, 0))
    plans = _join(plain, mirrored, turned)
    share, artery, weight = vessel_targets(*cut_vessels(bank, plans, 48), plans)
    assert share.shape == artery.shape == (3, 12, 12, 12) and weight.tolist() == [1.0, 1.0, 1.0]
    # Cell i covers voxels 4i-2 .. 4i+1: the slab 32..35 fills half of cells 8 (32, 33) and 9 (34, 35) in x.
    assert torch.allclose(share[0, 5, 5, 7:10], torch.tensor([0.0, 0.5, 0.5]))
    assert share[0].sum() * 64 == 46 * 46 * 4  # the cells cover voxels -2 .. 45 of each axis
    assert (artery[0, :, :, 8] == LEFT_MCA).all() and (artery[0, :, :, 9] == -1).all()  # the label at voxel 4i
    # Mirrored: the slab is at x = 12..15 and is the right MCA there.
    assert (artery[1, :, :, 3] == RIGHT_MCA).all() and (artery[1, :, :, 4] == -1).all()
    assert torch.allclose(share[1, 5, 5, 2:5], torch.tensor([0.0, 0.5, 0.5]))
    assert (artery[2] == -1).all() and share[2].sum() == share[0].sum()  # turned: the share only


def test_the_vessel_loss_trains_nothing_on_crops_without_labels():
    from pipeline.model.config import ModelConfig
    from pipeline.model.network import AneurysmNet
    from pipeline.model.precision import Precision
    from pipeline.training.config import TrainConfig
    from pipeline.training.crops import Batch
    from pipeline.training.loss import heatmap_loss

    model = AneurysmNet(ModelConfig(vessel_head=True))
    cells = (2, 12, 12, 12)
    batch = Batch(torch.rand(2, 1, 48, 48, 48), torch.zeros(cells), torch.full(cells, -1), torch.ones(cells),
                  torch.rand(cells), torch.randint(0, 14, cells), torch.zeros(2))
    config, precision = TrainConfig(datasets=("x",)), Precision(torch.device("cpu"), None)
    heatmap_loss(model.dense, batch, config, precision).backward()
    assert model.vessel_head.weight.grad.abs().max() == 0  # masked: no label, no gradient
    model.zero_grad()
    heatmap_loss(model.dense, dataclasses.replace(batch, vessel_weight=torch.tensor([1.0, 0.0])), config,
                 precision).backward()
    assert model.vessel_head.weight.grad.abs().max() > 0


def test_vessel_centred_crops_hold_an_artery_at_their_centre():
    """With vessel_crop_share 1, every crop of a labelled series without an aneurysm is centred
    on one of its artery voxels (a thin tube here), not anywhere in the volume."""
    from pipeline.training.config import TrainConfig
    from pipeline.training.crops import draw_batch

    labels = np.zeros((96, 96, 96), np.uint8)
    labels[60, 20:80, 70] = 3  # one artery, far from the volume's centre
    bank = VolumeBank("cpu")
    bank.fill([("s0", np.zeros((96, 96, 96), np.float16), np.full(3, 0.8), labels)])
    aneurysms = Aneurysms.of(bank.uids, {}, {})
    config = TrainConfig(datasets=("x",), batch_size=12, crop=32, vessel_crop_share=1.0, symmetry_share=0.0)
    batch = draw_batch(bank, aneurysms, config, np.random.default_rng(0))
    middle = (slice(None), *[slice(2, 7)] * 3)  # the cells over voxels 6-26: a centre at least 8 inside
    assert (batch.vessel[middle] > 0).flatten(1).any(dim=1).all()  # an artery in every crop's middle
    anywhere = draw_batch(bank, aneurysms, dataclasses.replace(config, vessel_crop_share=0.0), np.random.default_rng(0))
    assert (anywhere.vessel[middle] > 0).flatten(1).any(dim=1).float().mean() < 0.5  # anywhere: most miss it


def test_modality_balance_draws_each_modality_alike():
    from pipeline.training.trainer import modality_weights

    modalities = ["CTA"] * 9 + ["MRI T1post"]
    assert modality_weights(modalities, 0.0).tolist() == [1.0] * 10  # every series alike
    weights = modality_weights(modalities, 1.0)
    assert weights[:9].sum() == weights[9:].sum()  # every modality alike
    half = modality_weights(modalities, 0.5)
    assert 1 < half[9] / half[0] < 9


def _ramp(shape) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return 0.004 * z + 0.002 * y + 0.001 * x


def test_a_zoomed_crop_samples_a_region_zoom_times_its_size_trilinearly():
    shape = (90, 100, 80)
    bank = _bank(_ramp(shape))
    aneurysms = Aneurysms.of(bank.uids, {bank.uids[0]: np.array([[45.0, 50.0, 40.0]])}, {bank.uids[0]: np.array([0])})
    plans = plan_crops(bank, aneurysms, np.zeros(24, int), np.zeros(24, int), 32, np.random.default_rng(1),
                       symmetry_share=0.5, scale_share=1.0)
    assert ((plans.zooms >= 0.7) & (plans.zooms <= 1.4)).all() and plans.zooms.std() > 0.1
    slopes = np.array([0.004, 0.002, 0.001])
    for crop, start, axes, flips, zoom in zip(cut_crops(bank, plans, 32).numpy(), plans.starts, plans.axes,
                                              plans.flips, plans.zooms):
        steps = np.arange(32)
        along = np.where(flips[:, None], 31 - steps, steps)
        coords = start[axes][:, None] + (along + 0.5) * zoom - 0.5  # (3, s): volume coordinate along axes[o]
        expected = sum(slopes[axes[o]] * np.expand_dims(coords[o], [a for a in range(3) if a != o]) for o in range(3))
        inside = [(c >= 0) & (c <= shape[axes[o]] - 1) for o, c in enumerate(coords)]
        mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
        assert mask.mean() > 0.5
        np.testing.assert_allclose(crop[mask], expected[mask], atol=2e-3)  # float16 bank
        span = abs(crop[31, 16, 16] - crop[0, 16, 16]) if mask[[0, 31], 16, 16].all() else None
        if span is not None:  # a region zoom times the crop: 31 steps cover 31 * zoom voxels
            assert abs(span - slopes[axes[0]] * 31 * zoom) < 3e-3


def test_a_zoomed_crop_keeps_its_aneurysm_and_labels_under_targets_scaled_alike():
    point = np.array([[40.0, 50.0, 30.0]])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (90, 100, 80)], indexing="ij"), axis=-1)
    ball = np.linalg.norm(grid - point[0], axis=-1) <= 4.0
    bank = VolumeBank("cpu")
    bank.fill([("s0", ball.astype(np.float16), np.full(3, 0.8), ball.astype(np.uint8))])
    aneurysms = Aneurysms.of(bank.uids, {"s0": point}, {"s0": np.array([LEFT_MCA])})
    plans = plan_crops(bank, aneurysms, np.zeros(24, int), np.zeros(24, int), 48, np.random.default_rng(2),
                       scale_share=1.0)
    crops = cut_crops(bank, plans, 48).numpy()
    labels, _ = cut_vessels(bank, plans, 48)
    for crop, label, points, zoom, spacing in zip(crops, labels.numpy(), plans.points, plans.zooms, plans.spacings):
        assert crop[tuple(np.rint(points[0]).astype(int))] > 0.9  # the target follows the image
        assert ((points[0] >= 8 - 1e-9) & (points[0] <= 40 + 1e-9)).all()  # at least 8 crop voxels inside
        assert np.allclose(spacing, 0.8 * zoom)  # a crop voxel spans zoom voxels of the volume
        ball_voxels = 4 / 3 * np.pi * (4.0 / zoom) ** 3
        assert 0.7 < (crop > 0.5).sum() / ball_voxels < 1.3  # the dome seen zoom times smaller
        assert ((label > 0) == (crop > 0.5)).mean() > 0.99  # the labels cut with the image
    label, _, _ = heatmap_targets(plans, 48, 4.0, 10.0)
    assert (label.sum(dim=(1, 2, 3)) > 0).all()  # every crop's target marks its aneurysm


def test_the_scale_range_is_checked():
    from pipeline.training.config import TrainConfig

    for wrong in ((1.4, 0.7), (0.0, 1.2)):
        try:
            TrainConfig(datasets=("a.npz",), scale_range=wrong).validate()
        except ValueError as exc:
            assert "scale range" in str(exc)
        else:
            raise AssertionError(f"{wrong} accepted")
