"""The build's configuration (no torch: the CLI and the dashboard read its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import JsonConfig
from pipeline.labels import MODALITIES
from pipeline.preprocess.config import PreprocessConfig


@dataclass(frozen=True)
class BuildConfig(JsonConfig):
    """Parameters of a build; stored in the manifest.

    Attributes:
        cube: side of the cubes, voxels.
        negatives: negative cubes per series.
        hard_share: share of the negatives taken on vessels.
        min_distance_mm: least distance from a negative's centre to any aneurysm.
        jitter: jittered copies of each positive cube.
        jitter_mm: largest shift of a jittered copy along each axis.
        seed: makes the sampling reproducible.
        modalities: which modalities to build.
        preprocess: the preprocessing chain's parameters.
    """

    cube: int = 48
    negatives: int = 24
    hard_share: float = 0.5
    min_distance_mm: float = 20.0
    jitter: int = 4
    jitter_mm: float = 6.0  # about half the inference stride (16 voxels of 0.8 mm): see pipeline.inference
    seed: int = 0
    modalities: tuple[str, ...] = MODALITIES
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self):
        if self.cube < 4 or self.negatives < 0 or self.jitter < 0 or not 0 <= self.hard_share <= 1:
            raise ValueError("cube >= 4, negatives >= 0, jitter >= 0 and 0 <= hard_share <= 1 are required")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities: {', '.join(sorted(unknown))}")
