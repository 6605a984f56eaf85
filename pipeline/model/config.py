"""The network's configuration and geometry (no torch: the dashboard reads it)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import JsonConfig

OUTPUT_STRIDE = 4  # heatmap cell i is centred on input voxel 4 i
INPUT_MULTIPLE = 16  # the encoder's total stride: input sizes must be multiples of it
CENTRE_REACH = 8  # a cube's score is the highest presence within this many voxels of its centre
PRECISIONS = ("auto", "bf16", "fp32")  # see pipeline.model.precision


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """The network's shape (checkpoints saved before ``first_stage`` existed had one: its
    default).

    Attributes:
        width: channels of the first stage (the others: 2, 4 and 8 times as many).
        blocks: residual blocks per stage.
        cube: side of the cube `AneurysmNet.forward` scores (the builder's cubes).
        first_stage: a residual stage of width w at the stem's resolution (the costliest one).
        vessel_head: a vessel segmentation head beside the aneurysm heads (vessel-aware
            training; checkpoints saved before it existed have none).
    """

    width: int = 16
    blocks: int = 1
    cube: int = 48
    first_stage: bool = True
    vessel_head: bool = False
