"""Inference: the JSON contract, inputs (folder, zip), bad input, and the mirrored pass (default)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from pipeline.errors import IngestError
from pipeline.inference.predictor import Predictor, predict_series, score_volume
from pipeline.io.archive import read_source
from pipeline.model.precision import choose_precision
from pipeline.labels import LABEL_COLUMNS, LOCATIONS


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "predict", *args], capture_output=True, text=True,
                          timeout=300)


def a_series(demo, positive=True):
    root, _, truth = demo
    uid = next(u for u, e in truth["series"].items() if bool(e["aneurysms"]) == positive)
    return root / "series" / uid, uid


def test_cli_json_has_exactly_the_14_names(demo, trained):
    folder, uid = a_series(demo)
    result = cli(str(folder), "--model", str(trained / "best.pt"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"series_uid", "modality", "probabilities", "candidates", "timings", "warnings"}
    assert list(report["probabilities"]) == list(LABEL_COLUMNS)
    assert all(0.0 <= v <= 1.0 for v in report["probabilities"].values())
    assert report["series_uid"] == uid
    assert {"read", "preprocess", "network", "total"} <= set(report["timings"])
    for candidate in report["candidates"]:
        assert candidate["location"] in LOCATIONS and {"x", "y"} <= set(candidate["coordinates"])


@pytest.mark.slow  # scores series four times (~17 s)
def test_the_mirrored_pass_is_the_default_and_no_flip_scores_once(demo, trained):
    folder, _ = a_series(demo)
    both = Predictor(trained / "best.pt")
    once = Predictor(trained / "best.pt", flip=False)
    assert both.flip and not once.flip
    averaged, single = both.predict(folder).probabilities, once.predict(folder).probabilities
    assert averaged != pytest.approx(single, abs=1e-6)  # the mirrored pass changes the numbers
    cli_default = json.loads(cli(str(folder), "--model", str(trained / "best.pt"), "--json").stdout)
    cli_once = json.loads(cli(str(folder), "--model", str(trained / "best.pt"), "--json", "--no-flip").stdout)
    assert cli_default["probabilities"] == pytest.approx(averaged, abs=0.02)
    assert cli_once["probabilities"] == pytest.approx(single, abs=0.02)


def test_a_zip_gives_the_same_prediction_as_the_folder(demo, trained, tmp_path):
    folder, _ = a_series(demo)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.iterdir():
            archive.write(path, f"nested/dir/{path.name}")
    (tmp_path / "series.zip").write_bytes(buffer.getvalue())
    predictor = Predictor(trained / "best.pt")
    from_folder = predictor.predict(folder).probabilities
    from_zip = predictor.predict(tmp_path / "series.zip").probabilities
    from_bytes = predictor.predict(buffer.getvalue()).probabilities
    assert from_folder == pytest.approx(from_zip) and from_folder == pytest.approx(from_bytes)


def test_predict_series_returns_one_row_in_rsna_order(demo, trained):
    folder, _ = a_series(demo, positive=False)
    frame = predict_series(folder, checkpoint=trained / "best.pt")
    assert list(frame.columns) == list(LABEL_COLUMNS) and len(frame) == 1


@pytest.mark.parametrize("case", ["text", "garbage-zip", "empty-folder", "two-series", "encrypted-zip"])
def test_bad_input_exits_2_with_one_clear_line(demo, trained, tmp_path, case):
    root, _, truth = demo
    if case == "text":
        target = tmp_path / "notes.dcm"
        target.write_text("not an image")
    elif case == "garbage-zip":
        target = tmp_path / "upload.zip"
        target.write_bytes(b"PK\x03\x04" + bytes(200))
    elif case == "empty-folder":
        target = tmp_path / "empty"
        target.mkdir()
    elif case == "two-series":
        target = tmp_path / "two"
        for uid in list(truth["series"])[:2]:
            shutil.copytree(root / "series" / uid, target / uid)
    else:
        target = tmp_path / "locked.zip"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("a.dcm", b"x" * 10)
        data = bytearray(buffer.getvalue())
        data[6] |= 0x1  # the encryption flag of the local header
        central = data.rfind(b"PK\x01\x02")
        data[central + 8] |= 0x1  # ... and of the central directory
        target.write_bytes(bytes(data))
    result = cli(str(target), "--model", str(trained / "best.pt"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_a_missing_model_is_a_clear_error(demo, tmp_path):
    folder, _ = a_series(demo)
    result = cli(str(folder), "--model", str(tmp_path / "none.pt"))
    assert result.returncode == 2 and "No model at" in result.stderr


def test_zip_members_never_touch_the_file_system(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../escape.dcm", b"data")
        archive.writestr("/absolute.dcm", b"data")
    monkeypatch.chdir(tmp_path)
    files = read_source(buffer.getvalue())
    assert [name for name, _ in files] == ["../../escape.dcm", "/absolute.dcm"]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(IngestError, match="not a readable zip"):
        read_source(b"PK\x03\x04 broken")


class PointSampler(torch.nn.Module):
    """A stand-in network whose heatmap cell i reads input voxel 4 i (the real network's
    alignment): presence is that voxel, and the Left MCA channel lights up with it."""

    def dense(self, x):
        sampled = x[:, 0, ::4, ::4, ::4]
        location = torch.zeros(x.shape[0], 13, *sampled.shape[1:])
        location[:, LOCATIONS.index("Left Middle Cerebral Artery")] = 10 * sampled
        return {"presence": 10 * sampled - 5, "location": location}


@pytest.mark.parametrize("width", [64, 61])
def test_flip_averaging_aligns_the_mirrored_pass_and_swaps_left_and_right(width):
    array = np.zeros((32, 32, width), np.float32)
    array[16, 16, 32] = 1.0  # on the window centred on voxel (16, 16, 32)
    plain, plain_location, *_ = score_volume(PointSampler(), array, choose_precision("fp32", "cpu"))
    presence, location, peaks, *_ = score_volume(PointSampler(), array, choose_precision("fp32", "cpu"), flip=True)
    assert peaks[:, 1, 1, 2].tolist() == [16, 16, 32]  # the window's best cell: on the point
    left, right = LOCATIONS.index("Left Middle Cerebral Artery"), LOCATIONS.index("Right Middle Cerebral Artery")
    full = torch.sigmoid(torch.tensor(5.0)).item()
    assert plain[1, 1, 2] == pytest.approx(full, abs=1e-5)
    # Both passes see the point in the same heatmap cell only if the mirrored heatmap is
    # realigned exactly (a cell off and the average would halve it).
    assert presence[1, 1, 2] == pytest.approx(full, abs=1e-5)
    assert plain_location[left, 1, 1, 2] > 0.99
    # the mirrored pass sees the point on the patient's other side: its "Left" becomes "Right"
    assert location[left, 1, 1, 2] == pytest.approx(location[right, 1, 1, 2], abs=1e-5)
    assert location[left, 1, 1, 2] == pytest.approx(plain_location[left, 1, 1, 2] / 2, abs=0.01)


class VesselSampler(torch.nn.Module):
    """A stand-in network with a vessel head: presence reads input voxel 4 i (location: the
    Left MCA, weakly); vessels lie only where x < 32, and they are the Right MCA."""

    def dense(self, x):
        sampled = x[:, 0, ::4, ::4, ::4]
        location = torch.zeros(x.shape[0], 13, *sampled.shape[1:])
        location[:, LOCATIONS.index("Left Middle Cerebral Artery")] = 2 * sampled
        columns = torch.arange(sampled.shape[-1]) * 4
        vessel = torch.where(columns < 32, 10.0, -10.0).expand_as(sampled)
        artery = torch.zeros(x.shape[0], 14, *sampled.shape[1:])
        artery[:, LOCATIONS.index("Right Middle Cerebral Artery")] = 10.0 * (columns < 32)
        return {"presence": 10 * sampled - 5, "location": location, "vessel": vessel, "artery": artery}


def test_vessel_evidence_gates_windows_off_the_vessels_and_names_the_artery_they_sit_on():
    from pipeline.model.checkpoint import CheckpointMeta, TrainedModel
    from pipeline.model.config import ModelConfig
    from pipeline.preprocess.config import PreprocessConfig
    from tests.helpers import make_volume

    array = np.full((48, 48, 64), 0.3, np.float32)
    array[24, 24, 16], array[24, 24, 48] = 0.8, 1.0  # a dome on the vessels, a brighter one off them
    volume = make_volume(array, spacing=(0.8, 0.8, 0.8))
    meta = CheckpointMeta(ModelConfig(vessel_head=True), PreprocessConfig(), None, {}, "", 1)

    def predict(*evidence):
        predictor = Predictor(TrainedModel(VesselSampler(), meta), flip=False, vessel_evidence=evidence)
        return predictor.predict_processed(volume).probabilities

    plain, gated, named = predict(), predict("gate"), predict("artery")
    assert plain["Aneurysm Present"] == pytest.approx(float(torch.sigmoid(torch.tensor(5.0))), abs=1e-4)
    assert gated["Aneurysm Present"] == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))), abs=1e-3)
    assert plain["Left Middle Cerebral Artery"] > plain["Right Middle Cerebral Artery"]
    # the dome on the Right MCA is named after it; the one off the vessels keeps the head's weak guess
    assert named["Right Middle Cerebral Artery"] > 10 * plain["Right Middle Cerebral Artery"]
    assert named["Right Middle Cerebral Artery"] > 2 * named["Left Middle Cerebral Artery"]
    with pytest.raises(ValueError, match="unknown vessel evidence"):
        Predictor(TrainedModel(VesselSampler(), meta), vessel_evidence=("halo",))
    plain_meta = CheckpointMeta(ModelConfig(), PreprocessConfig(), None, {}, "", 1)
    assert Predictor(TrainedModel(PointSampler(), plain_meta), vessel_evidence=("gate",)).vessel_evidence == ()


def test_the_mirrored_pass_swaps_the_arteries_too():
    array = np.zeros((32, 32, 64), np.float32)
    scores = score_volume(VesselSampler(), array, choose_precision("fp32", "cpu"), flip=True)
    right, left = LOCATIONS.index("Right Middle Cerebral Artery"), LOCATIONS.index("Left Middle Cerebral Artery")
    # plain pass: Right MCA at x < 32; mirrored pass: its vessels at x >= 32, as the Left MCA
    assert scores.artery[right, 1, 1, 0] > 0.45 and scores.artery[left, 1, 1, 3] > 0.45
    assert scores.vessel.shape == scores.presence.shape
