"""Configurations cross processes as JSON: lossless round trips, one rule for unknown and
missing options, and command-line flags over a configuration file (the command line's
defaults: tests/test_cli.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.__main__ import build_config, build_parser, train_config
from pipeline.dataset.config import BuildConfig
from pipeline.model.config import ModelConfig
from pipeline.preprocess.config import PreprocessConfig
from pipeline.training.config import TrainConfig

CHANGED = [
    PreprocessConfig(target_spacing=(0.6, 0.7, 0.8), ct_window=(-200.0, 1000.0)),
    BuildConfig(cube=32, negatives=3, hard_share=0.25, jitter=0, jitter_mm=2.0, seed=7, modalities=("CTA",),
                preprocess=PreprocessConfig(target_spacing=(1.0, 1.0, 1.0))),
    ModelConfig(width=8, blocks=2, first_stage=False),
    TrainConfig(datasets=("a.npz", "b.npz"), epochs=3, crop=64, precision="fp32", model=ModelConfig(width=24)),
]


@pytest.mark.parametrize("config", CHANGED, ids=lambda c: type(c).__name__)
def test_every_configuration_survives_json(config, tmp_path):
    text = json.dumps(config.to_dict())
    assert type(config).from_dict(json.loads(text)) == config
    (tmp_path / "config.json").write_text(text)
    assert type(config).from_file(tmp_path / "config.json") == config


@pytest.mark.parametrize("cls", [PreprocessConfig, BuildConfig, ModelConfig, TrainConfig])
def test_a_missing_option_takes_its_default_and_an_unknown_one_is_refused(cls):
    assert cls.from_dict({}) == cls()
    with pytest.raises(ValueError, match="unknown .* option.*: zoom"):
        cls.from_dict({"zoom": 0.2})


def test_a_bad_configuration_file_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot be read"):
        TrainConfig.from_file(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        TrainConfig.from_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        BuildConfig.from_file(tmp_path / "list.json")


def test_flags_override_a_configuration_file(tmp_path, built):
    _, out, _, _ = built
    (tmp_path / "build.json").write_text(json.dumps(CHANGED[1].to_dict()))
    args = build_parser().parse_args(["build", "--config", str(tmp_path / "build.json"), "--negatives", "9"])
    assert build_config(args) == dataclasses.replace(CHANGED[1], negatives=9)
    (tmp_path / "train.json").write_text(json.dumps(TrainConfig(epochs=4, model=ModelConfig(width=24)).to_dict()))
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "train.json"), "--datasets", str(out),
                                      "--no-first-stage", "--lr", "0.01"])
    config = train_config(args)
    assert (config.epochs, config.learning_rate, config.model) == (4, 0.01, ModelConfig(width=24, first_stage=False))


def test_the_build_flags_set_the_preprocessing_they_name():
    args = build_parser().parse_args(["build", "--spacing", "1.0", "--mr-tissue-level", "0.25"])
    preprocess = build_config(args).preprocess
    assert (preprocess.target_spacing, preprocess.mr_tissue_level) == ((1.0, 1.0, 1.0), 0.25)
    assert build_config(build_parser().parse_args(["build"])).preprocess.mr_tissue_level is None
