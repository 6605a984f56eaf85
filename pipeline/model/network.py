"""The model: a small 3D residual network that maps a volume to an aneurysm heatmap.

Fully convolutional: any one-channel input (N, 1, D, H, W) in [0, 1] with D, H, W multiples
of 16 gives (`AneurysmNet.dense`) ``presence`` logits (N, D/4, H/4, W/4), "an aneurysm
within a few mm of this point", and ``location`` logits (N, 13, D/4, H/4, W/4) over the
RSNA locations (meaningful where presence is high). Output cell i is centred on input
voxel ``OUTPUT_STRIDE * i``. It is trained on large crops of whole processed volumes
(`pipeline.training`), so every part of every training series is seen, not only sampled
cubes; inference runs it once over the whole volume (`pipeline.inference`).

Applied to a 48-voxel cube, ``forward`` gives the cube's score: the highest presence within
8 voxels of the cube's centre and the location logits there ((N,) and (N, 13)).

Architecture: a 3x3x3 stride-2 stem, four stages of basic residual blocks (widths w, 2w,
4w, 8w; strides 1, 2, 2, 2), and a feature-pyramid decoder back to stride 4 (1x1 lateral
convolutions of width 2w, nearest upsampling, one 3x3x3 convolution) with a 1x1 head.
``width`` and ``blocks`` scale it: the default (16, 1 block per stage) has 0.93 M
parameters and costs 0.37 G multiply-adds per 48-voxel cube (`model_size`); width 32 with two blocks per stage is the "credible on real
data" setting. ``first_stage=False`` drops the stage at the stem's resolution (0.18 G multiply-adds).
``vessel_head=True`` adds a 1x1 head that segments the vessels at stride 4 (vessel-aware
training, `pipeline.training.loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.labels import LOCATIONS, VESSEL_LABELS
from pipeline.model.config import CENTRE_REACH, INPUT_MULTIPLE, OUTPUT_STRIDE, ModelConfig


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
    """3D ResNet encoder, feature-pyramid decoder, presence and location heatmaps."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Sequential(nn.Conv3d(1, w, 3, 2, 1, bias=False), nn.BatchNorm3d(w), nn.ReLU(inplace=True))
        stages, channels = [], w
        widths, strides = (w, 2 * w, 4 * w, 8 * w), (1, 2, 2, 2)
        for out, stride in list(zip(widths, strides))[0 if config.first_stage else 1:]:
            blocks = [ResidualBlock(channels, out, stride)]
            blocks += [ResidualBlock(out, out, 1) for _ in range(config.blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.lateral = nn.ModuleList([nn.Conv3d(c, 2 * w, 1) for c in (2 * w, 4 * w, 8 * w)])
        self.smooth = nn.Sequential(nn.Conv3d(2 * w, 2 * w, 3, 1, 1, bias=False), nn.BatchNorm3d(2 * w),
                                    nn.ReLU(inplace=True))
        self.head = nn.Conv3d(2 * w, 1 + len(LOCATIONS), 1)
        if config.vessel_head:  # vessel fraction of each cell and the artery it belongs to
            self.vessel_head = nn.Conv3d(2 * w, 1 + len(VESSEL_LABELS), 1)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def dense(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Presence (N, d, h, w) and location (N, 13, d, h, w) logits at stride 4; with the
        vessel head also ``vessel`` (N, d, h, w), the logit of the share of each cell that
        is vessel, and ``artery`` (N, 14, d, h, w) logits over `VESSEL_LABELS`."""
        if any(n % INPUT_MULTIPLE for n in x.shape[2:]):
            raise ValueError(f"input sizes {tuple(x.shape[2:])} must be multiples of {INPUT_MULTIPLE}")
        x = self.stem(x)
        stages = []
        for stage in self.stages:
            x = stage(x)
            stages.append(x)
        top = self.lateral[2](stages[-1])  # the last three stages, at strides 16, 8 and 4
        top = F.interpolate(top, scale_factor=2, mode="nearest") + self.lateral[1](stages[-2])
        top = F.interpolate(top, scale_factor=2, mode="nearest") + self.lateral[0](stages[-3])
        features = self.smooth(top)
        out = self.head(features)
        maps = {"presence": out[:, 0], "location": out[:, 1:]}
        if self.config.vessel_head:
            vessels = self.vessel_head(features)
            maps.update(vessel=vessels[:, 0], artery=vessels[:, 1:])
        return maps

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """A cube's score: the highest presence within `CENTRE_REACH` voxels of its centre."""
        maps = self.dense(x)
        centre = [n // 2 // OUTPUT_STRIDE for n in x.shape[2:]]
        reach = CENTRE_REACH // OUTPUT_STRIDE
        box = (slice(None), *(slice(c - reach, c + reach + 1) for c in centre))
        presence = maps["presence"][box].flatten(1)
        best = presence.argmax(dim=1)
        location = maps["location"][(slice(None), slice(None), *box[1:])].flatten(2)
        return {"presence": presence.gather(1, best[:, None])[:, 0],
                "location": location.gather(2, best[:, None, None].expand(-1, location.shape[1], 1))[..., 0]}


def model_size(model: AneurysmNet) -> dict:
    """Parameters and multiply-adds per 48-voxel cube (convolutions)."""
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
