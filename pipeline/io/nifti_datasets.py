"""NIfTI datasets in the layouts of the public TOF-MRA aneurysm sets: their cases and truth.

Two layouts are recognised (`find_cases`; ``layout="auto"`` tells them apart):

* **ADAM-style** (the ADAM challenge, 113 training cases): one folder per case holding the
  image (``orig/TOF.nii.gz``, else ``TOF.nii.gz`` or ``pre/TOF.nii.gz``) and its reference:
  ``aneurysms.nii.gz``, a label map on the image's grid (1: untreated aneurysm, one per
  connected component; 2: treated aneurysm or its artefact, ignored as in the challenge), or
  else ``location.txt``, one aneurysm a line: ``x, y, z, radius`` in voxels of the image.
* **BIDS-style** (OpenNeuro ds003949 Lausanne, ds005096 Royal Brisbane): images
  ``sub-<label>[/ses-<label>]/anat/*_angio.nii[.gz]``; aneurysms as derivatives under
  ``derivatives/``, matched to an image by its ``sub-``/``ses-`` entities: masks
  (``*mask*.nii[.gz]`` on the image's grid, a connected component each, every mask file of
  the image counted) or tables (``*.tsv`` / ``*.csv`` with columns ``x, y, z`` in voxels of
  the image and, optionally, ``radius``).

A case without any reference is a negative case. The modality is the layout's (TOF-MRA,
``"MRA"``) unless the caller names another. Aneurysm centres are returned in patient LPS
millimetres (a mask's centre of mass, and its largest distance from it as the radius), so
that evaluation compares them with candidates exactly as it does for DICOM series.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.errors import IngestError
from pipeline.io.nifti import NIFTI_SUFFIXES, load_label_map, load_nifti

LAYOUTS = ("auto", "adam", "bids")
ADAM_IMAGES = ("orig/TOF.nii.gz", "TOF.nii.gz", "pre/TOF.nii.gz", "orig/TOF.nii", "TOF.nii")
ADAM_MASK, ADAM_LOCATIONS = "aneurysms.nii.gz", "location.txt"
UNTREATED = 1  # ADAM's label of the aneurysms to find (2: treated, ignored)
DEFAULT_RADIUS_MM = 5.0  # a table row without a radius (pipeline.inference.evaluate's default too)
_ENTITY = re.compile(r"(sub|ses)-([A-Za-z0-9]+)")


@dataclass
class NiftiCase:
    """One image of a NIfTI dataset and what it holds.

    Attributes:
        case_id: the case's name in tables (ADAM: its folder; BIDS: ``sub-X[_ses-Y]``).
        image: the image file.
        modality: the RSNA modality it is scored as.
        references: the files the aneurysms were read from (none: a negative case).
        aneurysms: (centre, LPS mm; radius, mm) of each aneurysm.
    """

    case_id: str
    image: Path
    modality: str
    references: list[Path] = field(default_factory=list)
    aneurysms: list[tuple[np.ndarray, float]] = field(default_factory=list)


def find_cases(root: str | os.PathLike, layout: str = "auto", modality: str = "MRA") -> list[NiftiCase]:
    """The cases of the NIfTI dataset at ``root``, with their aneurysms.

    Raises:
        IngestError: ``root`` holds no case of the layout, or a reference cannot be read
            (the message names the file).
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise IngestError(f"unknown layout {layout!r}: choose from {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise IngestError(f"{root} is not a folder.")
    if layout == "auto":
        layout = "bids" if any(root.glob("sub-*")) else "adam"
    cases = _adam_cases(root, modality) if layout == "adam" else _bids_cases(root, modality)
    if not cases:
        where = "sub-*/[ses-*/]anat/*_angio.nii.gz" if layout == "bids" else "<case>/orig/TOF.nii.gz"
        raise IngestError(f"{root} holds no {layout.upper()}-style case ({where}).")
    return cases


def is_nifti_dataset(root: str | os.PathLike) -> bool:
    """Whether ``root`` looks like a NIfTI dataset of a known layout (and not an RSNA folder)."""
    root = Path(root)
    if not root.is_dir() or (root / "train.csv").is_file():
        return False
    if any(root.glob("sub-*/anat/*_angio.nii*")) or any(root.glob("sub-*/ses-*/anat/*_angio.nii*")):
        return True
    return any((case / image).is_file() for case in root.iterdir() if case.is_dir() for image in ADAM_IMAGES)


# --------------------------------------------------------------------------------------
# ADAM


def _adam_cases(root: Path, modality: str) -> list[NiftiCase]:
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        image = next((folder / name for name in ADAM_IMAGES if (folder / name).is_file()), None)
        if image is None:
            continue
        case = NiftiCase(folder.name, image, modality)
        if (folder / ADAM_MASK).is_file():
            case.references = [folder / ADAM_MASK]
            case.aneurysms = mask_aneurysms(folder / ADAM_MASK, label=UNTREATED)
        elif (folder / ADAM_LOCATIONS).is_file():
            case.references = [folder / ADAM_LOCATIONS]
            case.aneurysms = table_aneurysms(folder / ADAM_LOCATIONS, image, modality)
        cases.append(case)
    return cases


# --------------------------------------------------------------------------------------
# BIDS


def _entities(path: Path) -> tuple[str, ...]:
    """The ``sub-``/``ses-`` entities of a BIDS file name, as ``("sub-01", "ses-02")``."""
    found = dict(_ENTITY.findall(path.name))
    return tuple(f"{key}-{found[key]}" for key in ("sub", "ses") if key in found)


def _bids_cases(root: Path, modality: str) -> list[NiftiCase]:
    images = sorted({*root.glob("sub-*/anat/*_angio.nii*"), *root.glob("sub-*/ses-*/anat/*_angio.nii*")})
    images = [p for p in images if p.name.lower().endswith(NIFTI_SUFFIXES)]
    derivatives = [p for p in (root / "derivatives").rglob("*") if p.is_file()] if (root / "derivatives").is_dir() else []
    cases, seen = [], set()
    for image in images:
        entities = _entities(image)
        case_id = "_".join(entities) or image.name.split(".")[0]
        if case_id in seen:  # a second angio of the same session (another run): its own name
            case_id = image.name.split(".")[0]
        seen.add(case_id)
        mine = [p for p in derivatives if _entities(p) == entities]
        masks = [p for p in mine if "mask" in p.name.lower() and p.name.lower().endswith(NIFTI_SUFFIXES)]
        tables = [p for p in mine if p.suffix.lower() in (".tsv", ".csv")]
        case = NiftiCase(case_id, image, modality, masks + tables)
        for mask in masks:
            case.aneurysms += mask_aneurysms(mask)
        for table in tables if not masks else []:  # a mask is the fuller reference
            case.aneurysms += table_aneurysms(table, image, modality)
        cases.append(case)
    return cases


# --------------------------------------------------------------------------------------
# References


def mask_aneurysms(path: Path, label: int | None = None) -> list[tuple[np.ndarray, float]]:
    """One aneurysm per connected component of a mask (voxels equal to ``label``, or every
    positive voxel): its centre of mass in LPS mm and its largest distance from it (at least
    half a voxel), in mm."""
    labels = load_label_map(path)
    inside = labels.array == label if label is not None else labels.array > 0
    components, count = ndimage.label(inside, structure=np.ones((3, 3, 3)))
    aneurysms = []
    for number in range(1, count + 1):
        voxels = np.argwhere(components == number).astype(float)
        centre = labels.voxel_to_patient(voxels.mean(axis=0))
        reach = np.linalg.norm(labels.voxel_to_patient(voxels) - centre, axis=1).max()
        aneurysms.append((centre, float(max(reach, min(labels.spacing) / 2))))
    return aneurysms


def table_aneurysms(path: Path, image: Path, modality: str) -> list[tuple[np.ndarray, float]]:
    """Aneurysms of a table of voxel coordinates of ``image`` (ADAM's ``location.txt``: ``x, y,
    z, radius`` without a header; or a TSV/CSV with columns ``x, y, z`` and optionally
    ``radius``), in LPS mm.

    Raises:
        IngestError: a row that is not numbers (the file and row are named).
    """
    volume = load_nifti(image, modality)
    text = path.read_text(errors="replace")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = [row for row in csv.reader(text.splitlines(), delimiter=delimiter) if any(cell.strip() for cell in row)]
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    named = {"x", "y", "z"} <= set(header)
    columns = [header.index(c) for c in ("x", "y", "z")] if named else [0, 1, 2]
    radius = header.index("radius") if named and "radius" in header else (3 if not named else None)
    aneurysms = []
    for number, row in enumerate(rows[1:] if named else rows, start=2 if named else 1):
        try:
            ijk = [float(row[c]) for c in columns]
            size = float(row[radius]) if radius is not None and radius < len(row) and row[radius].strip() else None
        except (ValueError, IndexError):
            raise IngestError(f"{path}, row {number}: not x, y, z voxel coordinates.") from None
        voxel = np.array(ijk[::-1])  # NIfTI (i, j, k) is this project's (x, y, z): (z, y, x) is (k, j, i)
        centre = volume.voxel_to_patient(voxel)
        radius_mm = size * float(np.mean(volume.spacing)) if size is not None else DEFAULT_RADIUS_MM
        aneurysms.append((centre, float(radius_mm)))
    return aneurysms
