"""Intensity and resolution augmentation of training crops, on the training device.

What differs between scanners, sites and phantom families after preprocessing is mostly
how bright a vessel is against brain, how the window or percentiles stretched the
histogram, how sharp and how noisy the image is. Each transform below imitates one of
those, nnU-Net-strength, applied to a random share of the crops of a batch; all draw their
parameters from the caller's ``numpy`` generator (the noise from a torch generator seeded by
it), so a batch is a pure function of the seed. Crops are (B, 1, s, s, s) in about [0, 1];
the probabilities and ranges are `pipeline.training.config.AugmentConfig`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.training.config import AugmentConfig


def augment(crops: torch.Tensor, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """The crops with every transform applied to its share of them (in a fixed order:
    resolution first, as the scanner does, then intensities, then noise)."""
    if config.strength <= 0:
        return crops
    share = lambda p: rng.random(len(crops)) < min(1.0, p * config.strength)  # noqa: E731
    crops = blur(crops, share(config.blur), rng.uniform(*config.blur_sigma))
    crops = low_resolution(crops, share(config.low_resolution), rng.uniform(*config.low_resolution_range))
    crops = brightness(crops, share(config.brightness), rng.uniform(*config.brightness_range, size=len(crops)))
    crops = offset(crops, share(config.offset), rng.uniform(*config.offset_range, size=len(crops)))
    crops = contrast(crops, share(config.contrast), rng.uniform(*config.contrast_range, size=len(crops)))
    crops = gamma(crops, share(config.gamma), rng.uniform(*config.gamma_range, size=len(crops)),
                  rng.random(len(crops)) < 0.5)
    return noise(crops, share(config.noise), rng.uniform(0, config.noise_sd, size=len(crops)), rng)


def _per_crop(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, np.float32), device=like.device).view(-1, *([1] * (like.dim() - 1)))


def _on_chosen(crops: torch.Tensor, chosen: np.ndarray, change) -> torch.Tensor:
    """``change(subset, rows)`` applied to the chosen crops only (the others are not computed)."""
    rows = np.flatnonzero(chosen)
    if not len(rows):
        return crops
    picked = torch.as_tensor(rows, device=crops.device)
    out = crops.clone()
    out[picked] = change(crops[picked], rows)
    return out


def brightness(crops: torch.Tensor, chosen: np.ndarray, factors: np.ndarray) -> torch.Tensor:
    return _on_chosen(crops, chosen, lambda x, rows: x * _per_crop(factors[rows], x))


def offset(crops: torch.Tensor, chosen: np.ndarray, values: np.ndarray) -> torch.Tensor:
    return _on_chosen(crops, chosen, lambda x, rows: x + _per_crop(values[rows], x))


def contrast(crops: torch.Tensor, chosen: np.ndarray, factors: np.ndarray) -> torch.Tensor:
    """Stretch about each crop's mean, keeping its range (values clipped to the old min/max)."""
    def stretch(x, rows):
        dims = tuple(range(1, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        return torch.minimum(torch.maximum((x - mean) * _per_crop(factors[rows], x) + mean, low), high)

    return _on_chosen(crops, chosen, stretch)


def gamma(crops: torch.Tensor, chosen: np.ndarray, powers: np.ndarray, inverted: np.ndarray) -> torch.Tensor:
    """x -> x**gamma on [0, 1] (or 1 - (1 - x)**gamma where ``inverted``): brightens or darkens
    the mid-tones, so a vessel's level against brain moves while black and white stay."""
    def curve(x, rows):
        x = x.clamp(0.0, 1.0)
        power = _per_crop(powers[rows], x)
        return torch.where(_per_crop(inverted[rows], x) > 0, 1.0 - (1.0 - x) ** power, x ** power)

    return _on_chosen(crops, chosen, curve)


def blur(crops: torch.Tensor, chosen: np.ndarray, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of the chosen crops (one sigma per batch, in voxels)."""
    radius = max(1, int(np.ceil(2.5 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=crops.dtype, device=crops.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()

    def smooth(x, rows):
        for axis in range(3):
            shape, padding = [1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]
            shape[2 + axis] = len(taps)
            padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = radius  # F.pad: last axis first
            x = F.conv3d(F.pad(x, padding, mode="replicate"), kernel.view(shape))
        return x

    return _on_chosen(crops, chosen, smooth)


def low_resolution(crops: torch.Tensor, chosen: np.ndarray, factor: float) -> torch.Tensor:
    """Down-sample the chosen crops by ``factor`` (nearest, as a coarse acquisition samples)
    and interpolate back (trilinear, as preprocessing does)."""
    if factor <= 1.0:
        return crops
    size = crops.shape[2:]
    coarse = [max(2, int(round(n / factor))) for n in size]
    return _on_chosen(crops, chosen, lambda x, rows: F.interpolate(
        F.interpolate(x, size=coarse, mode="nearest"), size=size, mode="trilinear", align_corners=False))


def noise(crops: torch.Tensor, chosen: np.ndarray, sds: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    if not chosen.any():
        return crops
    generator = torch.Generator(device=crops.device).manual_seed(int(rng.integers(2**62)))
    draws = torch.randn(crops.shape, generator=generator, device=crops.device, dtype=crops.dtype)
    return crops + draws * _per_crop(np.where(chosen, sds, 0.0), crops)
