"""Vessel label maps on the grid of a processed volume.

A label map (``segmentations/<uid>/<uid>_cowseg.nii``, `pipeline.io.rsna.find_vessel_labels`)
is aligned with its series by its affine, not by array order, and may have its own grid; it
is sampled by nearest neighbour at every voxel centre of the processed volume, so whatever
the steps of the preprocessing did to the image (reorientation, crop, resampling), the
labels land where the vessels are. Values are kept as they are (`pipeline.labels.VESSEL_LABELS`
for the demo); a map that does not lie on its series is refused.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import affine_transform

from pipeline.errors import IngestError
from pipeline.volume import Volume

MIN_INSIDE = 0.5  # share of a map's labelled volume that must fall inside the processed volume


def labels_on_grid(labels: Volume, target: Volume) -> np.ndarray:
    """The label map ``labels`` (uint8, any grid) sampled at the voxels of ``target``.

    Raises:
        IngestError: the map holds no label, or less than half of its labelled volume falls
            inside ``target`` (it belongs to another series, or its affine is wrong).
    """
    labelled_mm3 = np.count_nonzero(labels.array) * abs(np.linalg.det(labels.affine[:3, :3]))
    if labelled_mm3 == 0:
        raise IngestError(f"the vessel label map {labels.series_uid} holds no label.")
    to_labels = np.linalg.solve(labels.affine, target.affine)  # target voxel -> label-map voxel
    array = affine_transform(labels.array, to_labels[:3, :3], to_labels[:3, 3], output_shape=target.shape,
                             order=0, mode="constant", cval=0, prefilter=False)
    inside = np.count_nonzero(array) * abs(np.linalg.det(target.affine[:3, :3])) / labelled_mm3
    if inside < MIN_INSIDE:
        raise IngestError(f"the vessel label map {labels.series_uid} does not lie on series {target.series_uid}: "
                          f"only {inside:.0%} of its labelled volume falls inside the image.")
    return array.astype(np.uint8, copy=False)
