"""Cached loaders of series for display: keyed by paths, UIDs and parameters, never by arrays."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
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

GEOMETRY_PER_MODALITY = 12  # series whose headers the geometry summary reads, per modality


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


def series_geometry(root: str, uid: str, modality: str) -> dict | None:
    """One series' acquisition geometry from its headers (no pixels); None when unreadable."""
    try:
        found = scan(Path(root) / "series" / uid).series
    except (IngestError, OSError):
        return None
    if not found:
        return None
    info = found[0]
    return {"Modality": modality, "Plane": info.plane, "Images": info.n_images,
            "Matrix": f"{info.rows} x {info.columns}",
            "Pixel spacing (mm)": round(info.pixel_spacing[1], 3) if info.pixel_spacing else None,
            "Slice spacing (mm)": round(info.slice_spacing, 3) if info.slice_spacing else None}


def first_of_each_modality(series: tuple[tuple[str, str], ...], count: int) -> tuple[tuple[str, str], ...]:
    """The first ``count`` (uid, modality) pairs of each modality, in their order."""
    taken: dict[str, int] = {}
    chosen = []
    for uid, modality in series:
        taken[modality] = taken.get(modality, 0) + 1
        if taken[modality] <= count:
            chosen.append((uid, modality))
    return tuple(chosen)


class GeometryReading:
    """The acquisition geometry of the first `GEOMETRY_PER_MODALITY` series of each modality,
    read from their headers in a server thread while the exploration page renders (with the
    progress of this): every header of the 200-series demo, 17,600 files, took 35 s on 2
    cores; the real RSNA set has a million."""

    def __init__(self, root: str, series: tuple[tuple[str, str], ...]):
        self.root, self.series = root, first_of_each_modality(series, GEOMETRY_PER_MODALITY)
        self.done, self.started = 0, time.monotonic()
        self.frame: pd.DataFrame | None = None
        threading.Thread(target=self._run, name="geometry-reading", daemon=True).start()

    def _run(self) -> None:
        rows = []
        for uid, modality in self.series:
            try:
                row = series_geometry(self.root, uid, modality)
            except Exception:  # a header no reader expected: that series is left out, the caption says so
                row = None
            if row is not None:
                rows.append(row)
            self.done += 1
        self.frame = pd.DataFrame(rows)


@st.cache_resource(show_spinner=False, max_entries=4)
def geometry_reading(root: str, modified: float, series: tuple[tuple[str, str], ...]) -> GeometryReading:
    """The one header reading of a data folder (as its train.csv was at ``modified``) of this server."""
    return GeometryReading(root, series)


def modified_time(root: Path) -> float:
    return os.stat(root / "train.csv").st_mtime


def default_spacing() -> float:
    return PreprocessConfig().target_spacing[0]
