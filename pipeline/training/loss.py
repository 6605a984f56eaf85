"""The heatmap loss: balanced presence classes, each crop's hardest negatives, locations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.model.precision import Precision
from pipeline.training.config import TrainConfig


def heatmap_loss(model, crops: torch.Tensor, label: torch.Tensor, location: torch.Tensor, weight: torch.Tensor,
                 config: TrainConfig, precision: Precision) -> torch.Tensor:
    """Presence: mean over positive cells + mean over negative cells + ``hard_negative_weight``
    x mean over the ``hard_negatives`` worst negative cells; location: cross-entropy over the
    positive cells with a known location, x ``location_weight``. Ignored cells (weight 0)
    count nowhere; an empty class adds 0. Masked sums rather than boolean indexing: nothing
    here waits for the device.

    Args:
        model: the network (`pipeline.model.network.AneurysmNet`).
        crops: (B, 1, s, s, s) inputs; ``label``, ``location``, ``weight``: (B, c, c, c)
            targets from `pipeline.training.crops.heatmap_targets`.
        config: the loss weights.
        precision: autocast of the forward pass.
    """
    with precision.context():
        output = model.dense(crops)
    losses = F.binary_cross_entropy_with_logits(output["presence"].float(), label, reduction="none")
    positive, negative = ((label > 0) & (weight > 0)).float(), ((label == 0) & (weight > 0)).float()
    loss = masked_mean(losses, negative) + masked_mean(losses, positive)
    if config.hard_negatives > 0:  # per crop: its worst negative cells
        worst = (losses * negative).flatten(1).topk(config.hard_negatives, dim=1).values
        loss = loss + config.hard_negative_weight * worst.mean()
    known = positive * (location >= 0)
    cross_entropy = F.cross_entropy(output["location"].float(), location.clamp(min=0), reduction="none")
    return loss + config.location_weight * masked_mean(cross_entropy, known)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; 0 where it is 1 nowhere."""
    return (values * mask).sum() / mask.sum().clamp(min=1)
