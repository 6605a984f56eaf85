"""The inference page: a demo series or an upload scored by a model, with probabilities,
candidates, heatmap viewer and ground truth; bad uploads and a missing model are explained."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import nibabel
import pandas as pd
import pydicom
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import inference as infer
from helpers import slice_stack_shown
from dashboard.text import plain
from pipeline.errors import IngestError
from pipeline.labels import LABEL_COLUMNS


def open_page(monkeypatch, tmp_path, demo, model) -> AppTest:
    monkeypatch.setenv("ANEURYSM_DATA", str(demo[0]))
    monkeypatch.setenv(infer.MODEL_ENV, str(model))
    monkeypatch.setenv("ANEURYSM_RUNS_DIR", str(tmp_path / "no-runs"))
    app = AppTest.from_file("../app.py", default_timeout=120).run()
    app.switch_page("pages/infer.py").run()
    assert not app.exception
    return app


def page_text(app: AppTest) -> str:
    """Everything the page shows as text, tables included."""
    parts = [e.value for kind in ("title", "text", "markdown", "caption", "error", "warning", "info", "success")
             for e in getattr(app, kind)]
    parts += [f"{m.label} {m.value}" for m in app.metric]
    parts += [d.value.to_string() for d in app.dataframe]
    return " ".join(map(str, parts))


def table_with(app: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in app.dataframe if column in d.value.columns)


def test_a_demo_series_is_scored_with_probabilities_candidates_and_ground_truth(monkeypatch, tmp_path, demo,
                                                                               trained):
    app = open_page(monkeypatch, tmp_path, demo, trained / "best.pt")
    box = app.selectbox(key="infer_demo_series")
    row = box.value
    assert row["Aneurysm Present"] == 1  # a positive series is offered first
    assert "held-out series" in box.options[box.index]  # one the model never trained on
    assert all(("training series" in o) != ("held-out series" in o) for o in box.options)  # each one marked
    assert "not calibrated" in " ".join(t.value for t in app.text)  # the model line says what its numbers are
    app.button(key="infer_run_demo").click().run()
    assert not app.exception
    assert any("raw output" in c.value and "ranks where" in c.value for c in app.caption)  # what the numbers mean

    probabilities = table_with(app, "Probability")
    assert probabilities["Label"].tolist() == list(LABEL_COLUMNS)
    assert probabilities["Probability"].between(0, 1).all()
    assert probabilities["Truth"].tolist() == [int(row[name]) for name in LABEL_COLUMNS]
    assert any("Ground truth" in info.value for info in app.info)
    assert {m.label for m in app.metric} >= {"Aneurysm Present", "Read (s)", "Network (s)", "Total (s)"}

    result = app.session_state["infer_results"][app.session_state["infer_shown"]]
    assert result["truth"]["points"], "the localizers of a positive series are mapped to the processed volume"
    charts = [c.proto.spec.replace(" ", "") for c in app.get("plotly_chart")]
    assert any('"name":"Groundtruth"' in spec for spec in charts)  # beside the probabilities
    candidates = result["prediction"].candidates
    assert candidates  # even a one-epoch model has windows above the candidate floor
    shown = table_with(app, "SOPInstanceUID")
    assert len(shown) == len(candidates) and shown["Probability"].between(0, 1).all()
    viewer = slice_stack_shown(app)
    assert viewer["start"] == round(candidates[0]["voxel"][0])  # opens on the top one
    assert [p["title"] for p in viewer["panels"]] == ["Axial slice", "Axial MIP 24 mm"]
    squares = [m for m in viewer["panels"][0]["markers"] if m["symbol"] == "square"]
    assert squares[0]["label"] == "1" and squares[0]["first"] <= viewer["start"] <= squares[0]["last"]
    assert any(m["color"] == infer.TRUTH for m in viewer["panels"][1]["markers"])  # the localizer, green
    app.selectbox(key="infer_jump").set_value(len(candidates) - 1).run()  # jump to the last one
    assert slice_stack_shown(app)["start"] == round(candidates[-1]["voxel"][0])
    app.radio(key="infer_plane").set_value("Coronal").run()  # every plane is on the candidate
    assert not app.exception
    assert slice_stack_shown(app)["start"] == round(candidates[-1]["voxel"][1])
    assert "ZZFAKE" not in page_text(app)  # the fake patient name, ID and birth date never show
    labels = [b.proto.label for b in app.get("download_button")]
    assert labels == ["DICOM SR", "DICOM SEG", "Heatmap (NIfTI)", "Prediction (JSON)"]
    saved = {item.label: item.data() for item in infer.downloads(result)[0]}  # what a click downloads
    assert pydicom.dcmread(io.BytesIO(saved["DICOM SR"])).Modality == "SR"
    assert pydicom.dcmread(io.BytesIO(saved["DICOM SEG"])).SegmentationType == "FRACTIONAL"
    assert nibabel.Nifti1Image.from_bytes(gzip.decompress(saved["Heatmap (NIfTI)"])).shape[::-1] == \
        result["prediction"].volume.source_grid[0]
    assert json.loads(saved["Prediction (JSON)"])["candidates"] == candidates


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_uploaded_zip_of_two_series_lets_the_user_choose_one(monkeypatch, tmp_path, demo, trained):
    root = demo[0]
    table = pd.read_csv(root / "train.csv", dtype={"SeriesInstanceUID": str})
    uids = table.loc[table["Modality"] == "MRI T2", "SeriesInstanceUID"].tolist()[:2]  # thick slices: small
    assert len(uids) == 2
    archive = zipped({f"{uid}/{path.name}": path.read_bytes()
                      for uid in uids for path in sorted((root / "series" / uid).iterdir())})
    app = open_page(monkeypatch, tmp_path, demo, trained / "best.pt")
    app.file_uploader(key="infer_upload_files_0").set_value(("two series.zip", archive, "application/zip")).run()
    assert not app.exception and not app.error
    choice = app.selectbox(key="infer_upload_series")
    assert len(choice.options) == 2 and all(any(uid in o for o in choice.options) for uid in uids)
    choice.set_value(next(o for o in choice.options if uids[1] in o)).run()
    assert any("is in the data folder" in c.value for c in app.caption)
    app.button(key="infer_run_upload").click().run()
    assert not app.exception
    assert app.session_state["infer_shown"][1] == uids[1]
    assert table_with(app, "Probability")["Probability"].between(0, 1).all()
    truth = app.session_state["infer_results"][app.session_state["infer_shown"]]["truth"]  # a series of the folder
    assert truth is not None and any("Ground truth" in info.value for info in app.info)
    assert table_with(app, "Probability")["Truth"].tolist() == [int(table.set_index("SeriesInstanceUID").loc[
        uids[1], name]) for name in LABEL_COLUMNS]


@pytest.mark.parametrize("upload", [
    ("notes.txt", b"not an image", "text/plain"),
    ("broken.zip", b"PK\x03\x04 not really a zip", "application/zip"),
    ("empty.zip", zipped({"readme.md": b"# nothing"}), "application/zip"),
])
def test_an_upload_that_is_not_dicom_gets_a_readable_error(monkeypatch, tmp_path, demo, trained, upload):
    app = open_page(monkeypatch, tmp_path, demo, trained / "best.pt")
    app.file_uploader(key="infer_upload_files_0").set_value(upload).run()
    assert not app.exception
    assert len(app.error) == 1 and "DICOM" in app.error[0].value and "let go" in app.error[0].value
    assert not [b for b in app.button if b.key == "infer_run_upload"]
    assert app.file_uploader(key="infer_upload_files_1").value in (None, [])  # the refused files are gone


def test_an_upload_over_the_caps_is_refused_before_reading(monkeypatch, tmp_path, demo, trained):
    monkeypatch.setattr(infer, "MAX_UPLOAD_FILES", 2)
    app = open_page(monkeypatch, tmp_path, demo, trained / "best.pt")
    app.file_uploader(key="infer_upload_files_0").set_value([(f"{i}.dcm", b"x", "application/dicom")
                                                          for i in range(3)]).run()
    assert not app.exception
    assert "more than the limit of 2" in app.error[0].value
    assert app.file_uploader(key="infer_upload_files_1").value in (None, [])
    assert "infer_upload" not in app.session_state


def test_without_any_model_the_page_says_what_to_do(monkeypatch, tmp_path, demo):
    app = open_page(monkeypatch, tmp_path, demo, tmp_path / "missing" / "best.pt")
    assert any("No trained model" in w.value and "Training page" in w.value for w in app.warning)
    assert not [b for b in app.button if b.key == "infer_run_demo"]


def test_uploaded_files_become_an_in_memory_source():
    archive = zipped({"series/a.dcm": b"A", "series/sub/b.dcm": b"B"})
    sources = infer.files_to_sources([("upload.zip", archive), ("c.dcm", b"C")])
    assert sources == [("upload.zip/series/a.dcm", b"A"), ("upload.zip/series/sub/b.dcm", b"B"), ("c.dcm", b"C")]
    with pytest.raises(IngestError, match="limit"):
        infer.check_upload([infer.MAX_UPLOAD_BYTES, 1])
    with pytest.raises(IngestError, match="None of the 3 uploaded files holds a DICOM image"):
        infer.series_in(sources)


def test_file_names_shown_in_messages_are_inert_markdown():
    shown = plain("![x](http://a.example/p.png) **b** :red[c] <i>d</i> me@e.example a_b.dcm")
    for active in ("![", "](", "**", ":red[", "<i>", "http://", "me@e"):
        assert active not in shown


def test_the_model_line_gives_the_shipped_models_scores_in_and_out_of_its_family():
    from pipeline.inference.predictor import Predictor, SHIPPED_MODEL

    folder = SHIPPED_MODEL.parent
    line = infer.describe_model(infer.Model(SHIPPED_MODEL, "Shipped model"), Predictor(SHIPPED_MODEL))
    held_out = json.loads((folder / "evaluation.json").read_text())["final_score"]
    test = json.loads((folder / "test_sets" / "demo.json").read_text())["final_score"]
    external = json.loads((folder / "test_sets" / "external.json").read_text())["final_score"]
    assert f"held-out {held_out:.3f}" in line and f"demo test set {test:.3f}" in line
    assert f"external family {external:.3f}" in line and "worst shift" in line


def test_the_server_refuses_upload_files_beyond_the_sessions_cap_as_they_arrive():
    from starlette.exceptions import HTTPException
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.uploaded_file_manager import UploadedFileRec

    manager = MemoryUploadedFileManager("/_stcore/upload_file")
    infer.cap_uploads(manager, 10 << 20)
    infer.cap_uploads(manager, 10 << 20)  # installed once

    def upload(session, file_id, megabytes):
        manager.add_file(session, UploadedFileRec(file_id, f"{file_id}.dcm", "application/dicom",
                                                  bytes(megabytes << 20)))

    upload("a", "1", 6)
    with pytest.raises(HTTPException) as refused:
        upload("a", "2", 6)
    assert refused.value.status_code == 413 and "10 MB" in refused.value.detail
    upload("a", "1", 9)  # the same file uploaded again replaces itself
    upload("b", "1", 6)  # another session has its own allowance
    assert [f.file_id for f in manager.get_files("a", ["1", "2"])] == ["1"]
    assert manager.get_stats()["cache_memory_bytes"][0].byte_length == (9 + 6) << 20


def test_a_nifti_upload_is_scored_after_its_modality_is_named(monkeypatch, tmp_path, demo, trained):
    from pipeline.io.dicom import load_series
    from pipeline.io.nifti import save_nifti

    table = pd.read_csv(demo[0] / "train.csv", dtype={"SeriesInstanceUID": str})
    uid = table.loc[table.Modality == "MRA", "SeriesInstanceUID"].iloc[0]
    volume = load_series(demo[0] / "series" / uid)
    nifti = save_nifti(tmp_path / "tof.nii.gz", volume.array, volume.affine)
    app = open_page(monkeypatch, tmp_path, demo, trained / "best.pt")
    app.file_uploader(key="infer_upload_files_0").set_value(("tof.nii.gz", nifti.read_bytes(),
                                                             "application/gzip")).run()
    assert not app.exception and not app.error
    assert any("NIfTI image of" in t.value for t in app.text)
    assert app.selectbox(key="infer_upload_modality").value == "MRA"
    app.button(key="infer_run_upload").click().run()
    assert not app.exception and not app.error
    candidates = table_with(app, "Location probability")
    assert "NIfTI voxel (i, j, k)" in candidates.columns and "SOPInstanceUID" not in candidates.columns
    assert table_with(app, "Probability")["Probability"].between(0, 1).all()
    assert [b.proto.label for b in app.get("download_button")] == ["Heatmap (NIfTI)", "Prediction (JSON)"]
    assert any(c.value.startswith("No DICOM SR or SEG") and "NIfTI" in c.value for c in app.caption)


def test_a_damaged_nifti_upload_is_refused_before_any_run_button(monkeypatch, tmp_path, demo, trained):
    app = open_page(monkeypatch, tmp_path, demo, trained / "best.pt")
    app.file_uploader(key="infer_upload_files_0").set_value(("bad.nii.gz", b"\x1f\x8b" + b"junk" * 50,
                                                             "application/gzip")).run()
    assert not app.exception
    assert plain("bad.nii.gz is not a readable NIfTI image") in app.error[0].value
    assert not [b for b in app.button if b.key == "infer_run_upload"]


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm"])
def test_a_single_slice_upload_is_refused_before_any_run_button_with_the_reason(monkeypatch, tmp_path, demo, trained,
                                                                              name):
    from tests.helpers import pydicom_file

    app = open_page(monkeypatch, tmp_path, demo, trained / "best.pt")
    app.file_uploader(key="infer_upload_files_0").set_value((name, pydicom_file(name).read_bytes(),
                                                             "application/dicom")).run()
    assert not app.exception
    assert "one image" in app.error[0].value and "at least two slices" in app.error[0].value
    assert not [b for b in app.button if b.key == "infer_run_upload"]


def test_a_series_that_fails_when_scored_says_why_in_plain_view(monkeypatch, tmp_path, demo, trained):
    app = open_page(monkeypatch, tmp_path, demo, trained / "best.pt")

    def refuse(*args, **kwargs):
        raise IngestError("The series is a Siemens mosaic: convert it first.")

    monkeypatch.setattr("pipeline.inference.predictor.Predictor.predict", refuse)
    app.button(key="infer_run_demo").click().run()
    assert not app.exception
    assert any("Siemens mosaic" in e.value for e in app.error), "the reason is on the page"
    boxes = app.get("status")
    assert boxes, "the status box is there"
    for box in boxes:  # but not inside the status box, which is collapsed
        assert not [e for e in box.error if "Siemens mosaic" in e.value]


def three_series_folder(demo, folder):
    """A data folder of 3 of the demo's series: train.csv's rows and the series folders (links)."""
    table = pd.read_csv(demo[0] / "train.csv", dtype={"SeriesInstanceUID": str}).head(3)
    (folder / "series").mkdir(parents=True)
    table.to_csv(folder / "train.csv", index=False)
    for uid in table.SeriesInstanceUID:
        (folder / "series" / uid).symlink_to(demo[0] / "series" / uid)
    return folder, sorted(table.SeriesInstanceUID)


@pytest.mark.slow  # predict-all in its own process on 3 demo series (~15 s)
def test_the_whole_data_folder_is_scored_into_a_submission_table_to_download(monkeypatch, tmp_path, demo, trained):
    from pipeline.inference.batch import SUBMISSION_COLUMNS, read_table

    folder, uids = three_series_folder(demo, tmp_path / "data")
    monkeypatch.setenv("ANEURYSM_PREDICTIONS_DIR", str(tmp_path / "predictions"))
    app = open_page(monkeypatch, tmp_path, (folder,), trained / "best.pt")
    button = next(b for b in app.button if b.key == "infer_all")
    assert button.label == "Score every series"
    button.click().run()
    assert not app.exception
    written = sorted(p.name for p in (tmp_path / "predictions").iterdir())
    assert written == ["run-data.csv", "run-data.failures.csv"]  # the model's run, the data folder's name
    table = read_table(tmp_path / "predictions" / "run-data.csv", SUBMISSION_COLUMNS)
    assert sorted(table) == uids  # every series once
    shown = table_with(app, "Aneurysm Present")
    assert len(shown) == len(table) and list(shown.columns) == list(SUBMISSION_COLUMNS)
    app.run()
    assert next(b for b in app.button if b.key == "infer_all").label == "Score the remaining series"
    assert any(d.label == "Download the submission table (CSV)" for d in app.get("download_button"))


def test_a_visitor_is_first_offered_a_held_out_positive_thin_slice_series():
    rows = [{"SeriesInstanceUID": uid, "Modality": modality, "Aneurysm Present": present}
            for uid, modality, present in (("t2", "MRI T2", 1), ("cta-train", "CTA", 1), ("mra", "MRA", 1),
                                           ("cta", "CTA", 1), ("neg", "MRA", 0))]
    roles = {"t2": infer.HELD_OUT, "cta-train": infer.TRAINING, "mra": infer.HELD_OUT, "cta": infer.HELD_OUT,
             "neg": infer.HELD_OUT}
    assert rows[infer.default_series(rows, roles)]["SeriesInstanceUID"] == "mra"
    roles["mra"] = infer.TRAINING
    assert rows[infer.default_series(rows, roles)]["SeriesInstanceUID"] == "cta"
