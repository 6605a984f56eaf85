"""Training progress: start a run, watch it live (it survives the page), stop it, compare and evaluate."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard import runs as run_control
from dashboard.data import page_start
from pipeline.data import datasets_root, runs_root
from pipeline.labels import LOCATIONS
from pipeline.runs import INTERRUPTED, RUNNING, RunFolder, list_runs
from pipeline.training.config import TrainConfig


def start_form() -> None:
    available = run_control.available_datasets(datasets_root())
    if not available:
        st.info("No dataset yet: build one on the Dataset building page first.")
        return
    with st.container(border=True):  # not a form: the time estimate follows every change
        left, middle, right = st.columns(3)
        modalities = left.multiselect("Datasets", available, default=available, key="train_modalities")
        epochs = middle.number_input("Epochs", 1, 500, TrainConfig().epochs, key="train_epochs")
        steps = middle.number_input("Steps per epoch", 1, 10_000, TrainConfig().steps_per_epoch, key="train_steps",
                                    help=f"Each step trains on {TrainConfig().batch_size} crops.")
        width = right.selectbox("Model width", [16, 24, 32], key="train_width")
        blocks = right.selectbox("Blocks per stage", [1, 2], key="train_blocks")
        light = right.checkbox("Without the first stage", key="train_light",
                               help="Half the multiply-adds per cube: about 1.7x faster training steps on 2 CPU cores.")
        vessels = right.checkbox("Vessel-aware (vessel head)", value=TrainConfig().model.vessel_head,
                                 key="train_vessels",
                                 help="A vessel segmentation head trained on the series with vessel label maps "
                                      "(segmentations/; every demo series has one); the README says what it "
                                      "changed on held-out series and the external family.")
        st.session_state.setdefault("train_name", time.strftime("run-%Y%m%d-%H%M%S"))
        name = left.text_input("Run name", key="train_name")
        st.caption("Time: " + run_control.time_estimate(
            run_control.training_config(datasets_root(), available, int(epochs), width, blocks, not light, vessels,
                                        int(steps)), run_control.measured_speed(list_runs(runs_root()))))
        submitted = st.button("Start training", type="primary", key="train_start")
    if not submitted:
        return
    if not modalities:
        st.error("Choose at least one dataset.")
        return
    run = RunFolder(runs_root() / run_control.run_name(name))
    if run.path.exists():
        st.error(f"A run named {run.name} already exists.")
        return
    config = run_control.training_config(datasets_root(), modalities, int(epochs), width, blocks, not light, vessels,
                                         int(steps))
    run_control.start(run, config)
    st.session_state["train_run"] = run.name
    st.success(f"Started {run.name}; it goes on if you close this page.")


def curves(records: list[dict]) -> None:
    left, right = st.columns(2)
    for column, figure in ((left, figures.training_loss(records)), (right, figures.validation(records))):
        if figure is not None:
            column.plotly_chart(figure, width="stretch")


def follow(run: RunFolder) -> None:
    state = run.read_status()
    seen = st.session_state.setdefault("train_seen_state", {})
    if seen.get(run.name) in run_control.LIVE and state.get("state") not in run_control.LIVE:
        seen[run.name] = state.get("state")
        st.rerun(scope="app")  # it ended: the run table and the Evaluate button are outside this fragment
    seen[run.name] = state.get("state")
    records = run.read_metrics()
    columns = st.columns(4)
    columns[0].metric("State", state.get("state", "?"))
    columns[1].metric("Epoch", f"{state.get('epoch', 0)} / {state.get('epochs', '?')}")
    label, best = run_control.best_validation([r for r in records if r["kind"] == "epoch"])
    columns[2].metric(label, "–" if best is None else f"{best:.3f}",
                      help="The held-out series scored whole with the RSNA metric (the last epochs of a run; "
                           "best.pt is the best of them), else the cube-level AUC of the held-out cubes.")
    rate = run_control.latest_rate(records)
    columns[3].metric("Cubes / s", "–" if rate is None else f"{rate:.0f}",
                      help="Training throughput in 48-voxel cube equivalents: the voxels of the training crops "
                           "seen per second, divided by 48³.")
    if state.get("epochs"):
        st.progress(min(1.0, state.get("epoch", 0) / state["epochs"]))
    if state.get("device"):
        st.caption(f"Trained by {run_control.where_trained(state)}.")
    curves(records)
    if state.get("state") == RUNNING:
        if st.button("Stop this run", key=f"stop_{run.name}"):
            run.request_stop()
            st.info("Stopping: a training step takes under a second on 2 CPU cores; while the held-out series "
                    "are scored (the last epochs), the series in progress finishes first, a few seconds. The "
                    "unfinished epoch is dropped; last.pt keeps the last finished one.")
    if state.get("state") == INTERRUPTED:
        st.warning("This run's process ended without finishing (killed?).")
        if st.button("Resume from the last checkpoint", key=f"resume_{run.name}"):
            run_control.resume(run)
            st.rerun()


def _score(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def family_scores(run: RunFolder) -> None:
    """The run's scores on every family it was scored on: in-family fit is not transfer."""
    st.subheader("Scores by family")
    table, measured_transfer = run_control.family_table(run)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={name: st.column_config.NumberColumn(format="%.3f") for name in run_control.SCORE_COLUMNS})
    if not measured_transfer:
        st.caption("Only in-family figures so far: they measure fit to the demo generator, not transfer. "
                   "Score the run on the external family and the controlled shifts with "
                   f"`python -m pipeline evaluate --run {run.path} --families`.")
    with st.expander("Per modality"):
        st.dataframe(run_control.modality_table(run), hide_index=True, width="stretch",
                     column_config={name: st.column_config.NumberColumn(format="%.3f")
                                    for name in run_control.SCORE_COLUMNS})


def evaluation(run: RunFolder, data_root) -> None:
    result = run.read_evaluation()
    if result is None:
        if run_control.can_evaluate(run) and st.button("Evaluate on held-out series"):
            with st.spinner("Scoring every held-out series..."):
                code, line = run_control.evaluate(run, data_root)
            (st.success if code == 0 else st.error)(line)
            st.rerun()
        return
    family_scores(run)
    left, right = st.columns(2)
    left.plotly_chart(figures.location_aucs(result), width="stretch")
    right.plotly_chart(figures.roc(result), width="stretch")
    undefined = [n for n in LOCATIONS if result["aucs"][n] is None]
    if undefined:
        st.caption(f"Undefined (one class in the held-out series): {', '.join(undefined)}.")


def page() -> None:
    data_root = page_start("Training")
    all_runs = list_runs(runs_root())
    with st.expander("Start a run", expanded=not all_runs):
        start_form()
    all_runs = list_runs(runs_root())
    if not all_runs:
        st.info("No training run yet.")
        return
    names = [r.name for r in all_runs]
    wanted = st.session_state.get("train_run")
    chosen = st.selectbox("Run", names, index=names.index(wanted) if wanted in names else 0, key="train_selected")
    run = all_runs[names.index(chosen)]
    live = run.read_status().get("state") in run_control.LIVE
    st.fragment(follow, run_every=2 if live else None)(run)
    if data_root is not None:
        evaluation(run, data_root)
    st.subheader("All runs")
    st.dataframe(pd.DataFrame(run_control.comparison_rows(all_runs)), hide_index=True, width="stretch")


page()
