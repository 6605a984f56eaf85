"""Evaluation: the run's held-out series, or every series of a test set the run never saw."""

from __future__ import annotations

import json

import pytest

from pipeline.__main__ import main
from pipeline.inference.evaluate import evaluate_run
from pipeline.runs import TEST_EVALUATION
from pipeline.labels import LABEL_COLUMNS

from tests.helpers import unseen_dataset


def test_a_test_set_is_scored_whole_and_must_be_unseen(built, trained, tmp_path, capsys):
    root, run = built[0], trained
    validation = json.loads((run / "split.json").read_text())["validation"]
    unseen = unseen_dataset(root, run, tmp_path / "unseen")

    result = evaluate_run(run, unseen, test_set=True)
    assert result["series"] == len(validation) and (run / TEST_EVALUATION).is_file()
    assert {r["series_uid"] for r in result["predictions"]} == set(validation)
    assert all(set(LABEL_COLUMNS) <= set(r) for r in result["predictions"])

    with pytest.raises(ValueError, match="the run trained on"):
        evaluate_run(run, root, test_set=True)
    assert main(["evaluate", "--run", str(run), "--test-set", str(root)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "never saw" in error[0]
