"""The model: heatmap shapes and alignment, size, and what a cube's score is."""

from __future__ import annotations

import pytest
import torch

from pipeline.model.config import ModelConfig, OUTPUT_STRIDE
from pipeline.model.network import AneurysmNet, model_size


def test_cube_scores_and_shapes():
    model = AneurysmNet().eval()
    with torch.no_grad():
        output = model(torch.rand(3, 1, 48, 48, 48))
    assert output["presence"].shape == (3,) and output["location"].shape == (3, 13)


def test_heatmap_covers_any_multiple_of_16_at_stride_4():
    model = AneurysmNet().eval()
    with torch.no_grad():
        maps = model.dense(torch.rand(1, 1, 64, 96, 80))
    assert maps["presence"].shape == (1, 16, 24, 20)
    assert maps["location"].shape == (1, 13, 16, 24, 20)
    with pytest.raises(ValueError, match="multiples of 16"):
        model.dense(torch.rand(1, 1, 50, 64, 64))


def test_heatmap_cell_is_centred_on_its_voxel():
    """A bright point moves the peak of the untrained network's response to the cell over it:
    cell i is centred on voxel 4 i (the convention inference and training rely on)."""
    torch.manual_seed(0)
    model = AneurysmNet().eval()
    moved = []
    for voxel in (24, 40):
        volume = torch.zeros(1, 1, 64, 64, 64)
        volume[0, 0, 32, 32, voxel] = 1.0
        with torch.no_grad():
            base = model.dense(torch.zeros_like(volume))["presence"]
            change = (model.dense(volume)["presence"] - base).abs()[0, 8, 8]
        moved.append(int(change.argmax()))
    assert moved[1] - moved[0] == (40 - 24) // OUTPUT_STRIDE


def test_documented_size():
    size = model_size(AneurysmNet())
    assert size["parameters"] == 932_798
    assert size["macs_per_cube"] == 374_906_880
    bigger = model_size(AneurysmNet(ModelConfig(width=32, blocks=2)))
    assert bigger["parameters"] > 4 * size["parameters"]


def test_without_the_first_stage_it_halves_the_cost_and_keeps_the_heatmap_grid():
    light = AneurysmNet(ModelConfig(first_stage=False)).eval()
    assert model_size(light)["macs_per_cube"] < 0.55 * model_size(AneurysmNet())["macs_per_cube"]
    with torch.no_grad():
        assert light.dense(torch.rand(1, 1, 64, 96, 80))["presence"].shape == (1, 16, 24, 20)


def test_checkpoints_from_before_the_first_stage_option_keep_their_architecture():
    saved = {"width": 16, "blocks": 1, "cube": 48}  # a model config written before the field existed
    assert ModelConfig.from_dict(saved).first_stage is True
    assert ModelConfig.from_dict({**saved, "first_stage": False}).first_stage is False


def test_other_cube_sizes_work():
    model = AneurysmNet(ModelConfig(cube=32)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32, 32))["presence"].shape == (2,)


def test_the_vessel_head_segments_on_the_heatmap_grid_and_old_checkpoints_have_none():
    model = AneurysmNet(ModelConfig(vessel_head=True)).eval()
    with torch.no_grad():
        maps = model.dense(torch.rand(1, 1, 64, 96, 80))
    assert maps["vessel"].shape == (1, 16, 24, 20) and maps["artery"].shape == (1, 14, 16, 24, 20)
    assert model_size(model)["parameters"] == 932_798 + 33 * 15  # a 1x1 head of 15 outputs on 32 channels
    assert "vessel" not in AneurysmNet().dense(torch.rand(1, 1, 48, 48, 48))
    assert ModelConfig.from_dict({"width": 16, "blocks": 1, "cube": 48, "first_stage": True}).vessel_head is False
