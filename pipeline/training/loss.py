"""The heatmap loss: balanced presence classes, each crop's hardest negatives, locations, vessels."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pipeline.model.precision import Precision
from pipeline.training.config import TrainConfig
from pipeline.training.crops import Batch


def heatmap_loss(dense: Callable[[torch.Tensor], dict[str, torch.Tensor]], batch: Batch, config: TrainConfig,
                 precision: Precision) -> torch.Tensor:
    """Presence: mean over positive cells + mean over negative cells + ``hard_negative_weight``
    x mean over the ``hard_negatives`` worst negative cells; location: cross-entropy over the
    positive cells with a known location, x ``location_weight``; with the model's vessel head,
    ``vessel_weight`` x the vessel loss (`vessel_loss`). Ignored cells (weight 0) count
    nowhere; an empty class adds 0. Masked sums rather than boolean indexing: nothing here
    waits for the device.

    Args:
        dense: the network's dense heads (`pipeline.model.network.AneurysmNet.dense`, or its
            data-parallel wrapper, `pipeline.training.distributed.DenseHeads`).
        batch: crops and targets from `pipeline.training.crops.draw_batch`.
        config: the loss weights.
        precision: autocast of the forward pass.
    """
    with precision.context():
        output = dense(batch.crops)
    label, weight = batch.label, batch.weight
    losses = F.binary_cross_entropy_with_logits(output["presence"].float(), label, reduction="none")
    positive, negative = ((label > 0) & (weight > 0)).float(), ((label == 0) & (weight > 0)).float()
    loss = masked_mean(losses, negative) + masked_mean(losses, positive)
    if config.hard_negatives > 0:  # per crop: its worst negative cells
        worst = (losses * negative).flatten(1).topk(config.hard_negatives, dim=1).values
        loss = loss + config.hard_negative_weight * worst.mean()
    known = positive * (batch.location >= 0)
    cross_entropy = F.cross_entropy(output["location"].float(), batch.location.clamp(min=0), reduction="none")
    loss = loss + config.location_weight * masked_mean(cross_entropy, known)
    if "vessel" in output:
        loss = loss + config.vessel_weight * vessel_loss(output, batch)
    return loss


def vessel_loss(output: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """The auxiliary vessel segmentation loss, only on crops of series with vessel labels:
    binary cross-entropy of each cell's vessel share, plus the cross-entropy of the artery
    at the cells where it is known."""
    crops = batch.vessel_weight[:, None, None, None].expand_as(batch.vessel)
    share = F.binary_cross_entropy_with_logits(output["vessel"].float(), batch.vessel, reduction="none")
    artery = F.cross_entropy(output["artery"].float(), batch.artery.clamp(min=0), reduction="none")
    return masked_mean(share, crops) + masked_mean(artery, crops * (batch.artery >= 0))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; 0 where it is 1 nowhere."""
    return (values * mask).sum() / mask.sum().clamp(min=1)
