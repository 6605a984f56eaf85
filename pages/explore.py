"""Dataset exploration: what the data folder holds, and a viewer for any series."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import figures, viewer
from dashboard.text import plain, progress_text
from dashboard.data import FOLDER, THIN_SLICES_FIRST, data_folder_check, page_start, series_label, train_table
from dashboard.volumes import (GEOMETRY_PER_MODALITY, default_spacing, display_volume, geometry_reading,
                               modified_time)
from pipeline.io.rsna import ERROR
from pipeline.labels import MODALITIES

NEAR_MM = 4.0  # a localizer is marked on slices within this distance
REPORT_ROWS = 100  # findings of the data folder check shown on the page


def overview(table) -> None:
    columns = st.columns(4)
    columns[0].metric("Series", len(table))
    columns[1].metric("With an aneurysm", int(table["Aneurysm Present"].sum()))
    columns[2].metric("Positive share", f"{table['Aneurysm Present'].mean():.0%}")
    columns[3].metric("Modalities", table["Modality"].nunique())
    left, right = st.columns(2)
    left.plotly_chart(figures.balance_by_modality(table), width="stretch")
    right.plotly_chart(figures.ages(table), width="stretch")
    st.plotly_chart(figures.locations(table), width="stretch")
    shares = (table.groupby("Modality")["Aneurysm Present"].agg(["count", "sum", "mean"])
              .reindex([m for m in MODALITIES if m in set(table["Modality"])]))
    shares.columns = ["Series", "With an aneurysm", "Positive share"]
    st.dataframe(shares.style.format({"Positive share": "{:.0%}"}), width="stretch")


def geometry(root, table) -> None:
    series = tuple(zip(table["SeriesInstanceUID"].astype(str), table["Modality"].astype(str)))
    reading = geometry_reading(str(root), modified_time(root), series)
    if reading.frame is None:
        geometry_progress(reading)
        return
    frame = reading.frame
    if frame.empty:
        st.warning("No series header could be read.")
        return
    if len(frame) < len(series):
        st.caption(f"From the headers of {len(frame)} of the {len(series)} series (up to "
                   f"{GEOMETRY_PER_MODALITY} of each modality).")
    left, right = st.columns(2)
    left.plotly_chart(figures.spacing(frame, "Pixel spacing (mm)"), width="stretch")
    right.plotly_chart(figures.spacing(frame, "Slice spacing (mm)"), width="stretch")
    summary = frame.groupby(["Modality", "Plane"]).agg(
        Series=("Images", "size"), Images=("Images", "median"),
        Pixel=("Pixel spacing (mm)", "median"), Slice=("Slice spacing (mm)", "median"),
    ).rename(columns={"Images": "Median images", "Pixel": "Median pixel (mm)", "Slice": "Median slice (mm)"})
    st.dataframe(summary, width="stretch")


@st.fragment(run_every=1.0)
def geometry_progress(reading) -> None:
    """The header reading's progress, until it is done; then the page again, with the charts."""
    if reading.frame is not None:
        st.rerun(scope="app")
    st.progress(reading.done / max(len(reading.series), 1),
                text=f"Reading the headers of {len(reading.series)} series: "
                     + progress_text(reading.done, len(reading.series), time.monotonic() - reading.started))




def opening_series(table) -> int:
    """Row of ``table`` the viewer opens on: a positive series of the finest modality."""
    positive = table["Aneurysm Present"].to_numpy() == 1
    for modality in THIN_SLICES_FIRST:
        rows = np.flatnonzero(positive & (table["Modality"].to_numpy() == modality))
        if len(rows):
            return int(rows[0])
    return 0


def on_new_series(shown: dict, uid: str) -> None:
    """A series just chosen opens on its first aneurysm (else its middle), in every plane."""
    if st.session_state.get("explore_opened") == uid:
        return
    st.session_state["explore_opened"] = uid
    points = shown["localizers"]
    middle = [(n - 1) / 2 for n in shown["array"].shape]
    viewer.jump("explore", points[0]["voxel"] if points else middle, shown["array"].shape)


def jump_to_aneurysm() -> None:
    """The jump control's callback: move the slices, then clear the control for the next jump."""
    chosen, shown = st.session_state.get("explore_jump"), st.session_state.get("explore_shown")
    if chosen is not None and shown is not None:
        viewer.jump("explore", shown["localizers"][chosen]["voxel"], shown["array"].shape)
    st.session_state["explore_jump"] = None


@st.fragment
def series_viewer(root, table) -> None:
    options = table.to_dict("records")
    choice = st.selectbox("Series", options, index=opening_series(table), format_func=series_label,
                          key="explore_series")
    uid = str(choice["SeriesInstanceUID"])
    with st.spinner("Reading and reorienting the series..."):
        try:
            shown = display_volume(str(root), uid, default_spacing())
        except Exception as exc:  # a broken series must not break the page
            st.error(f"This series cannot be shown: {exc}")
            return
    st.session_state["explore_shown"] = shown
    on_new_series(shown, uid)
    array, spacing = shown["array"], shown["spacing"][0]
    controls, picture = st.columns([1, 3])
    with controls:
        plane = st.radio("Plane", list(figures.PLANES), horizontal=True, key="explore_plane")
        axis = figures.PLANES[plane]
        if shown["localizers"]:
            st.selectbox("Jump to an aneurysm", range(len(shown["localizers"])), index=None,
                         format_func=lambda i: f"#{i + 1} {shown['localizers'][i]['location']}",
                         placeholder="Choose an aneurysm", key="explore_jump", on_change=jump_to_aneurysm)
        mip = st.toggle("MIP (maximum intensity)", value=False, key="explore_mip")
        slab = st.slider("Slab (mm)", 4, 60, 24, 2, disabled=not mip, key="explore_slab")
        window = viewer.window_control("explore", shown["modality"] == "CT", shown["percentiles"])
        st.caption(f"Acquired {shown['plane']}, {shown['source_shape'][2]} images of "
                   f"{shown['source_shape'][0]} x {shown['source_shape'][1]}; shown at {spacing:.1f} mm, "
                   "canonical orientation (patient's right on the viewer's left). Slider, arrow keys or "
                   "mouse wheel: the next slice.")
        for warning in shown["warnings"]:
            st.caption(f"⚠ {warning}")
    half = int(round(slab / 2 / spacing))
    panel = viewer.Panel(f"{plane} MIP {slab} mm", half) if mip else viewer.Panel(f"{plane} slice")
    points = [{"voxel": p["voxel"], "text": p["location"]} for p in shown["localizers"]]
    with picture:
        viewer.slice_stack("explore", uid, array, axis, window, [panel], points, NEAR_MM / spacing)
    if shown["localizers"]:
        picture.caption(f"Circles: the aneurysm localizers of this series (train_localizers.csv), on the slices "
                        f"within {NEAR_MM:g} mm of them.")


def folder_check(folder: Path) -> None:
    """The report of `python -m pipeline validate` on the data folder."""
    findings = data_folder_check(folder)
    errors = sum(f.severity == ERROR for f in findings)
    if not findings:
        st.caption(f"Data folder check: nothing wrong found in the tables and series folders "
                   f"(`python -m pipeline validate {folder}`).")
        return
    with st.expander(f"Data folder check: {errors} error(s), {len(findings) - errors} warning(s)",
                     expanded=bool(errors), icon=":material/error:" if errors else ":material/warning:"):
        for finding in findings[:REPORT_ROWS]:  # lines, not a table: the sentences wrap at any width
            where = finding.file + ("" if finding.row is None else f", row {finding.row}")
            colour = "red" if finding.severity == ERROR else "orange"
            st.markdown(f":{colour}[**{finding.severity}**] · `{where}` · {plain(finding.message)}")
        if len(findings) > REPORT_ROWS:
            st.caption(f"The first {REPORT_ROWS} of {len(findings)} findings.")
        st.caption(f"Errors stop a build; warnings say what a build leaves out. The same report: "
                   f"`python -m pipeline validate {folder}`.")


def page() -> None:
    root = page_start("Dataset exploration")
    folder = st.session_state.get(FOLDER)
    if folder is not None:
        folder_check(folder)
    if root is None:
        return
    table = train_table(root)
    tab_overview, tab_geometry, tab_viewer = st.tabs(["Overview", "Acquisition geometry", "Series viewer"])
    with tab_overview:
        overview(table)
    with tab_geometry:
        geometry(root, table)
    with tab_viewer:
        series_viewer(root, table)


page()
