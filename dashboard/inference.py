"""Inference from the dashboard: which models exist, a cached `Predictor`, uploads turned into
in-memory sources within caps, predictions kept per session, and a demo series' ground truth."""

from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import runs as run_control
from pipeline.data import PROJECT_ROOT, runs_root
from pipeline.dicom import SeriesInfo, scan
from pipeline.errors import IngestError
from pipeline.evaluate import read_evaluation
from pipeline.inference import SHIPPED_MODEL, Prediction, Predictor, read_source
from pipeline.labels import LABEL_COLUMNS
from pipeline.rsna import read_localizers

MODEL_ENV = "ANEURYSM_MODEL"  # a checkpoint used instead of the shipped model (tests, experiments)
MAX_UPLOAD_FILES = 5000  # a CTA series is a few hundred files; the largest RSNA ones about 1,000
MAX_UPLOAD_BYTES = 1 << 30  # as uploaded (a zip counts compressed; read_source caps what it unpacks)
KEPT_RESULTS = 3  # predictions kept per session (each holds a processed volume and its heatmap)
FINISHED = ("finished", "stopped")  # run states whose best.pt no longer changes


@dataclass(frozen=True)
class Model:
    path: Path
    label: str


def default_model() -> Path:
    """The shipped model, or the checkpoint named by ``ANEURYSM_MODEL``."""
    return Path(os.environ.get(MODEL_ENV) or SHIPPED_MODEL)


def available_models() -> list[Model]:
    """The default model if it exists, then the best.pt of every finished run, newest first."""
    models = []
    default = default_model()
    if default.is_file():
        origin = f"Model named by {MODEL_ENV}" if os.environ.get(MODEL_ENV) else "Shipped model"
        models.append(Model(default, f"{origin} ({_shown_path(default)})"))
    for run in run_control.list_runs(runs_root()):
        best = run / "best.pt"
        if best.is_file() and best != default and run_control.status(run).get("state") in FINISHED:
            models.append(Model(best, f"Run {run.name} (best.pt)"))
    return models


def model_sidebar() -> None:
    """The model in use, in the sidebar of every page: the one chosen on the inference page,
    else the default one."""
    chosen = st.session_state.get("infer_model")
    models = available_models() if chosen is None else [chosen]
    with st.sidebar:
        st.subheader("Model")
        if models:
            st.text(models[0].label)
        else:
            st.caption("No trained model yet: train one on the Training page.")


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_predictor(path: str, modified: float) -> Predictor:
    return Predictor(path)


def predictor(path: Path) -> Predictor:
    """The model at ``path``, loaded once per server (reloaded when the file changes)."""
    return _load_predictor(str(path), path.stat().st_mtime)


def model_key(path: Path) -> str:
    return f"{path}@{path.stat().st_mtime}"


def describe_model(model: Model, loaded: Predictor) -> str:
    """One line: what the checkpoint is, and its held-out score when the run was evaluated."""
    meta = loaded.meta
    parts = [model.label, f"width {meta['model']['width']}, {meta['model']['blocks']} block(s) per stage"]
    if meta.get("epoch") is not None:
        parts.append(f"epoch {meta['epoch']}")
    if meta.get("validation_auc") is not None:
        parts.append(f"cube validation AUC {meta['validation_auc']:.3f}")
    for test_set, what in ((False, "held-out series score"), (True, "independent test-set score")):
        score = (read_evaluation(model.path.parent, test_set) or {}).get("final_score")
        if score is not None:
            parts.append(f"{what} {score:.3f}")
    return " · ".join(parts)


# --------------------------------------------------------------------------------------
# Uploads


def check_upload(sizes: list[int]) -> None:
    """Refuse an upload over the caps, from the sizes alone (before any byte is read)."""
    if len(sizes) > MAX_UPLOAD_FILES:
        raise IngestError(f"{len(sizes)} files were uploaded, more than the limit of {MAX_UPLOAD_FILES}.")
    if sum(sizes) > MAX_UPLOAD_BYTES:
        raise IngestError(f"The upload holds {sum(sizes) / 2**20:,.0f} MB, more than the limit of "
                          f"{MAX_UPLOAD_BYTES >> 20:,} MB.")


def files_to_sources(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Uploaded (name, bytes) as the reader's in-memory source: zips (recognised by content)
    unpacked in memory within `read_source`'s caps, other files passed on as they are."""
    sources = []
    for name, data in files:
        if zipfile.is_zipfile(io.BytesIO(data)):
            sources.extend((f"{name}/{member}", content) for member, content in read_source(data))
        else:
            sources.append((name, data))
    if len(sources) > MAX_UPLOAD_FILES:
        raise IngestError(f"The upload unpacks to {len(sources)} files, more than the limit of {MAX_UPLOAD_FILES}.")
    return sources


def series_in(sources: list[tuple[str, bytes]]) -> list[SeriesInfo]:
    """The series of an upload (headers only), largest first; an error if it holds none."""
    found = scan(sources)
    if not found.series:
        if not sources:
            raise IngestError("No files were given.")
        if len(found.skipped) == 1:
            raise IngestError(found.skipped[0])
        first = found.skipped[0].rstrip(".") if found.skipped else sources[0][0]
        raise IngestError(f"None of the {len(sources)} uploaded files holds a DICOM image (first: {first}).")
    return found.series


# --------------------------------------------------------------------------------------
# Predictions kept in the session: sliders and reruns never rerun the network


def remember(key: tuple, prediction: Prediction, truth: dict | None, model: Model) -> dict:
    """Keep a prediction (with its heatmap on the volume) as the one shown; returns it."""
    results: dict = st.session_state.setdefault("infer_results", {})
    results.pop(key, None)
    results[key] = {"prediction": prediction, "heat": prediction.heatmap_on_volume().astype(np.float16),
                    "truth": truth, "model": model.label}
    while len(results) > KEPT_RESULTS:
        results.pop(next(iter(results)))
    st.session_state["infer_shown"] = key
    return results[key]


def recalled(key: tuple) -> dict | None:
    return st.session_state.get("infer_results", {}).get(key)


def shown() -> dict | None:
    """The result on display, if any."""
    return recalled(st.session_state.get("infer_shown"))


# --------------------------------------------------------------------------------------
# Ground truth of a series of the data folder


@st.cache_data(show_spinner=False)
def _localizers(root: str, modified: float) -> dict:
    return read_localizers(Path(root))[0]


def ground_truth(root: Path, row: dict, prediction: Prediction) -> dict:
    """The train.csv labels of a series and its localizers mapped to the processed volume."""
    path = root / "train_localizers.csv"
    found = _localizers(str(root), path.stat().st_mtime) if path.is_file() else {}
    points = []
    for localizer in found.get(str(row["SeriesInstanceUID"]), []):
        try:
            voxel = prediction.volume.source_to_voxel(localizer.sop_uid, localizer.x, localizer.y, localizer.frame)
        except IngestError:
            continue  # an image left out by the reader: the label still counts
        points.append({"location": localizer.location, "voxel": [float(v) for v in voxel]})
    return {"labels": {name: int(row[name]) for name in LABEL_COLUMNS}, "points": points}


# --------------------------------------------------------------------------------------

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$])")
_AUTOLINK = re.compile(r"(?i)(?<=www)(?=\\\.)|(?<=[a-z])(?=\\:/)|(?<=@)")  # where GFM would start a link
_JOINER = "\u2060"  # invisible, but breaks the pattern


def plain(text: str) -> str:
    """Text from files (names, headers) made inert for the markdown of st.error and friends:
    markdown characters escaped, and URLs and e-mail addresses kept from becoming links."""
    return _AUTOLINK.sub(_JOINER, _MARKDOWN.sub(r"\\\1", str(text)))
