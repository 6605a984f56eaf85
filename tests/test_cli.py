"""`python -m pipeline scan|inspect|predict`: output and exit status, no traceback on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

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


def test_scan_of_a_data_folder_names_the_rsna_modalities_and_sums_up(demo):
    root, _, manifest = demo
    result = run("scan", str(root))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    modalities = {uid: s["plan"]["modality"] for uid, s in manifest["series"].items()}
    for line in lines[:-1]:  # one line a series, with train.csv's modality (the header only says MR)
        uid = line.split(" ")[0]
        assert f"({modalities[uid]}, " in line
    counts = ", ".join(f"{m} {n}" for m, n in sorted(Counter(modalities.values()).items()))
    assert lines[-1].startswith(f"{len(modalities)} series ({counts}), ")
    assert "other file(s) not read" in lines[-1] and "left aside" not in result.stdout  # tables are no noise


def test_inspect_of_a_folder_of_many_series_names_a_few_and_says_how_to_choose(demo):
    result = run("inspect", str(demo[0] / "series"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"holds {len(demo[2]['series'])} series" in result.stderr and "SeriesInstanceUID" in result.stderr
    assert "and 3 more (scan lists them all)" in result.stderr and len(result.stderr) < 1200


def test_predict_prints_its_candidates_as_columns(demo):
    uid = next(uid for uid, s in demo[2]["series"].items() if s["plan"]["modality"] == "CTA")
    result = run("predict", str(demo[0] / "series" / uid))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["#", "p", "location"])
    rows = [line.split() for line in lines[header + 1:] if line.strip()[:1].isdigit()]
    assert rows and [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(0.0 <= float(r[1]) <= 1.0 and r[-1].startswith("1.2.826.") for r in rows)  # the image's full UID
    assert "{" not in result.stdout  # no Python dicts
