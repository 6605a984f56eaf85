"""Checkpoints (pipeline.model.checkpoint): what training writes is what inference loads, the
shipped model still loads, and anything else is refused with one sentence."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch

from pipeline.inference.predictor import SHIPPED_MODEL, Predictor
from pipeline.model.checkpoint import (ARCHITECTURE, CheckpointError, CheckpointMeta, load_checkpoint,
                                       read_checkpoint, save_checkpoint)
from pipeline.model.config import ModelConfig
from pipeline.model.network import AneurysmNet
from pipeline.preprocess.config import PreprocessConfig
from pipeline.training.config import TrainConfig

SMALL = ModelConfig(width=4, blocks=1, first_stage=False)


class Payload:
    """What a hostile pickle carries: a call made when it is unpickled."""

    def __reduce__(self):
        return (print, ("this must never run",))


def meta(**changes) -> CheckpointMeta:
    values = dict(model=SMALL, preprocess=PreprocessConfig(ct_window=(-200.0, 800.0)), location_prior=None,
                  train_config={"epochs": 1}, dataset_manifest_sha256="0" * 64, epoch=3, validation_auc=0.75)
    return CheckpointMeta(**{**values, **changes})


def test_a_saved_checkpoint_loads_with_its_weights_and_meta(tmp_path):
    torch.manual_seed(0)
    network = AneurysmNet(SMALL)
    save_checkpoint(tmp_path / "best.pt", network, meta())
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left
    loaded = load_checkpoint(tmp_path / "best.pt")
    assert not loaded.network.training
    assert loaded.meta == meta() and loaded.meta.preprocess.ct_window == (-200.0, 800.0)
    for name, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], value)
    assert set(torch.load(tmp_path / "best.pt", weights_only=True)) == {"model", "meta"}


def test_training_state_travels_in_last_pt(tmp_path):
    network = AneurysmNet(SMALL)
    save_checkpoint(tmp_path / "last.pt", network, meta(), epoch=3, best_score=0.5)
    raw = read_checkpoint(tmp_path / "last.pt")
    assert raw["epoch"] == 3 and raw["best_score"] == 0.5


def test_the_shipped_model_loads_and_predicts_with_its_own_preprocessing():
    loaded = load_checkpoint(SHIPPED_MODEL)
    assert loaded.meta.preprocess == PreprocessConfig()
    assert loaded.meta.location_prior is not None and loaded.meta.model == TrainConfig().model  # the defaults
    assert Predictor(SHIPPED_MODEL).preprocess == loaded.meta.preprocess


def _rewrite_meta(path, source, edit):
    checkpoint = torch.load(source, weights_only=True)
    values = json.loads(checkpoint["meta"])
    edit(values)
    checkpoint["meta"] = json.dumps(values)
    torch.save(checkpoint, path)


@pytest.mark.parametrize("edit, message", [
    (lambda v: v.pop("preprocess"), "does not record the preprocessing"),
    (lambda v: v.update(preprocess={}), "does not record the preprocessing"),
    (lambda v: v.update(architecture="cube-classifier"), "earlier version of the model"),
    (lambda v: v.update(labels=["Aneurysm Present"]), "other labels"),
    (lambda v: v["model"].update(depth=3), "unknown ModelConfig option"),
])
def test_a_checkpoint_this_version_cannot_use_is_refused(tmp_path, edit, message):
    save_checkpoint(tmp_path / "good.pt", AneurysmNet(SMALL), meta())
    _rewrite_meta(tmp_path / "bad.pt", tmp_path / "good.pt", edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("content", [
    b"",  # empty
    b"PK\x03\x04 truncated zip",
    pickle.dumps({"model": {}, "meta": "{}", "payload": Payload()}),  # code in a pickle: never run
])
def test_a_file_that_is_no_checkpoint_is_refused(tmp_path, content):
    (tmp_path / "model.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "model.pt")


@pytest.mark.parametrize("value", [[1, 2, 3], {"model": {}, "meta": 5}, {"meta": "{}"}])
def test_a_torch_file_of_another_shape_is_refused(tmp_path, value):
    torch.save(value, tmp_path / "model.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "model.pt")


def test_weights_that_do_not_fit_the_recorded_model_are_refused(tmp_path):
    save_checkpoint(tmp_path / "model.pt", AneurysmNet(SMALL), meta(model=dataclasses.replace(SMALL, width=8)))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "model.pt")


def test_a_missing_file_says_how_to_get_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="train one"):
        load_checkpoint(tmp_path / "none.pt")


def test_the_architecture_name_is_written(tmp_path):
    save_checkpoint(tmp_path / "model.pt", AneurysmNet(SMALL), meta())
    assert json.loads(torch.load(tmp_path / "model.pt", weights_only=True)["meta"])["architecture"] == ARCHITECTURE
