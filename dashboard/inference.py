"""Inference from the dashboard: which models exist, a cached `Predictor`, uploads turned into
in-memory sources within caps, predictions kept per session, and a demo series' ground truth."""

from __future__ import annotations

import ctypes
import gc
import io
import json
import os
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

from pipeline.data import PROJECT_ROOT, predictions_root, runs_root
from pipeline.inference.batch import FAILURE_COLUMNS, SUBMISSION_COLUMNS, failures_path, read_table
from pipeline.io.dicom import SeriesInfo, scan
from pipeline.errors import IngestError
from pipeline.runs import SETTLED, RunFolder, headline, list_runs, score_rows
from pipeline.inference.predictor import Prediction, Predictor, SHIPPED_MODEL
from pipeline.io.archive import read_source
from pipeline.inference import export
from pipeline.io.nifti import is_nifti, load_nifti, nifti_bytes
from dashboard import viewer
from dashboard.child import run_cli
from dashboard.data import THIN_SLICES_FIRST
from dashboard.figures import HEAT_FLOOR, TRUTH
from pipeline.labels import LABEL_COLUMNS
from pipeline.model.calibration import Calibration
from pipeline.io.rsna import read_localizers

MODEL_ENV = "ANEURYSM_MODEL"  # a checkpoint used instead of the shipped model (tests, experiments)
MAX_UPLOAD_FILES = 5000  # a CTA series is a few hundred files; the largest RSNA ones about 1,000
UPLOAD_ENV = "ANEURYSM_MAX_UPLOAD_MB"  # another cap on what one session may upload (default 1024)
MAX_UPLOAD_BYTES = int(os.environ.get(UPLOAD_ENV) or 1024) << 20  # as uploaded (a zip counts compressed;
#                                                                  read_source caps what it unpacks)
KEPT_RESULTS = 3  # predictions kept per session (each holds a processed volume and its heatmap)
CANDIDATE = "#ffffff"  # candidates on the viewer, beside the ground truth's colour


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
    for run in list_runs(runs_root()):
        best = run.best
        if best.is_file() and best != default and run.read_status().get("state") in SETTLED:
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


def submission_table(model: Model, root: Path) -> Path:
    """Where the Inference page keeps ``model``'s submission table of the data folder ``root``
    (continued, not started again, when the folder is scored again)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model.path.parent.name}-{root.name}")
    return predictions_root() / f"{name}.csv"


def score_folder(root: Path, out: Path, model: Path, on_series: Callable[[dict], None]) -> tuple[int, str, dict]:
    """``python -m pipeline predict-all`` of ``root`` into ``out`` in a child process, calling
    ``on_series`` with each series' progress line; returns (exit status, last error line,
    the summary: series, scored, already_done, fell_back, seconds)."""
    summary: dict = {}

    def on_record(record: dict) -> None:
        if "summary" in record:
            summary.update(record["summary"])
        else:
            on_series(record)

    code, error = run_cli(["predict-all", str(root), "--out", str(out), "--model", str(model), "--progress-json"],
                          on_record)
    return code, error, summary


def submission_rows(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The submission table and its side table of series given the fallback (empty frames
    where there are none)."""
    tables = []
    for path, columns in ((out, SUBMISSION_COLUMNS), (failures_path(out), FAILURE_COLUMNS)):
        rows = read_table(path, columns)
        tables.append(pd.DataFrame(list(rows.values()), columns=list(columns)))
    return tables[0], tables[1]


TRAINING, HELD_OUT, UNSEEN = "training series", "held-out series", "not seen by this model"


def series_roles(model: Model) -> dict[str, str]:
    """What the model's run did with each series it knows: trained on it or held it out
    (empty when the checkpoint has no run split beside it)."""
    try:
        split = RunFolder(model.path.parent).read_split()
    except (OSError, ValueError):
        return {}
    return {**{uid: TRAINING for uid in split["train"]}, **{uid: HELD_OUT for uid in split["validation"]}}


def default_series(rows: list[dict], roles: dict[str, str]) -> int:
    """The series a visitor is first offered: a held-out (else unseen) one with an aneurysm,
    of a thin-slice modality where there is one, never one the model trained on while
    another exists."""
    def rank(index: int) -> tuple:
        row = rows[index]
        role = roles.get(str(row["SeriesInstanceUID"]), UNSEEN)
        modality = str(row.get("Modality", ""))
        order = THIN_SLICES_FIRST.index(modality) if modality in THIN_SLICES_FIRST else len(THIN_SLICES_FIRST)
        return (role == TRAINING, role != HELD_OUT, row["Aneurysm Present"] != 1, order, index)

    return min(range(len(rows)), key=rank) if rows else 0


def describe_model(model: Model, loaded: Predictor) -> str:
    """One line: what the checkpoint is, and its scores per family where the run was evaluated
    (held-out, the demo test set, the external family, the worst controlled shift)."""
    meta = loaded.meta
    parts = [model.label, f"width {meta.model.width}, {meta.model.blocks} block(s) per stage"]
    if meta.epoch:
        parts.append(f"epoch {meta.epoch}")
    if meta.validation_auc is not None:
        parts.append(f"cube validation AUC {meta.validation_auc:.3f}")
    if meta.model.vessel_head:
        parts.append("vessel-aware")
    parts.append(f"calibrated on {meta.calibration.series} held-out series" if meta.calibration else "not calibrated")
    scores = headline(score_rows(RunFolder(model.path.parent)))
    if scores:
        parts.append("final score: " + ", ".join(scores))
    return " · ".join(parts)


# --------------------------------------------------------------------------------------
# Uploads


def cap_server_uploads() -> bool:
    """Make this server refuse, as they arrive, the uploaded files that would take what one
    session holds above `MAX_UPLOAD_BYTES` (`cap_uploads`). Returns False where there is no
    server (AppTest) or its upload store is not the in-memory one `cap_uploads` knows."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager

    if not Runtime.exists() or not isinstance(Runtime.instance().uploaded_file_mgr, MemoryUploadedFileManager):
        return False
    cap_uploads(Runtime.instance().uploaded_file_mgr, MAX_UPLOAD_BYTES)
    return True


def cap_uploads(manager, cap: int) -> None:
    """Refuse each file whose bytes would take what its session holds in ``manager`` (a
    Streamlit ``MemoryUploadedFileManager``) above ``cap``: Streamlit's ``server.maxUploadSize``
    is per file, and a total checked by the page comes only once every file is in memory. The
    upload request of a refused file is answered 413 (the uploader marks the file in red) and
    its bytes go with the request. Idempotent."""
    from starlette.exceptions import HTTPException

    if getattr(manager, "capped_at", None) is not None:
        manager.capped_at = cap
        return
    manager.capped_at = cap
    add_file, lock = manager.add_file, threading.Lock()

    def capped_add_file(session_id: str, file) -> None:
        with lock:
            held = sum(len(f.data) for key, f in manager.file_storage.get(session_id, {}).items()
                       if key != file.file_id)
            if held + len(file.data) > manager.capped_at:
                raise HTTPException(status_code=413, detail=f"An upload may hold {manager.capped_at >> 20} MB at most")
            add_file(session_id, file)

    manager.add_file = capped_add_file


def release_upload(files) -> None:
    """Drop the refused ``files`` from the server's memory now (not when the session ends) and
    hand the freed memory back to the system."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    manager = getattr(context, "uploaded_file_mgr", None)
    if manager is not None and hasattr(manager, "remove_file"):
        for file in files:
            manager.remove_file(context.session_id, file.file_id)
    st.session_state.pop("infer_upload", None)
    st.session_state["infer_uploader"] = st.session_state.get("infer_uploader", 0) + 1  # an empty uploader
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """glibc's malloc_trim: run.py tells malloc to keep freed memory (faster inference), so a
    refused upload's bytes are handed back explicitly."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


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


def nifti_in(sources: list[tuple[str, bytes]]) -> str | None:
    """A description of the NIfTI image an upload is (None when it is not one).

    Raises:
        IngestError: it is a NIfTI file that cannot be read (refused before any Run button).
    """
    if not is_nifti(sources):
        return None
    volume = load_nifti(sources, "MR")  # reads and checks it; the modality is asked afterwards
    return (f"{sources[0][0]}: NIfTI image of {' x '.join(map(str, volume.shape[::-1]))} voxels (i, j, k) of "
            f"{' x '.join(f'{s:.2f}' for s in volume.spacing[::-1])} mm, {volume.info['plane']}")


def series_in(sources: list[tuple[str, bytes]]) -> list[SeriesInfo]:
    """The series of an upload that can be volumes (headers only), largest first; an error if
    it holds none, saying why (before any Run button is offered)."""
    found = scan(sources)
    if not found.series:
        if not sources:
            raise IngestError("No files were given.")
        if len(found.skipped) == 1:
            raise IngestError(found.skipped[0])
        first = found.skipped[0].rstrip(".") if found.skipped else sources[0][0]
        raise IngestError(f"None of the {len(sources)} uploaded files holds a DICOM image (first: {first}).")
    volumes = [series for series in found.series if series.n_images > 1]
    if not volumes:
        single = found.series[0]
        raise IngestError(f"The upload holds {'one image' if single.n_images == 1 else 'no image'} of series "
                          f"{single.series_uid} ({single.modality}): a 3D volume needs at least two slices. "
                          "Upload every file of the series (or a .zip of its folder).")
    return volumes


# --------------------------------------------------------------------------------------
# Predictions kept in the session: sliders and reruns never rerun the network


def probability_meaning(calibration: Calibration | None) -> str:
    """What the numbers of a prediction mean, for the model that made it."""
    locations = ("A location's value is P(an aneurysm at a window) x P(that location there): it ranks where an "
                 "aneurysm would be, it is not a calibrated probability of its own.")
    if calibration is None:
        return ("Aneurysm Present is the network's raw output, the highest of hundreds of window scores, not a "
                "calibrated probability: series without an aneurysm often score high. 'python -m pipeline evaluate "
                "--run RUN' calibrates a model on its held-out series. " + locations)
    return (f"Aneurysm Present is calibrated on the {calibration.series} held-out series of the model's own data "
            f"({calibration.positives} with an aneurysm; Platt scaling): of such series scoring about p, about a "
            "share p had one. On other scanners or phantom families it means less (the model card gives the "
            "external family's figures). " + locations)


def remember(key: tuple, prediction: Prediction, truth: dict | None, model: Model,
             calibration: Calibration | None = None) -> dict:
    """Keep a prediction (with its heatmap on the volume) as the one shown; returns it."""
    results: dict = st.session_state.setdefault("infer_results", {})
    results.pop(key, None)
    results[key] = {"prediction": prediction, "heat": prediction.heatmap_on_volume().astype(np.float16),
                    "truth": truth, "model": model.label, "meaning": probability_meaning(calibration), "key": str(key)}
    while len(results) > KEPT_RESULTS:
        results.pop(next(iter(results)))
    st.session_state["infer_shown"] = key
    return results[key]


def score(key: tuple, model: Model, loaded: Predictor, source, series_uid: str | None,
          data_row: tuple | None, modality: str | None = None) -> tuple[dict | None, tuple[str, str] | None]:
    """Score a series and keep the result under ``key`` (with the ground truth when
    ``data_row`` = (data root, train.csv row)); returns (result, None), or (None, (title,
    message)) for a series that cannot be read or scored: never an exception. ``modality``:
    that of a NIfTI image."""
    try:
        prediction = loaded.predict(source, series_uid=series_uid, modality=modality)
    except IngestError as exc:
        return None, ("The series cannot be read", str(exc))
    except Exception as exc:  # never a traceback on the page
        return None, ("The series could not be scored", f"Scoring failed: {type(exc).__name__}: {exc}")
    truth = ground_truth(data_row[0], data_row[1], prediction) if data_row else None
    result = remember(key, prediction, truth, model, loaded.calibration)
    result["algorithm"] = loaded.algorithm()
    return result, None


CANDIDATE_BALL_MM = 3.0  # radius of the balls marking the candidates in the 3D view


def layers_3d(result: dict) -> tuple[bytes, list[dict]]:
    """The processed volume, the heatmap (from `figures.HEAT_FLOOR`) and the candidates (balls)
    as NIfTI layers for the NiiVue view, made once per result."""
    if "layers_3d" not in result:
        prediction = result["prediction"]
        volume = prediction.volume
        image = nifti_bytes(np.clip(volume.array * 255, 0, 255).astype(np.uint8), volume.affine, np.uint8, (0, 255))
        heat = result["heat"].astype(np.float32)
        heat = np.where(heat >= HEAT_FLOOR, np.clip(heat * 255, 0, 255), 0).astype(np.uint8)
        balls = np.zeros(volume.shape, np.uint8)
        radius = np.ceil(CANDIDATE_BALL_MM / np.asarray(volume.spacing)).astype(int)
        for candidate in prediction.candidates:
            centre = np.round(candidate["voxel"]).astype(int)
            box = tuple(slice(max(c - r, 0), c + r + 1) for c, r in zip(centre, radius))
            offsets = np.stack(np.meshgrid(*[np.arange(b.start, b.stop) - c for b, c in zip(box, centre)],
                                           indexing="ij"), -1) * np.asarray(volume.spacing)
            balls[box][np.linalg.norm(offsets, axis=-1) <= CANDIDATE_BALL_MM] = 255
        result["layers_3d"] = (image, [
            {"data": nifti_bytes(heat, volume.affine, np.uint8, (HEAT_FLOOR * 255, 255)), "name": "heatmap.nii.gz",
             "colormap": "warm", "opacity": 0.7},
            {"data": nifti_bytes(balls, volume.affine, np.uint8, (1, 255)), "name": "candidates.nii.gz",
             "colormap": "green", "opacity": 1.0},
        ])
    return result["layers_3d"]


class Download(NamedTuple):
    label: str
    data: Callable[[], bytes]  # made when clicked (Streamlit's deferred download)
    file_name: str
    mime: str
    help: str


def downloads(result: dict) -> tuple[list[Download], str | None]:
    """The files a result can be saved as, and why the DICOM ones are not offered (a NIfTI
    image or a series without the references they need), else None."""
    prediction, algorithm = result["prediction"], result.get("algorithm") or export.Algorithm()
    stem = prediction.series_uid[-16:].strip(".") or "series"
    files = [
        Download("Heatmap (NIfTI)", lambda: nifti_bytes(*prediction.heatmap_on_source()), f"heatmap_{stem}.nii.gz",
                 "application/gzip", "The aneurysm probability on the image's own grid: it overlays the image in "
                 "3D Slicer or ITK-SNAP."),
        Download("Prediction (JSON)", lambda: json.dumps(prediction.to_json(), indent=1).encode(),
                 f"prediction_{stem}.json", "application/json", "The 14 probabilities, the candidates, the timings."),
    ]
    try:
        export.source_headers(prediction)
    except export.ExportError as exc:
        return files, str(exc)
    files[:0] = [
        Download("DICOM SR", lambda: export.to_bytes(export.structured_report(prediction, algorithm)),
                 f"aneurysm_sr_{stem}.dcm", "application/dicom", "A measurement report (TID 1500): the 14 "
                 "probabilities and a 3D point per candidate with its artery, for a PACS, OHIF or 3D Slicer."),
        Download("DICOM SEG", lambda: export.to_bytes(export.segmentation(prediction, algorithm)),
                 f"aneurysm_seg_{stem}.dcm", "application/dicom", "The heatmap as a fractional Segmentation "
                 "(probability) on the series' grid, referencing its images."),
    ]
    return files, None


def show(key: tuple) -> None:
    """Display the result kept under ``key``, the viewer on its top candidate."""
    st.session_state["infer_shown"] = key
    focus(recalled(key))


def recalled(key: tuple) -> dict | None:
    return st.session_state.get("infer_results", {}).get(key)


def shown() -> dict | None:
    """The result on display, if any."""
    return recalled(st.session_state.get("infer_shown"))


def upload_contents(files) -> tuple[list[tuple[str, bytes]], list, str | None]:
    """The upload as an in-memory source, its DICOM series, or the description of the NIfTI
    image it is; worked out once per upload (kept in the session, so reruns neither unzip
    nor scan again)."""
    fingerprint = tuple(f.file_id for f in files)
    kept = st.session_state.get("infer_upload")
    if kept is None or kept[0] != fingerprint:
        check_upload([f.size for f in files])  # before any byte is read
        sources = files_to_sources([(f.name, f.getvalue()) for f in files])
        nifti = nifti_in(sources)
        kept = (fingerprint, sources, [] if nifti else series_in(sources), nifti)
        st.session_state["infer_upload"] = kept
    return kept[1], kept[2], kept[3]


def focus(result: dict) -> None:
    """Put the viewer's slices on the top candidate (the volume's centre without one)."""
    prediction = result["prediction"]
    centre = [n // 2 for n in prediction.volume.shape]
    viewer.jump("infer", prediction.candidates[0]["voxel"] if prediction.candidates else centre,
                prediction.volume.shape)


def jump_to_candidate() -> None:
    """The jump control's callback: move the slices, then clear the control for the next jump."""
    chosen = st.session_state.get("infer_jump")
    result = shown()
    if chosen is not None and result is not None:
        prediction = result["prediction"]
        viewer.jump("infer", prediction.candidates[chosen]["voxel"], prediction.volume.shape)
    st.session_state["infer_jump"] = None


# --------------------------------------------------------------------------------------
# What a result looks like


def probability_table(prediction, truth: dict | None) -> pd.DataFrame:
    table = pd.DataFrame({"Label": list(LABEL_COLUMNS),
                          "Probability": [prediction.probabilities[n] for n in LABEL_COLUMNS]})
    if truth is not None:
        table["Truth"] = [truth["labels"][n] for n in LABEL_COLUMNS]
    return table


def candidate_table(prediction) -> pd.DataFrame:
    return pd.DataFrame([{
        "#": i + 1, "Probability": c["probability"], "Location": c["location"],
        "Location probability": c["location_probability"],
        "Position (mm, LPS)": ", ".join(f"{v:.1f}" for v in c["position_mm"]),
        "Voxel (z, y, x)": ", ".join(f"{v:.0f}" for v in c["voxel"]),
        **({"Frame": c["frame"], "x": c["coordinates"]["x"], "y": c["coordinates"]["y"],
            "SOPInstanceUID": c["SOPInstanceUID"]} if c["SOPInstanceUID"] else
           {"NIfTI voxel (i, j, k)": ", ".join(f"{v:.0f}" for v in c["nifti_voxel"])}),
    } for i, c in enumerate(prediction.candidates)])


def viewer_points(result: dict) -> list[dict]:
    """Candidates (numbered, white) and ground-truth localizers (green circles) as viewer points."""
    prediction, truth = result["prediction"], result["truth"]
    found = [{"voxel": c["voxel"], "label": str(i + 1), "color": CANDIDATE, "symbol": "square",
              "text": f"#{i + 1} {c['location']} ({c['probability']:.2f})"}
             for i, c in enumerate(prediction.candidates)]
    if truth is not None:
        found += [{"voxel": p["voxel"], "text": f"Ground truth: {p['location']}", "color": TRUTH}
                  for p in truth["points"]]
    return found


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
