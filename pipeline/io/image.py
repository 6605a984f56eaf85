"""One entry for every image the product accepts: a DICOM series (a folder, files, a
``.zip``, or in-memory files) or a NIfTI image."""

from __future__ import annotations

from pipeline.io.archive import read_source
from pipeline.io.dicom import DEFAULT_MAX_VOXELS, load_series
from pipeline.io.nifti import is_nifti, load_nifti
from pipeline.volume import Volume


def read_image(source, *, series_uid: str | None = None, modality: str | None = None,
               max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """The image at ``source`` as a `Volume`.

    Args:
        source: a DICOM source (see `pipeline.io.dicom.load_series` and
            `pipeline.io.archive.read_source`), or a ``.nii`` / ``.nii.gz`` path or a list
            holding one such ``(name, bytes)`` upload.
        series_uid: which DICOM series, when the source holds several.
        modality: "CT" or "MR" (or an RSNA modality) for a NIfTI image, which does not say
            it; a DICOM series' own header is used.
        max_voxels: refuse larger images.

    Raises:
        pipeline.errors.IngestError: the source is not one readable image.
    """
    if is_nifti(source):
        return load_nifti(source, modality, max_voxels)
    return load_series(read_source(source), series_uid=series_uid, max_voxels=max_voxels)
