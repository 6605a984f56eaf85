"""`python -m pipeline scan|inspect`: output and exit status, no traceback on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import PYDICOM_FILES


def run(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


def test_scan_json_lists_the_series():
    result = run("scan", str(PYDICOM_FILES / "dicomdirtests"), "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert len(report["series"]) == 13
    assert {"series_uid", "modality", "n_images", "rows", "columns", "plane"} <= set(report["series"][0])


def test_inspect_reports_the_processed_geometry(write):
    folder, _, _ = write(plane="sagittal", n=12, rows=40, columns=40)
    result = run("inspect", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["plane"] == "sagittal" and report["processed_orientation"] == "SPL"
    assert report["processed_spacing_mm"] == [0.8, 0.8, 0.8]


@pytest.mark.parametrize("target", ["missing", "text"])
def test_bad_input_exits_2_with_one_line(tmp_path, target):
    path = tmp_path / "x.dcm"
    if target == "text":
        path.write_text("not dicom")
    result = run("inspect", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_command_defaults_are_the_library_defaults(built):
    from pipeline.__main__ import build_config, build_parser, demo_series, train_config
    from pipeline.dataset.config import BuildConfig
    from pipeline.demo import DEMO_SERIES
    from pipeline.training.config import TrainConfig

    _, out, _, _ = built
    resolved = train_config(build_parser().parse_args(["train", "--datasets", str(out)]))
    assert resolved == TrainConfig(datasets=resolved.datasets)  # every option, the model's included
    assert build_config(build_parser().parse_args(["build"])) == BuildConfig()
    assert demo_series(build_parser().parse_args(["demo-data"])) == DEMO_SERIES
    assert demo_series(build_parser().parse_args(["demo-data", "--family", "external", "--out", "x"])) == 48
