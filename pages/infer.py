"""Inference: run a model on a demo series or an upload; probabilities, heatmap, candidates, ground truth."""

from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st
from niivue_component import niivue_viewer

from dashboard import figures, viewer
from dashboard import inference as infer
from dashboard.data import page_start, series_label, train_table
from dashboard.text import duration, plain, progress_text
from pipeline.data import is_demo
from pipeline.errors import IngestError
from pipeline.inference.predictor import Predictor
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS, MODALITIES

NEAR_MM = 4.0  # a point is marked on slices within this distance
WINDOW = (0.0, 1.0)  # the processed volume is normalised to [0, 1] for every modality


# --------------------------------------------------------------------------------------
# Model


def choose_model() -> infer.Model | None:
    models = infer.available_models()
    if not models:
        if os.environ.get(infer.MODEL_ENV):
            st.text(f"{infer.MODEL_ENV} names {infer.default_model()}, which does not exist.")
        st.warning(
            "No trained model is available yet, so nothing can be scored. Train one on the Training page "
            "(after building the cube datasets on the Dataset building page): the best.pt of every finished "
            f"run is offered here. A checkpoint can also be placed at models/demo/best.pt or named with "
            f"{infer.MODEL_ENV}.",
            icon=":material/model_training:",
        )
        st.page_link("pages/train.py", label="Go to the Training page", icon=":material/monitoring:")
        return None
    if len(models) == 1:
        return models[0]
    return st.selectbox("Model", models, format_func=lambda m: m.label, key="infer_model")


def load_model(model: infer.Model) -> Predictor | None:
    try:
        with st.spinner("Loading the model..."):
            loaded = infer.predictor(model.path)
    except Exception as exc:  # a corrupt or incompatible checkpoint must not break the page
        st.error(plain(f"The model {model.path} cannot be loaded: {exc}"))
        return None
    line = infer.describe_model(model, loaded)
    st.caption("Model in use")
    st.text(line)
    return loaded


# --------------------------------------------------------------------------------------
# Input


def demo_input(root: Path, loaded: Predictor, model: infer.Model) -> None:
    table = train_table(root)
    options = table.to_dict("records")
    roles = infer.series_roles(model)

    def label(row: dict) -> str:
        return series_label(row, roles.get(str(row["SeriesInstanceUID"]), infer.UNSEEN) if roles else None)

    row = st.selectbox("Series", options, index=infer.default_series(options, roles), format_func=label,
                       key="infer_demo_series")
    if roles.get(str(row["SeriesInstanceUID"])) == infer.TRAINING:
        st.caption("The model trained on this series: its score says how well it fits its training data, "
                   "not how it does on series it never saw (choose a held-out one).")
    if st.button("Run the model on this series", type="primary", key="infer_run_demo"):
        uid = str(row["SeriesInstanceUID"])
        run(("data", uid, infer.model_key(model.path)), model, loaded, root / "series" / uid, None, (root, row))


def upload_input(loaded: Predictor, model: infer.Model, root: Path | None) -> None:
    folder = st.radio("Upload", ["Files or a .zip", "A folder"], horizontal=True, key="infer_upload_mode",
                      label_visibility="collapsed") == "A folder"
    generation = st.session_state.get("infer_uploader", 0)  # a new uploader after a refusal
    cap = infer.MAX_UPLOAD_BYTES >> 20  # the browser refuses a single file above it before sending it
    files = st.file_uploader("The DICOM files of a series, a .zip of them, or a NIfTI image (.nii, .nii.gz)",
                             accept_multiple_files=True,
                             key=f"infer_upload_files_{generation}", max_upload_size=cap) if not folder else \
        st.file_uploader("A folder of DICOM files", accept_multiple_files="directory",
                         key=f"infer_upload_folder_{generation}", max_upload_size=cap)
    st.caption(f"At most {infer.MAX_UPLOAD_FILES:,} files and {infer.MAX_UPLOAD_BYTES >> 20:,} MB in all "
               "(files beyond are refused as they arrive, marked in red); files are read in memory and never stored.")
    if refused := st.session_state.pop("infer_upload_refused", None):
        st.error(refused, icon=":material/error:")
    if not files:
        st.session_state.pop("infer_upload", None)  # let the bytes of a removed upload go
        return
    try:
        sources, series, nifti = infer.upload_contents(files)
    except IngestError as exc:
        infer.release_upload(files)
        st.session_state["infer_upload_refused"] = f"{plain(exc)} The upload was let go: choose other files."
        st.rerun()
    fingerprint = tuple((f.name, f.size) for f in files)
    if nifti:  # its header does not say what it is
        st.text(nifti)
        modality = st.selectbox("Modality of this NIfTI image (its header does not say)", MODALITIES,
                                index=MODALITIES.index("MRA"), key="infer_upload_modality")
        if st.button("Run the model on this series", type="primary", key="infer_run_upload"):
            run(("upload", sources[0][0], infer.model_key(model.path), fingerprint, modality), model, loaded, sources,
                None, None, modality)
        return
    if len(series) > 1:
        chosen = st.selectbox(f"This upload holds {len(series)} series: choose one", series,
                              format_func=lambda s: s.describe(), key="infer_upload_series")
    else:
        chosen = series[0]
        st.text(chosen.describe())
    known = _data_row(root, chosen.series_uid)  # a series of the data folder: its ground truth is known
    if known is not None:
        role = infer.series_roles(model).get(chosen.series_uid, infer.UNSEEN)
        st.caption(f"This series is in the data folder ({role}): its ground truth will be shown.")
    if st.button("Run the model on this series", type="primary", key="infer_run_upload"):
        run(("upload", chosen.series_uid, infer.model_key(model.path), fingerprint), model, loaded, sources,
            chosen.series_uid, known)


def whole_folder(root: Path, model: infer.Model) -> None:
    """Every series of the data folder into the challenge's submission table (predict-all)."""
    out = infer.submission_table(model, root)
    st.write("Scores every series of the data folder into the challenge's submission table: one row per "
             "series, SeriesInstanceUID and the 14 probabilities in their order. The table is kept: scored again, "
             "it is continued, not started over. A series that cannot be read gets the model's training "
             "prevalence, and its reason below.")
    table, failures = infer.submission_rows(out)
    if st.button("Score the remaining series" if len(table) else "Score every series", key="infer_all",
                 type="primary"):
        start = time.monotonic()
        with st.status("Scoring the data folder...", expanded=True) as status:
            bar = st.progress(0.0, text="Loading the model...")
            code, error, summary = infer.score_folder(root, out, model.path, lambda line: bar.progress(
                line["done"] / line["total"], text=progress_text(line["done"], line["total"], time.monotonic() - start)))
            if code:
                status.update(label="Scoring stopped", state="error")
                st.error(plain(error or "predict-all stopped with an error."))
            else:
                status.update(label=f"{summary['scored']} series scored, {summary['already_done']} already in the "
                                    f"table, {summary['fell_back']} given the fallback, in "
                                    f"{duration(time.monotonic() - start)}", state="complete", expanded=False)
        table, failures = infer.submission_rows(out)
    if len(table):
        st.caption(f"{len(table)} series in {out}")
        st.dataframe(table.head(200), hide_index=True, width="stretch")
        st.download_button("Download the submission table (CSV)", out.read_bytes, file_name=out.name,
                           mime="text/csv", key="infer_all_csv", on_click="ignore")
    if len(failures):
        st.warning(f"{len(failures)} series could not be read and got the fallback:")
        st.dataframe(failures, hide_index=True, width="stretch")


def _data_row(root: Path | None, uid: str) -> tuple[Path, dict] | None:
    """(data folder, train.csv row) of a series listed in the data folder, else None."""
    if root is None:
        return None
    rows = train_table(root)
    rows = rows[rows["SeriesInstanceUID"].astype(str) == uid]
    return (root, rows.iloc[0].to_dict()) if len(rows) else None


# --------------------------------------------------------------------------------------
# Running


def run(key: tuple, model: infer.Model, loaded: Predictor, source, series_uid: str | None,
        data_row: tuple | None, modality: str | None = None) -> None:
    """Score a series (unless this session already did with this model) and show it."""
    if infer.recalled(key) is None:
        with st.status("Reading, preprocessing and scoring the series...", expanded=True) as status:
            result, failure = infer.score(key, model, loaded, source, series_uid, data_row, modality)
            if result is not None:
                status.update(label=f"Scored in {result['prediction'].timings['total']:.1f} s", state="complete",
                              expanded=False)
            else:
                status.update(label=failure[0], state="error", expanded=False)
        if result is None:  # the reason in plain view, not inside the collapsed box
            st.error(plain(failure[1]), icon=":material/error:")
            return
    infer.show(key)


# --------------------------------------------------------------------------------------
# Result


def result_summary(result: dict) -> None:
    prediction = result["prediction"]
    st.subheader("Result")
    st.text(f"Series {prediction.series_uid} · {prediction.modality} · processed volume "
            f"{' x '.join(map(str, prediction.volume.shape))} voxels of {prediction.volume.spacing[0]:.1f} mm\n"
            f"Scored by: {result['model']}")
    columns = st.columns(5)
    columns[0].metric(ANEURYSM_PRESENT, f"{prediction.probabilities[ANEURYSM_PRESENT]:.3f}")
    for column, stage in zip(columns[1:], ("read", "preprocess", "network", "total")):
        column.metric(f"{stage.capitalize()} (s)", f"{prediction.timings[stage]:.2f}")
    if prediction.warnings:
        with st.expander(f"Reader warnings ({len(prediction.warnings)})"):
            for warning in prediction.warnings:
                st.text(warning)


@st.fragment
def verdict(result: dict) -> None:
    prediction, truth = result["prediction"], result["truth"]
    threshold = st.slider("Decision threshold", 0.05, 0.95, 0.5, 0.05, key="infer_threshold")
    present = prediction.probabilities[ANEURYSM_PRESENT]
    flagged = [name for name in LOCATIONS if prediction.probabilities[name] >= threshold]
    if present >= threshold:
        where = f" Locations at or above the threshold: {', '.join(flagged)}." if flagged else ""
        st.warning(f"**Aneurysm suspected**: {present:.2f} ≥ {threshold:.2f}.{where}", icon=":material/warning:")
    else:
        st.success(f"**No aneurysm** above the threshold: {present:.2f} < {threshold:.2f}.",
                   icon=":material/check_circle:")
    st.caption(result.get("meaning", ""))
    if truth is not None:
        positives = [name for name in LOCATIONS if truth["labels"][name] == 1]
        st.info("Ground truth (train.csv): " + (f"aneurysm at {', '.join(positives)}." if positives else
                                                "no aneurysm."), icon=":material/fact_check:")
    chart, numbers = st.columns([5, 4])
    height = 35 * (len(LABEL_COLUMNS) + 1) + 3  # every row without scrolling
    chart.plotly_chart(figures.probabilities(prediction.probabilities, threshold, truth and truth["labels"], height),
                       width="stretch", config={"displayModeBar": False})
    numbers.dataframe(infer.probability_table(prediction, truth), hide_index=True, width="stretch", height=height,
                      column_config={"Probability": st.column_config.NumberColumn(format="%.3f")})


@st.fragment
def slice_viewer(result: dict) -> None:
    prediction, heat = result["prediction"], result["heat"]
    array, spacing = prediction.volume.array, prediction.volume.spacing[0]
    controls, pictures = st.columns([1, 4])
    with controls:
        plane = st.radio("Plane", list(figures.PLANES), horizontal=True, key="infer_plane")
        axis = figures.PLANES[plane]
        slab = st.slider("MIP slab (mm)", 4, 80, 24, 2, key="infer_slab")
        painted = st.toggle("Heatmap", value=True, key="infer_heat")
        if prediction.candidates:
            st.selectbox("Jump to a candidate", range(len(prediction.candidates)), index=None,
                         format_func=lambda i: f"#{i + 1} {prediction.candidates[i]['location']}",
                         placeholder="Choose a candidate", key="infer_jump", on_change=infer.jump_to_candidate)
        st.caption("Colour: the model's window probability (none below 0.1). White squares: candidates (numbered). "
                   "Green circles: ground-truth localizers. Slider, arrow keys or mouse wheel: the next slice.")
    panels = [viewer.Panel(f"{plane} slice"), viewer.Panel(f"{plane} MIP {slab} mm", int(round(slab / 2 / spacing)))]
    with pictures:
        viewer.slice_stack("infer", result["key"], array, axis, WINDOW, panels, infer.viewer_points(result),
                           NEAR_MM / spacing, heat=heat if painted else None, max_height=480)
    st.markdown("**Top candidates**")
    if prediction.candidates:
        st.dataframe(infer.candidate_table(prediction), hide_index=True, width="stretch")
    else:
        st.caption("No window reached the candidate floor (0.05).")


@st.fragment
def view_3d(result: dict) -> None:
    """NiiVue (WebGL2, bundled: works offline) on the processed volume; off until asked for,
    as it sends the volume to the browser."""
    if not st.toggle("Interactive 3D view (NiiVue)", key="infer_3d",
                     help="The processed volume in three planes and a 3D render, sent to your browser"):
        return
    image, overlays = infer.layers_3d(result)
    niivue_viewer(nifti_data=image, filename="volume.nii.gz", overlays=overlays, height=560, view_mode="multiplanar",
                  styled=False, update_interval_ms=None, key="infer_niivue")
    st.caption("Drag the render to turn it; click a plane to move the crosshair, scroll to page through it. "
               "Orange: the window probability from 0.1; green balls: the candidates.")


def downloads(result: dict) -> None:
    st.markdown("**Save the result**")
    files, unavailable = infer.downloads(result)
    row = st.container(horizontal=True, wrap=True)  # whole labels, wrapping on a narrow screen
    for item in files:
        row.download_button(item.label, item.data, file_name=item.file_name, mime=item.mime, help=item.help,
                            on_click="ignore", icon=":material/download:")
    if unavailable:
        st.caption(f"No DICOM SR or SEG: {unavailable}")


def page() -> None:
    root = page_start("Inference")
    st.caption("Research software, not a medical device: its output is no diagnosis.")
    model = choose_model()
    loaded = load_model(model) if model else None
    if loaded is None:
        return
    kind = "Demo series" if root is not None and is_demo(root) else "Series of the data folder"
    tab_data, tab_upload, tab_all = st.tabs([kind, "Upload", "Whole data folder"])
    with tab_data:
        if root is None:
            st.info("No data folder: upload a series instead.")
        else:
            demo_input(root, loaded, model)
    with tab_upload:
        upload_input(loaded, model, root)
    with tab_all:
        if root is None:
            st.info("No data folder to score.")
        else:
            whole_folder(root, model)
    result = infer.shown()
    if result is None:
        return
    st.divider()
    result_summary(result)
    verdict(result)
    slice_viewer(result)
    view_3d(result)
    downloads(result)


page()
