"""Preprocessing: small composable steps on a `Volume`, and the one default chain.

Each step is a callable ``Volume -> Volume`` that returns a new volume whose affine
still maps voxels to patient coordinates, and appends what it did to
``Volume.history``. The default chain, used by dataset building, training,
inference and the dashboard alike, is::

    Reorient() -> CropForeground() -> Resample() -> Normalize()

Cropping comes before resampling so that the (expensive) interpolation only
touches the head.

Choices, and why:

* Canonical orientation: array axes (z, y, x) increase towards patient
  Superior, Posterior, Left (``"SPL"``), i.e. DICOM LPS read as (z, y, x). An axial
  series stored feet-to-head is already canonical, an axial slice is displayed
  as radiologists do (anterior up, patient's right on the viewer's left), and the
  patient's left-right axis is always array axis 2 (what left-right flips use).
* Target spacing: 0.8 mm isotropic. CTA and MRA in-plane spacing is 0.4-0.7 mm,
  so 0.8 mm keeps a 2 mm aneurysm at 2.5 voxels while a 48-voxel cube spans 38 mm,
  enough for a 12 mm aneurysm and its parent vessel; one physical scale for every
  modality lets one model see them all. Anisotropic series (T2 with 4-6 mm slices,
  more than `ANISOTROPY_RATIO` times coarser through-plane) are upsampled linearly
  along z only as far as the data allow: the in-plane detail is kept, the
  through-plane detail is interpolated, and a warning says so.
* Normalisation to [0, 1]: CT through a fixed Hounsfield window (-100, 900) that
  keeps brain (~40 HU) dark, contrast-filled vessels (250-500 HU) mid-grey and
  bone (> 700 HU) bright; MR through robust percentiles (0.5, 99.8) of the cropped
  head, since MR intensities have no absolute scale. The upper MR percentile is
  high so that bright TOF vessels are not clipped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pipeline.errors import IngestError
from pipeline.preprocess.config import CANONICAL, PreprocessConfig
from pipeline.volume import Volume

ANISOTROPY_RATIO = 3.0
_WORLD_AXIS = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}
_POSITIVE = {"L", "P", "S"}


def _record(volume: Volume, step: str, **details) -> list[dict]:
    return [*volume.history, {"step": step, **details}]


# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reorient:
    """Permute and flip axes so that (z, y, x) point to ``orientation`` (no interpolation).

    For an oblique series the nearest axes are chosen; the affine keeps the exact
    obliquity, so coordinates stay exact.

    Args:
        orientation: three letters, the patient direction of increasing z, y, x.
    """

    orientation: str = CANONICAL

    def __call__(self, volume: Volume) -> Volume:
        target_axes = [_WORLD_AXIS[c] for c in self.orientation]
        directions = volume.affine[:3, :3]
        # old array axis feeding each new axis: the assignment with the largest alignment
        order = max(
            itertools.permutations(range(3)),
            key=lambda p: sum(abs(directions[target_axes[i], p[i]]) for i in range(3)),
        )
        array = volume.array if order == (0, 1, 2) else volume.array.transpose(order)
        mapping = np.zeros((4, 4))
        mapping[3, 3] = 1.0
        flips = []
        for new_axis, old_axis in enumerate(order):
            component = directions[target_axes[new_axis], old_axis]
            wants_positive = self.orientation[new_axis] in _POSITIVE
            flip = (component > 0) != wants_positive
            mapping[old_axis, new_axis] = -1.0 if flip else 1.0
            if flip:
                mapping[old_axis, 3] = array.shape[new_axis] - 1
                flips.append(new_axis)
        if flips:
            array = np.flip(array, axis=flips)
        if order != (0, 1, 2) or flips:
            array = np.ascontiguousarray(array)
        return volume.replace(
            array=array,
            affine=volume.affine @ mapping,
            history=_record(volume, "reorient", orientation=self.orientation, from_orientation=volume.orientation),
        )


@dataclass(frozen=True)
class CropForeground:
    """Crop to the bounding box of the head plus a margin.

    The head is found on a coarse copy (about 3 mm voxels): voxels above a
    threshold (CT: -500 HU, air is -1000; MR: 10 % of the 99th percentile),
    opened to cut thin bridges (head holder, table), then the largest connected
    component and any other component at least a tenth of its size.

    Args:
        margin_mm: kept around the head on every side.
        ct_threshold: Hounsfield value separating air from tissue.
        mr_fraction: fraction of the 99th percentile separating MR background.
    """

    margin_mm: float = 5.0
    ct_threshold: float = -500.0
    mr_fraction: float = 0.1

    def __call__(self, volume: Volume) -> Volume:
        box = self.bounding_box(volume)
        if box is None:
            return volume.replace(
                warnings=[*volume.warnings, "No head was found to crop to; the whole volume was kept."],
                history=_record(volume, "crop", box=None),
            )
        start = np.array([s.start for s in box], dtype=np.float64)
        affine = volume.affine.copy()
        affine[:3, 3] = volume.voxel_to_patient(start)
        return volume.replace(
            array=volume.array[box],
            affine=affine,
            history=_record(volume, "crop", box=[[s.start, s.stop] for s in box], margin_mm=self.margin_mm),
        )

    def bounding_box(self, volume: Volume) -> tuple[slice, slice, slice] | None:
        spacing = np.asarray(volume.spacing)
        stride = np.maximum(1, np.round(3.0 / spacing)).astype(int)
        coarse = volume.array[:: stride[0], :: stride[1], :: stride[2]]
        if volume.modality == "CT":
            threshold = self.ct_threshold
        else:
            threshold = self.mr_fraction * float(np.percentile(coarse, 99))
        mask = ndimage.binary_opening(coarse > threshold, iterations=1)
        labels, count = ndimage.label(mask)
        if count == 0:
            return None
        sizes = np.bincount(labels.ravel())[1:]
        boxes = [box for box, size in zip(ndimage.find_objects(labels), sizes) if size >= 0.1 * sizes.max()]
        low = np.min([[s.start for s in box] for box in boxes], axis=0) * stride
        high = np.max([[s.stop for s in box] for box in boxes], axis=0) * stride
        margin = np.ceil(self.margin_mm / spacing).astype(int)
        low = np.maximum(low - margin, 0)
        high = np.minimum(high + margin, volume.array.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(low, high))  # type: ignore[return-value]


@dataclass(frozen=True)
class Resample:
    """Trilinear resampling to a target spacing, exact in patient coordinates.

    Output voxel ``o`` samples input index ``(o + 0.5) * target / spacing - 0.5``
    along each axis, and the affine is updated accordingly, so the field of view
    is kept to within one target voxel and every coordinate stays exact.

    Args:
        spacing: target (z, y, x) spacing in mm.
    """

    spacing: tuple[float, float, float] = (0.8, 0.8, 0.8)

    def __call__(self, volume: Volume) -> Volume:
        current = np.asarray(volume.spacing)
        target = np.asarray(self.spacing, dtype=np.float64)
        factor = current / target
        warnings = list(volume.warnings)
        coarsest, finest = current.max(), current.min()
        if coarsest / finest > ANISOTROPY_RATIO and coarsest / target.max() > ANISOTROPY_RATIO:
            warnings.append(
                f"Anisotropic series ({coarsest:.1f} mm against {finest:.2f} mm): through-plane detail "
                f"is interpolated to {target.max():.1f} mm, it is not measured."
            )
        if np.allclose(factor, 1.0, atol=1e-4):
            return volume.replace(warnings=warnings, history=_record(volume, "resample", spacing=list(self.spacing)))
        array = volume.array.astype(np.float32, copy=False)
        if any(stride < 0 for stride in array.strides):
            array = np.ascontiguousarray(array)
        source = torch.from_numpy(array)  # a cropped view is read in place, not copied
        with torch.no_grad():
            output = F.interpolate(
                source[None, None],
                scale_factor=tuple(float(f) for f in factor),
                mode="trilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )[0, 0].numpy()
        offset = 0.5 / factor - 0.5
        affine = volume.affine.copy()
        affine[:3, :3] = volume.affine[:3, :3] / factor
        affine[:3, 3] = volume.voxel_to_patient(offset)
        return volume.replace(
            array=output,
            affine=affine,
            warnings=warnings,
            history=_record(volume, "resample", spacing=list(self.spacing), from_spacing=current.round(4).tolist()),
        )


_HEAD_SHARE = 0.25  # MR: of the 90th percentile, what separates the head from the air around it


@dataclass(frozen=True)
class Normalize:
    """Map intensities to [0, 1]: a Hounsfield window for CT, robust percentiles for MR.

    Args:
        ct_window: (low, high) Hounsfield units mapped to 0 and 1.
        mr_percentiles: percentiles of the volume mapped to 0 and 1.
        mr_tissue_level: when set, the lower percentile goes to 0 and the median of the head
            (above a quarter of the 90th percentile: not set by the brightest few percent) to
            this level instead.
    """

    ct_window: tuple[float, float] = (-100.0, 900.0)
    mr_percentiles: tuple[float, float] = (0.5, 99.8)
    mr_tissue_level: float | None = None

    def __call__(self, volume: Volume) -> Volume:
        if volume.modality == "CT":
            low, high = self.ct_window
        else:
            sample = volume.array[::2, ::2, ::2]
            low, high = (float(v) for v in np.percentile(sample, self.mr_percentiles))
            if self.mr_tissue_level is not None:
                head = sample[sample > _HEAD_SHARE * float(np.percentile(sample, 90.0))]
                tissue = float(np.median(head)) if head.size else high
                high = low + (tissue - low) / self.mr_tissue_level if tissue > low else high
        scale = 1.0 / (high - low) if high > low else 1.0
        array = np.subtract(volume.array, np.float32(low), dtype=np.float32)
        array *= np.float32(scale)
        np.clip(array, 0.0, 1.0, out=array)
        return volume.replace(
            array=array,
            history=_record(volume, "normalize", low=float(low), high=float(high)),
        )


# --------------------------------------------------------------------------------------


@dataclass
class Preprocessor:
    """The default chain: reorient, crop to the head, resample, normalise."""

    config: PreprocessConfig = field(default_factory=PreprocessConfig)

    @property
    def steps(self) -> list:
        c = self.config
        return [*self.geometry_steps, Normalize(c.ct_window, c.mr_percentiles, c.mr_tissue_level)]

    @property
    def geometry_steps(self) -> list:
        """The chain without the intensity step: what a viewer shows, in the series' own
        units (Hounsfield for CT) on the processed grid."""
        c = self.config
        return [Reorient(c.orientation), CropForeground(c.crop_margin_mm), Resample(c.target_spacing)]

    def __call__(self, volume: Volume) -> Volume:
        volume = check_modality(volume)
        for step in self.steps:
            volume = step(volume)
        return volume


#: DICOM modalities that are neither CT nor MR and that no normalisation here fits: refused.
OTHER_MODALITIES = {
    "PT": "positron emission tomography", "NM": "nuclear medicine", "US": "ultrasound", "XA": "X-ray angiography",
    "RF": "fluoroscopy", "CR": "computed radiography", "DX": "digital radiography", "MG": "mammography",
    "IO": "intra-oral radiography", "PX": "panoramic X-ray", "OP": "ophthalmic photography", "SM": "microscopy",
    "XC": "photography", "ES": "endoscopy", "RTDOSE": "a radiotherapy dose", "RTIMAGE": "a radiotherapy image",
    "SEG": "a segmentation",
}


def check_modality(volume: Volume) -> Volume:
    """Refuse a series of a modality the model cannot read (PET, ultrasound, ...); one of no
    known modality (secondary capture, none given) goes on as MR, with a warning.

    Raises:
        IngestError: the modality is one of `OTHER_MODALITIES`.
    """
    modality = volume.modality
    if modality in ("CT", "MR"):
        return volume
    if modality in OTHER_MODALITIES:
        raise IngestError(f"The series is {OTHER_MODALITIES[modality]} (DICOM modality {modality}): the model reads "
                          "CT and MR series only.")
    return volume.replace(warnings=[*volume.warnings, f"The series' DICOM modality is {modality[:16]!r}, not CT or "
                                    "MR: it was processed as MR, and the model, trained on CT and MR series, may "
                                    "not fit it."])


def preprocess(volume: Volume, config: PreprocessConfig | None = None) -> Volume:
    """Apply the default chain with ``config`` (defaults if None)."""
    return Preprocessor(config or PreprocessConfig())(volume)
