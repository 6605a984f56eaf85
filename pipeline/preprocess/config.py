"""The preprocessing contract: the parameters of the default chain, stored with every
dataset and checkpoint, and the intensity thresholds that follow from them.

What reads a processed volume (the builder's negative sampling, the head mask of training
and inference) asks this configuration for its thresholds instead of assuming the default
CT window: a dataset built with another window keeps the same Hounsfield meaning.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pipeline.config import JsonConfig

CANONICAL = "SPL"
TISSUE_HU = -50.0  # CT: above this a voxel is tissue, not air
CONTRAST_HU = (200.0, 550.0)  # CT: contrast-filled lumen, below bone
MR_TISSUE = 0.05  # MR: normalised intensity above which a voxel is tissue (percentile scale)


@dataclass(frozen=True)
class PreprocessConfig(JsonConfig):
    """Parameters of the default chain (`pipeline.preprocess.transforms.Preprocessor`).

    Attributes:
        orientation: patient directions of increasing array z, y, x.
        target_spacing: (z, y, x) voxel spacing in mm after resampling.
        crop_margin_mm: kept around the head by the foreground crop.
        ct_window: Hounsfield units mapped to 0 and 1.
        mr_percentiles: percentiles of each MR volume mapped to 0 and 1.
        mr_tissue_level: when set, MR volumes are anchored on their tissue instead: the lower
            percentile goes to 0 and the median of the head (the voxels above a quarter of
            the 90th percentile) to this level, so that a bright minority (fat, a large vessel, a coil's
            hot spot) does not set the scale. None: the percentiles alone.
    """

    orientation: str = CANONICAL
    target_spacing: tuple[float, float, float] = (0.8, 0.8, 0.8)
    crop_margin_mm: float = 5.0
    ct_window: tuple[float, float] = (-100.0, 900.0)
    mr_percentiles: tuple[float, float] = (0.5, 99.8)
    mr_tissue_level: float | None = None

    def __post_init__(self):
        low, high = self.ct_window
        if not high > low:
            raise ValueError(f"the CT window must go up: ({low}, {high}).")
        if len(self.target_spacing) != 3 or min(self.target_spacing) <= 0:
            raise ValueError(f"the target spacing must be three positive values in mm, not {self.target_spacing}.")
        if self.mr_tissue_level is not None and not 0 < self.mr_tissue_level < 1:
            raise ValueError(f"the MR tissue level must lie between 0 and 1, not {self.mr_tissue_level}.")

    def key(self) -> str:
        """Short stable hash: what caches of processed volumes are keyed by."""
        values = {name: value for name, value in self.to_dict().items() if value is not None}  # unset: no new key
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    def normalised_hu(self, hu: float) -> float:
        """Where a Hounsfield value lands on the [0, 1] scale of a processed CT volume."""
        low, high = self.ct_window
        return min(max((hu - low) / (high - low), 0.0), 1.0)

    def tissue_threshold(self, modality: str) -> float:
        """Processed intensity above which a voxel is tissue rather than air (``modality``:
        DICOM "CT" / "MR" or an RSNA modality)."""
        return self.normalised_hu(TISSUE_HU) if is_ct(modality) else MR_TISSUE

    def contrast_range(self) -> tuple[float, float]:
        """Processed CT intensities of contrast-filled vessels, not bone."""
        return self.normalised_hu(CONTRAST_HU[0]), self.normalised_hu(CONTRAST_HU[1])


def is_ct(modality: str) -> bool:
    """Whether a DICOM ("CT") or RSNA ("CTA") modality is a CT."""
    return modality in ("CT", "CTA")
