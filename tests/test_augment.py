"""Training augmentation: each transform changes what it names, only in the crops chosen,
deterministically in the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.training.augment import augment, blur, brightness, contrast, gamma, low_resolution, noise, offset
from pipeline.training.config import AugmentConfig, TrainConfig


@pytest.fixture
def crops():
    """Two crops: a bright 'vessel' bar on a background ramping from 0.2 to 0.4."""
    x = torch.linspace(0.2, 0.4, 16).view(1, 1, 1, 1, 16).repeat(2, 1, 16, 16, 1)
    x[:, :, :, 7:9, 7:9] = 0.8
    return x


def test_only_the_chosen_crops_change(crops):
    chosen = np.array([True, False])
    for changed in (brightness(crops, chosen, np.array([1.2, 1.2])), contrast(crops, chosen, np.array([1.5, 1.5])),
                    gamma(crops, chosen, np.array([1.4, 1.4]), np.array([False, False])),
                    blur(crops, chosen, 1.0), low_resolution(crops, chosen, 2.0),
                    offset(crops, chosen, np.array([0.05, 0.05])),
                    noise(crops, chosen, np.array([0.05, 0.05]), np.random.default_rng(0))):
        assert not torch.equal(changed[0], crops[0]) and torch.equal(changed[1], crops[1])


def test_gamma_moves_the_mid_tones_and_keeps_black_and_white():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 1, 1, 4)
    darker = gamma(x, np.array([True]), np.array([2.0]), np.array([False]))
    assert darker.flatten().tolist() == pytest.approx([0.0, 0.0625, 0.25, 1.0])
    brighter = gamma(x, np.array([True]), np.array([2.0]), np.array([True]))
    assert brighter.flatten().tolist() == pytest.approx([0.0, 0.4375, 0.75, 1.0])


def test_contrast_stretches_the_mid_tones_within_the_crops_range(crops):
    wider = contrast(crops, np.array([True, True]), np.array([1.5, 0.5]))
    gap = lambda x: float(x[..., 0, 12].mean() - x[..., 0, 3].mean())  # two background tones  # noqa: E731
    assert gap(wider[0]) > gap(crops[0]) and gap(wider[1]) < gap(crops[1])
    assert wider.min() >= crops.min() and wider.max() <= crops.max()


def test_blur_and_low_resolution_keep_the_mean_and_lose_detail(crops):
    blurred = blur(crops, np.array([True, True]), 1.0)
    assert float(blurred[0, 0, 8, 8, 8]) < 0.8 and float(blurred[0, 0, 8, 6, 8]) > float(crops[0, 0, 8, 6, 8])
    coarse = low_resolution(crops, np.array([True, True]), 2.0)
    detail = lambda x: float(torch.diff(x, dim=-1).abs().sum())  # noqa: E731
    assert detail(coarse) < detail(crops) * 1.01 and not torch.equal(coarse, crops)
    for softened in (blurred, coarse):
        assert float(softened.mean()) == pytest.approx(float(crops.mean()), abs=0.02)


def test_the_mild_default_scales_shifts_and_adds_noise_to_every_crop_and_strong_does_more(crops):
    mild = augment(crops, np.random.default_rng(3))
    assert all(not torch.equal(mild[k], crops[k]) for k in range(len(crops)))
    rough = (mild - crops - (mild - crops).mean(dim=(1, 2, 3, 4), keepdim=True)).std()
    assert float(rough) < 0.05  # a global scale and offset, plus noise of sd at most 0.02
    strong = AugmentConfig.preset("strong")
    assert strong.gamma > 0 and strong.blur > 0 and strong.low_resolution > 0 and strong.contrast > 0
    assert AugmentConfig.preset("mild") == AugmentConfig()
    with pytest.raises(ValueError, match="mild or strong"):
        AugmentConfig.preset("heavy")


def test_the_batch_is_a_pure_function_of_the_seed(crops):
    first = augment(crops, np.random.default_rng(3), AugmentConfig.preset("strong"))
    assert torch.equal(first, augment(crops, np.random.default_rng(3), AugmentConfig.preset("strong")))
    assert not torch.equal(first, augment(crops, np.random.default_rng(4), AugmentConfig.preset("strong")))
    assert torch.equal(augment(crops, np.random.default_rng(3), AugmentConfig(strength=0)), crops)


def test_the_configuration_round_trips_and_is_part_of_a_runs_config():
    config = TrainConfig(augment=AugmentConfig(strength=0.5, gamma_range=(0.8, 1.2)))
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config and again.augment.gamma_range == (0.8, 1.2)
    with pytest.raises(ValueError, match="unknown AugmentConfig option"):
        TrainConfig.from_dict({"augment": {"sharpen": 1}})
