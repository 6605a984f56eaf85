"""Training progress: start a run, watch it live (it survives the page), stop it, compare and evaluate."""

from __future__ import annotations

import time

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import runs as run_control
from dashboard.data import page_start
from dashboard.figures import ACCENT, MUTED, style
from pipeline.data import datasets_root, runs_root
from pipeline.dataset import DATASET_FILES
from pipeline.evaluate import read_evaluation
from pipeline.labels import LOCATIONS
from pipeline.train import TrainConfig, read_metrics


def start_form() -> None:
    available = [m for m, name in DATASET_FILES.items() if (datasets_root() / name).is_file()]
    if not available:
        st.info("No dataset yet: build one on the Dataset building page first.")
        return
    with st.form("train_start"):
        left, middle, right = st.columns(3)
        modalities = left.multiselect("Datasets", available, default=available, key="train_modalities")
        epochs = middle.number_input("Epochs", 1, 500, TrainConfig.__dataclass_fields__["epochs"].default, key="train_epochs")
        width = right.selectbox("Model width", [16, 24, 32], key="train_width")
        blocks = right.selectbox("Blocks per stage", [1, 2], key="train_blocks")
        light = right.checkbox("Without the first stage", key="train_light",
                               help="Half the multiply-adds per cube: about 1.7x faster training steps on 2 CPU cores.")
        name = middle.text_input("Run name", time.strftime("run-%Y%m%d-%H%M%S"), key="train_name")
        submitted = st.form_submit_button("Start training", type="primary")
    if submitted:
        safe = "".join(c for c in name if c.isalnum() or c in "-_") or time.strftime("run-%Y%m%d-%H%M%S")
        run = runs_root() / safe
        if (run / "config.json").exists():
            st.error(f"A run named {safe} already exists.")
            return
        run_control.start(run, ["--datasets", str(datasets_root()), "--modalities", ",".join(modalities),
                                "--epochs", str(int(epochs)), "--width", str(width), "--blocks", str(blocks),
                                *(["--no-first-stage"] if light else [])])
        st.session_state["train_run"] = safe
        st.success(f"Started {safe}; it goes on if you close this page.")


def curves(records: list[dict]) -> None:
    steps = pd.DataFrame([r for r in records if r["kind"] == "step"])
    epochs = pd.DataFrame([r for r in records if r["kind"] == "epoch"])
    left, right = st.columns(2)
    if len(steps):
        figure = px.line(steps, x="step", y="loss", title="Training loss", color_discrete_sequence=[MUTED])
        left.plotly_chart(style(figure), width="stretch")
    names = {"validation_auc": "Cube AUC", "series_score": "Held-out series score"}
    measured = [c for c in names if c in epochs and epochs[c].notna().any()]
    if len(epochs) and measured:
        long = epochs.melt(id_vars="epoch", value_vars=measured, var_name="measure", value_name="value").dropna()
        long["measure"] = long["measure"].map(names)
        figure = px.line(long, x="epoch", y="value", color="measure", markers=True, title="Validation",
                         color_discrete_sequence=[MUTED, ACCENT], range_y=[0, 1], labels={"value": "", "measure": ""})
        right.plotly_chart(style(figure), width="stretch")


def best_validation(epochs: list[dict]) -> tuple[str, float | None]:
    """The best held-out series score of a run's epochs, or its best cube AUC before any."""
    series = [r["series_score"] for r in epochs if r.get("series_score") is not None]
    if series:
        return "Best held-out series score", max(series)
    return "Best cube AUC", max((r["validation_auc"] for r in epochs if r["validation_auc"] is not None), default=None)


def follow(run) -> None:
    state = run_control.status(run)
    records = read_metrics(run)
    epochs = [r for r in records if r["kind"] == "epoch"]
    columns = st.columns(4)
    columns[0].metric("State", state.get("state", "?"))
    columns[1].metric("Epoch", f"{state.get('epoch', 0)} / {state.get('epochs', '?')}")
    label, best = best_validation(epochs)
    columns[2].metric(label, "–" if best is None else f"{best:.3f}",
                      help="The held-out series scored whole with the RSNA metric (the last epochs of a run; "
                           "best.pt is the best of them), else the cube-level AUC of the held-out cubes.")
    rate = next((r["cubes_per_second"] for r in reversed(records) if "cubes_per_second" in r), None)
    columns[3].metric("Cubes / s", "–" if rate is None else f"{rate:.0f}",
                      help="Training throughput in 48-voxel cube equivalents: the voxels of the training crops "
                           "seen per second, divided by 48³.")
    if state.get("epochs"):
        st.progress(min(1.0, state.get("epoch", 0) / state["epochs"]))
    curves(records)
    if state.get("state") == "running":
        if st.button("Stop this run", key=f"stop_{run.name}"):
            run_control.stop(run)
            st.info("Stopping after the current step...")
    if state.get("state") == "interrupted":
        st.warning("This run's process ended without finishing (killed?).")
        if st.button("Resume from the last checkpoint", key=f"resume_{run.name}"):
            run_control.start(run, ["--resume"])
            st.rerun()


def _score(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def evaluation(run, data_root) -> None:
    result = read_evaluation(run)
    if result is None:
        if run_control.status(run).get("state") in ("finished", "stopped") and st.button("Evaluate on held-out series"):
            with st.spinner("Scoring every held-out series..."):
                code, line = run_control.evaluate(run, data_root)
            (st.success if code == 0 else st.error)(line)
            st.rerun()
        return
    held_out, test_set = st.columns(2)
    held_out.metric("Series-level final score (held-out)", _score(result["final_score"]),
                    help="½ · (AUC of Aneurysm Present + mean of the location AUCs); locations with one class are "
                         "undefined.")
    test = read_evaluation(run, test_set=True)
    if test is not None:
        test_set.metric(f"Independent test set ({test['series']} series)", _score(test["final_score"]),
                        help="Every series of a dataset the run never trained on nor chose its epoch with "
                             "(python -m pipeline evaluate --run RUN --test-set DIR).")
    aucs = pd.DataFrame({"Location": list(LOCATIONS), "AUC": [result["aucs"][n] for n in LOCATIONS]})
    figure = px.bar(aucs.dropna(), x="AUC", y="Location", orientation="h", range_x=[0, 1], title="AUC per location",
                    color_discrete_sequence=[ACCENT])
    left, right = st.columns(2)
    left.plotly_chart(style(figure, 420), width="stretch")
    roc = pd.DataFrame(result["roc"])
    figure = px.line(roc, x="fpr", y="tpr", title="ROC, Aneurysm Present", range_x=[0, 1], range_y=[0, 1],
                     labels={"fpr": "False-positive rate", "tpr": "True-positive rate"},
                     color_discrete_sequence=[ACCENT])
    right.plotly_chart(style(figure, 420), width="stretch")
    undefined = [n for n in LOCATIONS if result["aucs"][n] is None]
    if undefined:
        st.caption(f"Undefined (one class in the held-out series): {', '.join(undefined)}.")


def comparison(all_runs) -> None:
    rows = []
    for run in all_runs:
        epochs = [r for r in read_metrics(run) if r["kind"] == "epoch"]
        final = (read_evaluation(run) or {}).get("final_score")
        rows.append({"Run": run.name, "State": run_control.status(run).get("state"), "Epochs": len(epochs),
                     "Best validation": best_validation(epochs)[1],
                     "Final score": final})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def page() -> None:
    data_root = page_start("Training")
    with st.expander("Start a run", expanded=not run_control.list_runs(runs_root())):
        start_form()
    all_runs = run_control.list_runs(runs_root())
    if not all_runs:
        st.info("No training run yet.")
        return
    names = [r.name for r in all_runs]
    chosen = st.selectbox("Run", names, index=names.index(st.session_state.get("train_run", names[0]))
                          if st.session_state.get("train_run") in names else 0, key="train_selected")
    run = runs_root() / chosen
    live = run_control.status(run).get("state") in ("running", "starting")
    st.fragment(follow, run_every=2 if live else None)(run)
    if data_root is not None:
        evaluation(run, data_root)
    st.subheader("All runs")
    comparison(all_runs)


page()
