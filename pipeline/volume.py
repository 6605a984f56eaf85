"""`Volume`: a 3D image with its geometry in DICOM patient coordinates.

Conventions used everywhere in the project:

* ``array`` axes are ``(z, y, x)``: slice, row, column.
* ``affine`` maps a voxel index ``(z, y, x, 1)`` to patient coordinates in mm,
  DICOM LPS (+x towards the patient's Left, +y Posterior, +z Superior).
* ``spacing`` is derived from the affine (length of each index step, mm).

Every preprocessing step returns a new `Volume` whose affine still maps its voxels
to the patient, so a point of a source image can be followed through any chain of
steps with `Volume.source_to_voxel` and back with `Volume.voxel_to_source`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import IngestError

PATIENT_AXES = ("L", "P", "S")  # +x, +y, +z of DICOM patient coordinates
OPPOSITE = {"L": "R", "P": "A", "S": "I"}


@dataclass(frozen=True)
class SourceImage:
    """Geometry of one source image (one file, or one frame of a multi-frame file).

    Attributes:
        sop_uid: SOPInstanceUID of the file.
        frame: 0-based frame index inside the file (0 for single-frame files).
        position: ImagePositionPatient, centre of the first pixel, mm.
        row_cosine: direction of increasing column index (x), unit vector.
        column_cosine: direction of increasing row index (y), unit vector.
        pixel_spacing: (between rows, between columns), mm.
    """

    sop_uid: str
    frame: int
    position: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing: tuple[float, float]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)

    def pixel_to_patient(self, x: float, y: float) -> np.ndarray:
        """Patient mm of the pixel at column ``x``, row ``y`` (pixel centres at integers)."""
        return (
            self.position
            + x * self.pixel_spacing[1] * self.row_cosine
            + y * self.pixel_spacing[0] * self.column_cosine
        )

    def patient_to_pixel(self, point: np.ndarray) -> tuple[float, float, float]:
        """(x, y, distance from the image plane in mm) of a patient point."""
        d = np.asarray(point, dtype=np.float64) - self.position
        return (
            float(d @ self.row_cosine) / self.pixel_spacing[1],
            float(d @ self.column_cosine) / self.pixel_spacing[0],
            float(d @ self.normal),
        )


@dataclass
class Volume:
    """A 3D image and everything needed to relate it to its source images.

    Attributes:
        array: float32 voxels, axes (z, y, x).
        affine: 4x4, voxel index (z, y, x) -> patient LPS mm.
        modality: DICOM Modality of the source (``"CT"`` or ``"MR"``).
        series_uid: SeriesInstanceUID.
        sources: geometry of every source image kept in the volume, keyed by
            ``(SOPInstanceUID, frame)``.
        warnings: plain sentences about what the reader or a step noticed.
        info: non-identifying facts about the series (sizes, transfer syntaxes...).
        history: the steps applied since reading, with their parameters.
        source_headers: the parsed headers (no pixels) of the DICOM files read, in slice
            order: what a derived DICOM object copies (patient, study, frame of reference)
            and references (`pipeline.inference.export`). Identifying: never shown. Empty
            for a NIfTI image.
        source_grid: ``(shape, affine)`` of the image as read, before any step: the grid
            on which results go back to the source (`pipeline.inference.export`); set by
            the readers (`as_read`), None where unknown.
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str
    series_uid: str
    sources: dict[tuple[str, int], SourceImage] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    source_headers: tuple = ()
    source_grid: tuple | None = None

    # -- geometry -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Length in mm of one index step along z, y, x."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Patient direction of increasing z, y, x index, e.g. ``"SPL"`` (canonical)."""
        letters = []
        for column in self.affine[:3, :3].T:
            axis = int(np.argmax(np.abs(column)))
            letter = PATIENT_AXES[axis]
            letters.append(letter if column[axis] > 0 else OPPOSITE[letter])
        return "".join(letters)

    def voxel_to_patient(self, zyx) -> np.ndarray:
        """Patient mm of voxel indices; accepts shape (3,) or (N, 3)."""
        zyx = np.asarray(zyx, dtype=np.float64)
        return zyx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def patient_to_voxel(self, points) -> np.ndarray:
        """Continuous voxel indices (z, y, x) of patient points; shape (3,) or (N, 3)."""
        points = np.asarray(points, dtype=np.float64)
        return np.linalg.solve(self.affine[:3, :3], (points - self.affine[:3, 3]).T).T

    def source_to_voxel(self, sop_uid: str, x: float, y: float, frame: int = 0) -> np.ndarray:
        """Continuous (z, y, x) index of pixel (column ``x``, row ``y``) of a source image.

        This is how a localizer of ``train_localizers.csv`` lands in the array.
        Raises:
            IngestError: the image is not part of this volume.
        """
        source = self.sources.get((sop_uid, int(frame)))
        if source is None:
            raise IngestError(
                f"Image {sop_uid} (frame {frame}) is not part of series {self.series_uid}."
            )
        return self.patient_to_voxel(source.pixel_to_patient(x, y))

    def voxel_to_source(self, zyx) -> tuple[str, int, float, float]:
        """The source image nearest to a voxel, and the voxel's (x, y) in its pixels.

        Returns:
            ``(SOPInstanceUID, frame, x, y)``.
        """
        point = self.voxel_to_patient(zyx)
        best = min(self.sources.values(), key=lambda s: abs(s.patient_to_pixel(point)[2]))
        x, y, _ = best.patient_to_pixel(point)
        return best.sop_uid, best.frame, x, y

    def as_read(self) -> "Volume":
        """This volume, recorded as the grid its source was read on (`source_grid`)."""
        self.source_grid = (self.shape, self.affine.copy())
        return self

    def replace(self, **changes) -> "Volume":
        """A copy with some fields changed (lists copied, arrays shared unless given)."""
        changes.setdefault("warnings", list(self.warnings))
        changes.setdefault("history", list(self.history))
        return dataclasses.replace(self, **changes)


def plane_of_normal(normal: np.ndarray, tolerance_deg: float = 20.0) -> str:
    """Name the plane whose normal is ``normal`` (LPS): axial, coronal, sagittal or oblique."""
    normal = np.asarray(normal, dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    axis = int(np.argmax(np.abs(normal)))
    angle = np.degrees(np.arccos(min(1.0, abs(normal[axis]))))
    if angle > tolerance_deg:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]
