"""Evaluation: the run's held-out series, or every series of a test set the run never saw."""

from __future__ import annotations

import json

import pytest

from pipeline.__main__ import main
from pipeline.inference.evaluate import evaluate_run
from pipeline.runs import TEST_SETS
from pipeline.labels import LABEL_COLUMNS

from tests.helpers import unseen_dataset


def test_a_test_set_is_scored_whole_and_must_be_unseen(built, trained, tmp_path, capsys):
    root, run = built[0], trained
    validation = json.loads((run / "split.json").read_text())["validation"]
    unseen = unseen_dataset(root, run, tmp_path / "unseen")

    result = evaluate_run(run, unseen, test_set=True)
    assert result["series"] == len(validation) and (run / TEST_SETS / "unseen.json").is_file()
    assert result["test_set"] == "unseen" and result["family"] is None  # not a phantom family: the folder names it
    modalities = {r["modality"] for r in result["predictions"]}
    assert set(result["per_modality"]) == modalities
    assert sum(part["series"] for part in result["per_modality"].values()) == result["series"]
    negatives = [r["Aneurysm Present"] for r in result["predictions"]
                 if r["series_uid"] not in _positives(root)]
    assert result["negative_mean_present"] == pytest.approx(sum(negatives) / len(negatives))
    assert {r["series_uid"] for r in result["predictions"]} == set(validation)
    assert all(set(LABEL_COLUMNS) <= set(r) for r in result["predictions"])

    with pytest.raises(ValueError, match="the run trained on"):
        evaluate_run(run, root, test_set=True)
    assert main(["evaluate", "--run", str(run), "--test-set", str(root)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "never saw" in error[0]


def _positives(root) -> set[str]:
    import pandas as pd

    table = pd.read_csv(root / "train.csv", dtype={"SeriesInstanceUID": str})
    return set(table.SeriesInstanceUID[table["Aneurysm Present"] == 1])


def test_the_evaluation_holds_the_froc_of_its_positive_series(built, trained, tmp_path):
    from pipeline.io.rsna import read_localizers

    import shutil

    root, run = built[0], tmp_path / "run"
    shutil.copytree(trained, run)  # the session's run stays as it was for the other tests
    unseen = unseen_dataset(root, run, tmp_path / "unseen")
    (unseen / "demo_manifest.json").write_text((root / "demo_manifest.json").read_text())  # the sizes of its aneurysms
    result = evaluate_run(run, unseen, test_set=True)
    froc = result["froc"]
    localizers, _ = read_localizers(unseen)
    held_out = {r["series_uid"] for r in result["predictions"]}
    assert froc["cases"] == result["series"]
    assert froc["aneurysms"] == sum(len(localizers.get(uid, [])) for uid in held_out)
    assert set(froc["sensitivity"]) == {"0.25", "0.5", "1", "2"}
    values = [froc["sensitivity"][k] for k in ("0.25", "0.5", "1", "2")]
    if froc["aneurysms"]:
        assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values)  # never less with more FPs
    assert "half the aneurysm's diameter" in froc["hit_radius"]
    assert all("froc_sensitivity" in part for part in result["per_modality"].values())
