"""Dataset building: cut the training cubes, watch the progress, see the balance and samples."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from dashboard.build import load_manifest, run_build, sample_cubes
from dashboard.text import dask_link, duration, progress_text
from dashboard.data import page_start
from dashboard import figures
from pipeline.data import datasets_root
from pipeline.dataset.build import balance_table
from pipeline.dataset.config import BuildConfig
from pipeline.dataset.store import DATASET_FILES, MANIFEST_NAME
from pipeline.labels import MODALITIES
from pipeline.preprocess.config import PreprocessConfig

DOWNLOAD_LIMIT = 2 << 30  # larger files: the path is shown instead of a download button (read when clicked)


def parameters() -> tuple[BuildConfig, str | None] | None:
    """The form's build configuration and where to run it (None: this machine), once submitted."""
    default = BuildConfig()
    with st.form("build_parameters"):
        modalities = st.pills("Modalities", list(MODALITIES), selection_mode="multi", default=list(MODALITIES),
                              key="build_modalities")  # whole names at any width ("MRI T1post" was cut)
        left, middle, right = st.columns(3)
        cube = left.number_input("Cube side (voxels)", 16, 96, default.cube, 8)
        spacing = left.number_input("Target spacing (mm)", 0.4, 2.0, default.preprocess.target_spacing[0], 0.1,
                                    format="%.1f")
        negatives = middle.number_input("Negative cubes per series", 0, 200, default.negatives, key="build_negatives")
        hard = middle.slider("Share of hard negatives (on vessels)", 0.0, 1.0, default.hard_share, 0.05)
        distance = right.number_input("Least distance of a negative to an aneurysm (mm)", 5.0, 80.0, default.min_distance_mm, 1.0)
        jitter = right.number_input("Jittered copies per positive", 0, 10, default.jitter)
        where = st.radio("Run on", ["This machine", "A Dask cluster"], horizontal=True, key="build_where")
        scheduler = st.text_input(
            "Dask scheduler", placeholder="tcp://host:8786, or local:2 for a cluster of 2 processes here",
            key="build_scheduler", help="The address of a running Dask scheduler (its workers must see the data "
                                        "folder at the same path: a shared file system), or local:N.")
        submitted = st.form_submit_button("Build the datasets", type="primary")
    if not submitted:
        return None
    if not modalities:
        st.error("Choose at least one modality.")
        return None
    if where == "A Dask cluster" and not scheduler.strip():
        st.error("Give the Dask scheduler's address (tcp://host:8786), or local:N.")
        return None
    config = BuildConfig(cube=int(cube), negatives=int(negatives), hard_share=float(hard),
                         min_distance_mm=float(distance), jitter=int(jitter), modalities=tuple(modalities),
                         preprocess=PreprocessConfig(target_spacing=(float(spacing),) * 3))
    return config, scheduler.strip() if where == "A Dask cluster" else None


def build(root, out, config: BuildConfig, scheduler: str | None) -> None:
    rows: list[dict] = []
    start = time.monotonic()
    with st.status("Building the datasets...", expanded=True) as status:
        bar = st.progress(0.0, text="Starting the builder...")
        table = st.empty()

        def on_series(line: dict) -> None:
            rows.append({"Series": "…" + line["series_uid"][-12:], "Modality": line["modality"],
                         "Status": line["status"], "Cubes": line["cubes"], "Reason": line["reason"]})
            bar.progress(line["done"] / line["total"],
                         text=progress_text(line["done"], line["total"], time.monotonic() - start))
            table.dataframe(pd.DataFrame(rows[-8:]), hide_index=True, width="stretch")

        code, error = run_build(root, out, config, on_series, scheduler,
                                on_where=lambda text: st.markdown(f"Running on {dask_link(text)}"))
        if code != 0:
            status.update(label="The build failed", state="error")
            st.error(error or "The builder stopped with an error.")
            return
        status.update(label=f"Built from {len(rows)} series in {duration(time.monotonic() - start)}",
                      state="complete", expanded=False)


def results(out) -> None:
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.is_file():
        st.info("No dataset has been built into this folder yet.")
        return
    manifest = load_manifest(str(out), manifest_path.stat().st_mtime)
    st.subheader("Balance")
    table = balance_table(manifest)
    st.dataframe(table.style.format({"Positive share": "{:.1%}"}), hide_index=True, width="stretch")
    st.plotly_chart(figures.cubes_per_modality(table), width="stretch")

    skipped = {uid: o for uid, o in manifest["series"].items() if o["status"] != "ok"}
    st.caption(f"{len(manifest['series']) - len(skipped)} series built, {len(skipped)} skipped, "
               f"in {manifest['seconds']:.1f} s (cube {manifest['config']['cube']}, "
               f"{manifest['config']['negatives']} negatives per series).")
    if skipped:
        st.dataframe(pd.DataFrame([{"Series": uid, "Modality": o["modality"], "Reason": o["reason"]}
                                   for uid, o in skipped.items()]), hide_index=True, width="stretch")
    for problem in manifest["problems"]:
        st.caption(f"⚠ {problem}")

    downloads(out, manifest)
    st.subheader("Sample cubes")
    st.caption("Axial maximum-intensity projections through the middle 12 voxels of each cube. Hard negatives sit "
               "on vessels (in CTA: contrast values with no bone beside them), negatives anywhere in the head. "
               "T2 series have 4-6 mm slices: across them the cube is interpolated, and edges show steps.")
    for modality, counts in manifest["datasets"].items():
        path = out / DATASET_FILES[modality]
        if not path.is_file() or counts["total"] == 0:
            continue
        st.markdown(f"**{modality}**")
        try:
            sample = sample_cubes(str(path), path.stat().st_mtime)
        except ValueError as exc:
            st.warning(str(exc))
            continue
        columns = st.columns(12)
        index = 0
        for kind, images in sample.items():
            for image in images:
                columns[index % 12].image(image.clip(0, 1), caption=kind, width="stretch", clamp=True)
                index += 1


def downloads(out, manifest: dict) -> None:
    """One download per dataset file, read only when clicked; a file too large for the browser
    is named with its path."""
    files = [out / DATASET_FILES[m] for m, counts in manifest["datasets"].items()
             if counts["total"] and (out / DATASET_FILES[m]).is_file()]
    if not files:
        return
    st.markdown("**Download the datasets**")
    row = st.container(horizontal=True, wrap=True)
    for path in files:
        size = path.stat().st_size
        if size <= DOWNLOAD_LIMIT:
            row.download_button(f"{path.name} ({size / 1e6:.0f} MB)", path.read_bytes, file_name=path.name,
                                mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                                key=f"download_{path.stem}")
        else:
            st.caption(f"{path.name}: {size / 1e9:.1f} GB, too large for the browser: it is at {path}")


def page() -> None:
    root = page_start("Dataset building")
    if root is None:
        return
    out = datasets_root()
    st.caption(f"Reads {root}, writes one .npz per modality into {out}.")
    chosen = parameters()
    if chosen is not None:
        build(root, out, *chosen)
    results(out)


page()
