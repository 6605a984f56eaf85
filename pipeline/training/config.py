"""The training configuration (no torch: the dashboard reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import JsonConfig
from pipeline.model.config import INPUT_MULTIPLE, PRECISIONS, ModelConfig


@dataclass(frozen=True)
class AugmentConfig(JsonConfig):
    """Intensity and resolution augmentation (`pipeline.training.augment`): the probability
    (per crop) and range of each transform; ``strength`` scales every probability (0: none).

    The defaults are the mild recipe the shipped model was trained with (brightness, offset and
    noise on every crop); `strong` is nnU-Net strength.

    Attributes:
        brightness: multiply by a factor in ``brightness_range``.
        offset: add a value in ``offset_range``.
        contrast: stretch about the crop's mean by a factor in ``contrast_range``.
        gamma: raise to a power in ``gamma_range`` (on [0, 1]; half the time on the inverted crop).
        blur: Gaussian blur of sigma in ``blur_sigma`` voxels.
        low_resolution: down-sample by a factor in ``low_resolution_range`` and back.
        noise: add Gaussian noise of standard deviation up to ``noise_sd``.
    """

    strength: float = 1.0
    brightness: float = 1.0
    brightness_range: tuple[float, float] = (0.9, 1.1)
    offset: float = 1.0
    offset_range: tuple[float, float] = (-0.05, 0.05)
    contrast: float = 0.0
    contrast_range: tuple[float, float] = (0.65, 1.5)
    gamma: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.1)
    low_resolution: float = 0.0
    low_resolution_range: tuple[float, float] = (1.0, 2.0)
    noise: float = 1.0
    noise_sd: float = 0.02

    @classmethod
    def preset(cls, name: str) -> "AugmentConfig":
        """``mild`` (the defaults) or ``strong`` (nnU-Net strength)."""
        if name == "mild":
            return cls()
        if name == "strong":
            return cls(brightness=0.5, brightness_range=(0.75, 1.25), offset=0.0, contrast=0.5, gamma=0.3, blur=0.2,
                       low_resolution=0.25, noise=0.5, noise_sd=0.05)
        raise ValueError(f"unknown augmentation {name!r}: mild or strong")


AUGMENTATIONS = ("mild", "strong")


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """What a run trains on and how; ``config.json`` of the run folder.

    Attributes:
        datasets: the dataset files (``*_dataset.npz``) of one build's preprocessing.
        epochs: epochs of ``steps_per_epoch`` steps of ``batch_size`` crops of ``crop`` voxels.
        learning_rate: the one-cycle schedule's peak; ``weight_decay``: AdamW's.
        validation_share: series held out, positive and negative series alike.
        location_weight: weight of the location cross-entropy beside the presence loss.
        vessel_weight: weight of the vessel segmentation loss (a model with the vessel head;
            crops of series without vessel labels add nothing).
        positive_radius_mm: heatmap target 1 within this distance of a localizer,
            ignored up to ``ignore_radius_mm``, 0 beyond.
        positive_crop_share: share of the crops from positive series drawn around an aneurysm.
        vessel_crop_share: share of the other crops of series with vessel labels centred on an
            artery voxel (where false positives are), the rest anywhere.
        modality_balance: series are drawn with weight (series of their modality)^-balance:
            0 every series alike, 1 every modality alike (the demo has 10 T1post series in 200).
        hard_negatives: each crop's highest-loss negative cells, weighed again by
            ``hard_negative_weight`` (0: none).
        seed: split, model initialisation and every batch.
        precision: "auto", "bf16" or "fp32" (`pipeline.model.precision`).
        symmetry_share: share of crops rotated/reflected at random (presence only).
        scale_share: share of crops zoomed by a factor drawn in ``scale_range`` (volume voxels
            per crop voxel: 1.4 shows a region 1.4 times larger, its vessels thinner), the
            targets scaled alike (nnU-Net: 0.2 of the samples, 0.7-1.4).
        series_validation_epochs: the last epochs also score the held-out series whole (picks best.pt).
        cube_validation_every: epochs between cube validations (and the last epoch).
        augment: intensity and resolution augmentation of the crops.
        model: the network's shape; new runs have the vessel head (vessel-aware training,
            measured in the README), which learns from the series with vessel label maps.
    """

    datasets: tuple[str, ...] = ()
    epochs: int = 30
    steps_per_epoch: int = 86
    batch_size: int = 14
    crop: int = 48
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_share: float = 0.25
    location_weight: float = 0.5
    vessel_weight: float = 1.0
    positive_radius_mm: float = 4.0
    ignore_radius_mm: float = 10.0
    positive_crop_share: float = 0.75
    vessel_crop_share: float = 0.0
    modality_balance: float = 0.0
    hard_negatives: int = 16
    hard_negative_weight: float = 1.0
    seed: int = 0
    precision: str = "auto"
    symmetry_share: float = 0.5
    scale_share: float = 0.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    series_validation_epochs: int = 5
    cube_validation_every: int = 3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(vessel_head=True))  # new runs: vessel-aware

    def validate(self) -> None:
        """Refuse a configuration no run could follow.

        Raises:
            ValueError: with the option at fault.
        """
        if not self.datasets:
            raise ValueError("no dataset to train on: build one with `python -m pipeline build`.")
        if self.crop % INPUT_MULTIPLE or self.crop < self.model.cube:
            raise ValueError(f"the crop ({self.crop} voxels) must be a multiple of {INPUT_MULTIPLE} "
                             f"and at least the cube ({self.model.cube}).")
        if min(self.epochs, self.steps_per_epoch, self.batch_size) < 1:
            raise ValueError("epochs, steps per epoch and batch size must be at least 1.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}.")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"the scale range must be two positive factors, the smaller first, not {self.scale_range}.")
        for name in ("positive_crop_share", "vessel_crop_share", "modality_balance", "scale_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name.replace('_', ' ')} must lie between 0 and 1, not {getattr(self, name)}.")
        if not 0 < self.validation_share < 1:
            raise ValueError(f"the validation share must lie between 0 and 1, not {self.validation_share}.")
