"""Cached loaders of series for display: keyed by paths, UIDs and parameters, never by arrays."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from pipeline.io.dicom import scan
from pipeline.errors import IngestError
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.transforms import Preprocessor
from pipeline.io.rsna import read_localizers
from dashboard.viewer import volume_percentiles

GEOMETRY_SAMPLE = 200  # series scanned for the geometry summary of a large dataset


@st.cache_data(show_spinner=False, max_entries=6)
def display_volume(root: str, series_uid: str, spacing_mm: float) -> dict:
    """A series through the default preprocessing's geometry (canonical orientation, cropped
    to the head) at ``spacing_mm``, in its own units (Hounsfield for CT), with its localizers
    mapped to voxels."""
    from pipeline.io.dicom import load_series

    volume = load_series(Path(root) / "series" / series_uid)
    contract = dataclasses.replace(PreprocessConfig(), target_spacing=(spacing_mm,) * 3)
    for step in Preprocessor(contract).geometry_steps:
        volume = step(volume)
    localizers, _ = read_localizers(Path(root))
    points = []
    for localizer in localizers.get(series_uid, []):
        try:
            voxel = volume.source_to_voxel(localizer.sop_uid, localizer.x, localizer.y, localizer.frame)
        except IngestError:
            continue
        points.append({"location": localizer.location, "voxel": [float(v) for v in voxel]})
    return {
        "array": volume.array.astype(np.float32),
        "modality": volume.modality,
        "spacing": volume.spacing,
        "plane": volume.info.get("plane", ""),
        "source_shape": [volume.info.get("rows"), volume.info.get("columns"), volume.info.get("n_images")],
        "warnings": list(volume.warnings),
        "localizers": points,
        "percentiles": volume_percentiles(volume.array),
    }


@st.cache_data(show_spinner=False)
def geometry_table(root: str, modified: float, series: tuple[tuple[str, str], ...]) -> pd.DataFrame:
    """Acquisition geometry from the headers (no pixels) of up to `GEOMETRY_SAMPLE` series."""
    rows = []
    for uid, modality in series[:GEOMETRY_SAMPLE]:
        try:
            found = scan(Path(root) / "series" / uid).series
        except IngestError:
            continue
        if not found:
            continue
        info = found[0]
        rows.append({
            "Modality": modality, "Plane": info.plane, "Images": info.n_images,
            "Matrix": f"{info.rows} x {info.columns}",
            "Pixel spacing (mm)": round(info.pixel_spacing[1], 3) if info.pixel_spacing else None,
            "Slice spacing (mm)": round(info.slice_spacing, 3) if info.slice_spacing else None,
        })
    return pd.DataFrame(rows)


def modified_time(root: Path) -> float:
    return os.stat(root / "train.csv").st_mtime


def default_spacing() -> float:
    return PreprocessConfig().target_spacing[0]
