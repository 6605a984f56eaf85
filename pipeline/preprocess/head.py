"""The head's interior in a processed volume: where windows are scored and negatives drawn."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.preprocess.config import PreprocessConfig
from pipeline.volume import Volume


def decision_values(values: np.ndarray) -> np.ndarray:
    """Sampling decisions are made on float16 values, so that a volume read back from the
    float16 cache gives exactly the same cubes as a freshly preprocessed one."""
    return values.astype(np.float16, copy=False)


def head_interior(volume: Volume, preprocess: PreprocessConfig, margin_mm: float = 8.0,
                  stride: int = 2) -> tuple[np.ndarray, int]:
    """Mask of the head's interior (tissue at least ``margin_mm`` inside the head's surface)
    on the grid subsampled by ``stride``; returns (mask, stride). Tissue is what lies above
    ``preprocess``'s tissue threshold for the volume's modality.

    The distance to the surface is computed on a grid twice as coarse, which is enough
    for a margin of millimetres and five times faster.
    """
    shape = volume.array[::stride, ::stride, ::stride].shape
    coarse = decision_values(volume.array[:: 2 * stride, :: 2 * stride, :: 2 * stride])
    head = ndimage.binary_fill_holes(coarse > preprocess.tissue_threshold(volume.modality))
    labels, count = ndimage.label(head)
    if count == 0:
        return np.zeros(shape, dtype=bool), stride
    head = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    step = 2 * stride * float(np.mean(volume.spacing))
    inside = ndimage.distance_transform_edt(head) * step > margin_mm
    expanded = inside.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    return expanded[: shape[0], : shape[1], : shape[2]], stride
