"""NIfTI images (``.nii``, ``.nii.gz``) in and out, with nibabel.

NIfTI maps voxel (i, j, k) to RAS millimetres (+x towards the patient's right, +y anterior,
+z superior); DICOM and this project use LPS (+x left, +y posterior, +z superior). A `Volume`
keeps its voxels as (z, y, x) = (k, j, i) with an affine to LPS, so reading transposes the
array, reorders the affine's columns and negates its first two rows:
``affine_zyx_lps = diag(-1, -1, 1, 1) @ affine_ijk_ras @ P`` with P the (k, j, i) -> (i, j, k)
permutation. Writing does the inverse. A NIfTI file says nothing of its modality: the
caller names it (CT or MR, or an RSNA modality).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from pipeline.errors import IngestError
from pipeline.volume import Volume, plane_of_normal

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
IJK_FROM_KJI = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
_GZIP_MAGIC = b"\x1f\x8b"


def is_nifti(source) -> bool:
    """Whether ``source`` (a path, or one ``(name, bytes)`` pair in a list) names a NIfTI file."""
    if isinstance(source, (str, os.PathLike)):
        return str(source).lower().endswith(NIFTI_SUFFIXES) and Path(source).is_file()
    if isinstance(source, (list, tuple)) and len(source) == 1 and isinstance(source[0], tuple):
        return str(source[0][0]).lower().endswith(NIFTI_SUFFIXES)
    return False


def dicom_modality(modality: str | None) -> str:
    """"CT" or "MR" from a DICOM or RSNA modality name.

    Raises:
        IngestError: none given, or another one.
    """
    names = {"CT": "CT", "CTA": "CT", "MR": "MR", "MRA": "MR", "MRI T2": "MR", "MRI T1POST": "MR"}
    if modality is None or str(modality).strip().upper() not in names:
        raise IngestError("A NIfTI file does not say its modality: name it (CT or MR, e.g. --modality MR for a "
                          "TOF-MRA).")
    return names[str(modality).strip().upper()]


def load_nifti(source, modality: str | None, max_voxels: int | None = None) -> Volume:
    """Read a NIfTI image into a `Volume` (float32, (z, y, x), affine to LPS).

    Args:
        source: a path, or a list holding one ``(name, bytes)`` pair (an upload).
        modality: "CT" or "MR" (or an RSNA modality such as "MRA").
        max_voxels: refuse larger images (checked from the header).

    Raises:
        IngestError: not a readable 3-D NIfTI image, no modality, or too large.
    """
    import nibabel

    modality = dicom_modality(modality)
    name, image = _open(source, nibabel)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) < 3 or any(n < 1 for n in shape):
        raise IngestError(f"{name} holds a {len(shape)}-D image; a 3-D volume is needed.")
    warnings = []
    if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
        warnings.append(f"{name} holds {int(np.prod(shape[3:]))} volumes (shape {shape}); only the first was read.")
    if min(shape[:3]) < 2:
        raise IngestError(f"{name} has the shape {shape[:3]}: a 3-D volume needs at least two slices each way.")
    if max_voxels is not None and int(np.prod(shape[:3])) > max_voxels:
        raise IngestError(f"{name} is too large: {int(np.prod(shape[:3])):,} voxels, above the limit of {max_voxels:,}.")
    affine = _affine(image, name)
    try:
        data = np.asarray(image.dataobj[(slice(None),) * 3 + (0,) * (len(shape) - 3)], dtype=np.float32)
    except (OSError, ValueError, EOFError, gzip.BadGzipFile) as exc:
        raise IngestError(f"{name} could not be read ({str(exc).splitlines()[0][:120] if str(exc) else 'truncated'}).") \
            from None
    finite = np.isfinite(data)
    if not finite.all():
        warnings.append(f"{name} holds non-finite values; they were set to the image minimum.")
        data = np.where(finite, data, data[finite].min() if finite.any() else 0.0)
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    zyx_affine = RAS_TO_LPS @ affine @ IJK_FROM_KJI
    normal = zyx_affine[:3, 0] / np.linalg.norm(zyx_affine[:3, 0])
    spacing = np.linalg.norm(zyx_affine[:3, :3], axis=0)
    info = {"rows": shape[1], "columns": shape[0], "n_files": 1, "n_images": shape[2], "plane": plane_of_normal(normal),
            "source_spacing": tuple(float(s) for s in spacing), "format": "NIfTI",
            "source_affine_lps": zyx_affine.tolist()}
    return Volume(array=array, affine=zyx_affine, modality=modality, series_uid=_stem(name), warnings=warnings,
                  info=info).as_read()


def load_label_map(path: str | os.PathLike) -> Volume:
    """A label map (0 background, positive integers classes) as a `Volume` of uint8 values
    with its affine to LPS (``modality`` "SEG").

    Raises:
        IngestError: not a readable 3-D NIfTI image, or values that are not labels 0-255.
    """
    import nibabel

    name, image = _open(path, nibabel)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise IngestError(f"{name} holds an image of shape {shape}: a label map is 3-D.")
    affine = _affine(image, name)
    try:
        data = np.asarray(image.dataobj)
    except (OSError, ValueError, EOFError, gzip.BadGzipFile) as exc:
        raise IngestError(f"{name} could not be read ({_first(exc)}).") from None
    if not np.all(np.isfinite(data)) or data.min(initial=0) < 0 or data.max(initial=0) > 255 \
            or not np.array_equal(data, np.round(data)):
        raise IngestError(f"{name} is not a label map: its values are not whole numbers from 0 to 255.")
    array = np.ascontiguousarray(data.astype(np.uint8).transpose(2, 1, 0))
    return Volume(array=array, affine=RAS_TO_LPS @ affine @ IJK_FROM_KJI, modality="SEG", series_uid=_stem(name))


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine_zyx_lps: np.ndarray, dtype=np.float32) -> Path:
    """Write a (z, y, x) array with its LPS affine as NIfTI (``dtype``, float32 by default;
    gzipped for ``.nii.gz``), atomically, making its folder. 3D Slicer, ITK and nibabel then
    place every voxel where this project does."""
    import nibabel

    from pipeline.files import temporary_beside

    path = Path(path)
    image = _nifti_image(array, affine_zyx_lps, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(path, ".nii.gz" if path.name.endswith(".gz") else ".nii")
    try:
        nibabel.save(image, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def nifti_bytes(array: np.ndarray, affine_zyx_lps: np.ndarray, dtype=np.float32,
                display: tuple[float, float] | None = None) -> bytes:
    """What `save_nifti` writes to a ``.nii.gz`` file, in memory (a download, a viewer's layer);
    ``display``: the range a viewer shows (the header's cal_min, cal_max)."""
    image = _nifti_image(array, affine_zyx_lps, dtype)
    if display is not None:
        image.header["cal_min"], image.header["cal_max"] = display
    return gzip.compress(image.to_bytes(), compresslevel=6)


def _nifti_image(array: np.ndarray, affine_zyx_lps: np.ndarray, dtype):
    import nibabel

    affine_ijk_ras = RAS_TO_LPS @ np.asarray(affine_zyx_lps, float) @ IJK_FROM_KJI
    image = nibabel.Nifti1Image(np.asarray(array, dtype).transpose(2, 1, 0), affine_ijk_ras)
    image.set_qform(affine_ijk_ras, code=1)  # scanner coordinates
    image.set_sform(affine_ijk_ras, code=1)
    return image


def _open(source, nibabel):
    if isinstance(source, (str, os.PathLike)):
        name = Path(source).name
        try:
            return name, nibabel.load(str(source))
        except (nibabel.filebasedimages.ImageFileError, OSError, ValueError, EOFError, gzip.BadGzipFile) as exc:
            raise IngestError(f"{name} is not a readable NIfTI image ({_first(exc)}).") from None
    name, data = source[0]
    data = bytes(data)
    try:
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
        try:
            return str(name), nibabel.Nifti1Image.from_bytes(data)
        except nibabel.spatialimages.HeaderDataError:
            return str(name), nibabel.Nifti2Image.from_bytes(data)
    except (nibabel.filebasedimages.ImageFileError, nibabel.spatialimages.HeaderDataError, OSError, ValueError,
            EOFError, gzip.BadGzipFile, TypeError) as exc:
        raise IngestError(f"{name} is not a readable NIfTI image ({_first(exc)}).") from None


def _affine(image, name: str) -> np.ndarray:
    """The image's voxel -> RAS affine: the sform where set, else the qform; refused when
    neither is usable (NIfTI's method 1, voxel sizes alone, places nothing in a patient)."""
    header = image.header
    for matrix, code in (header.get_sform(coded=True), header.get_qform(coded=True)):
        if matrix is not None and code > 0 and np.all(np.isfinite(matrix)) and abs(np.linalg.det(matrix[:3, :3])) > 1e-9:
            # NIfTI stores float32: 0.69 mm comes back as 0.68999999. Rounded to a nanometre, a
            # spacing written from DICOM's decimal strings is that string again, and the volume
            # resamples to the very grid of its DICOM series.
            return np.round(np.asarray(matrix, dtype=float), 6)
    raise IngestError(f"{name} has neither an sform nor a qform: where its voxels lie in the patient is unknown.")


def _stem(name: str) -> str:
    base = Path(name).name
    for suffix in (".nii.gz", ".nii"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__
