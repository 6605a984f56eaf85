"""The cube model: a small 3D residual network with two heads.

Input: one-channel cubes (N, 1, 48, 48, 48) in [0, 1]. Output: a dict with
``presence`` (N,) logits of "an aneurysm at the centre of this cube" and ``location``
(N, 13) logits over the RSNA locations (meaningful for positive cubes).

Architecture: a 3x3x3 stride-2 stem, four stages of basic residual blocks
(widths w, 2w, 4w, 8w; strides 1, 2, 2, 2), global average pooling, two linear heads.
``width`` and ``blocks`` scale it: the default (16, 1 block per stage) has 0.90 M
parameters and costs 0.32 G multiply-adds per 48-voxel cube (`model_size`); width 32
with two blocks per stage is the "credible on real data" setting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from pipeline.labels import LOCATIONS


@dataclass(frozen=True)
class ModelConfig:
    width: int = 16
    blocks: int = 1
    cube: int = 48

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm3d(channels_out)
        self.conv2 = nn.Conv3d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm3d(channels_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv3d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm3d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class AneurysmNet(nn.Module):
    """3D ResNet for cubes, with a presence head and a location head."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Sequential(nn.Conv3d(1, w, 3, 2, 1, bias=False), nn.BatchNorm3d(w), nn.ReLU(inplace=True))
        stages, channels = [], w
        for index, (out, stride) in enumerate(zip((w, 2 * w, 4 * w, 8 * w), (1, 2, 2, 2))):
            blocks = [ResidualBlock(channels, out, stride)]
            blocks += [ResidualBlock(out, out, 1) for _ in range(config.blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.presence = nn.Linear(channels, 1)
        self.location = nn.Linear(channels, len(LOCATIONS))
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.pool(self.features(x)).flatten(1)
        return {"presence": self.presence(pooled).squeeze(1), "location": self.location(pooled)}


def model_size(model: AneurysmNet) -> dict:
    """Parameters and multiply-adds per cube (convolutions and linear layers)."""
    macs = 0

    def count(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv3d):
            kernel = module.weight[0].numel()  # in_channels/groups * k^3
            macs += output.numel() // output.shape[0] * kernel
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv3d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, *(model.config.cube,) * 3))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    return {"parameters": sum(p.numel() for p in model.parameters()), "macs_per_cube": macs}
