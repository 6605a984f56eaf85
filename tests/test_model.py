"""The cube model: shapes, size, and what the two heads return."""

from __future__ import annotations

import torch

from pipeline.model import AneurysmNet, ModelConfig, model_size


def test_heads_and_shapes():
    model = AneurysmNet().eval()
    with torch.no_grad():
        output = model(torch.rand(3, 1, 48, 48, 48))
    assert output["presence"].shape == (3,) and output["location"].shape == (3, 13)


def test_documented_size():
    size = model_size(AneurysmNet())
    assert size["parameters"] == 899_166
    assert size["macs_per_cube"] == 324_036_352
    bigger = model_size(AneurysmNet(ModelConfig(width=32, blocks=2)))
    assert bigger["parameters"] > 8 * size["parameters"]


def test_other_cube_sizes_work():
    model = AneurysmNet(ModelConfig(cube=32)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32, 32))["presence"].shape == (2,)
