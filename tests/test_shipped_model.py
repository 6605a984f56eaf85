"""The shipped demo model (models/demo): it loads safely, scores the held-out demo series as its
card says, and its predictions are good where the card says so: candidates at the aneurysms,
negative series below positive ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.inference import SHIPPED_MODEL, Predictor
from pipeline.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS
from pipeline.metrics import rsna_score
from pipeline.rsna import read_localizers, read_train

FOLDER = SHIPPED_MODEL.parent
CARD = json.loads((FOLDER / "evaluation.json").read_text()) if (FOLDER / "evaluation.json").is_file() else None
TOLERANCE = 0.02  # bf16 on one CPU, fp32 on another: probabilities move in the second decimal at most


def test_the_checkpoint_is_small_and_loads_with_weights_only():
    assert SHIPPED_MODEL.stat().st_size < 8 << 20
    checkpoint = torch.load(SHIPPED_MODEL, weights_only=True)
    meta = json.loads(checkpoint["meta"])
    assert meta["locations"] == list(LOCATIONS) and meta["location_prior"]["samples"] > 0
    assert set(checkpoint) == {"model", "meta"}  # no optimiser state in the shipped file
    card = (FOLDER / "MODEL_CARD.md").read_text()
    assert f"{CARD['final_score']:.3f}" in card and "not patients" in card


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory):
    """The default demo data (60 series, seed 0), as `python -m pipeline demo-data` writes it."""
    from pipeline.demo import generate_demo_data

    root = tmp_path_factory.mktemp("full-demo") / "data"
    generate_demo_data(root, workers=2)
    return root


@pytest.fixture(scope="module")
def scored(full_demo):
    """The held-out series of the card, scored again with the shipped checkpoint."""
    predictor = Predictor(SHIPPED_MODEL)
    return {row["series_uid"]: predictor.predict(full_demo / "series" / row["series_uid"])
            for row in CARD["predictions"]}


def test_it_scores_the_held_out_series_as_its_card_says(scored, full_demo):
    table = read_train(full_demo).set_index("SeriesInstanceUID")
    for row in CARD["predictions"]:
        probabilities = scored[row["series_uid"]].probabilities
        for name in LABEL_COLUMNS:
            assert probabilities[name] == pytest.approx(row[name], abs=TOLERANCE), (row["series_uid"], name)
    uids = list(scored)
    truth = {name: table.loc[uids, name].to_numpy(float) for name in LABEL_COLUMNS}
    predicted = {name: np.array([scored[u].probabilities[name] for u in uids]) for name in LABEL_COLUMNS}
    assert rsna_score(truth, predicted)["final_score"] == pytest.approx(CARD["final_score"], abs=0.03)
