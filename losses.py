"""Dice + Focal loss for thin, rare structures, computed in float32 on the pixels that count."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, pooled over the whole batch.

    `smooth` in both numerator and denominator keeps the loss near 0 (not near 1) when an image
    has no wrinkles and the model predicts none; pooling over the batch keeps its gradient stable.
    """
    prob = torch.sigmoid(logits.float())
    target = target.float()
    if valid is not None:
        prob = prob * valid
        target = target * valid
    intersection = (prob * target).sum()
    total = prob.sum() + target.sum()
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, alpha: float = 0.75, gamma: float = 2.0
) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017), mean over valid pixels; `alpha` weights the positive class.

    Computed from logits in float32 with BCE-with-logits, so it neither overflows under fp16 autocast
    nor takes log(0).
    """
    logits = logits.float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true class
    alpha_t = alpha * target + (1.0 - alpha) * (1.0 - target)
    loss = alpha_t * (1.0 - p_t).pow(gamma) * bce
    if valid is None:
        return loss.mean()
    valid = valid.float()
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


class DiceFocalLoss(nn.Module):
    """Weighted sum of soft Dice and focal loss; `valid` restricts both to a region (e.g. face skin)."""

    def __init__(self, dice_weight: float = 1.0, focal_weight: float = 1.0, alpha: float = 0.75, gamma: float = 2.0, smooth: float = 1.0):
        super().__init__()
        self.dice_weight, self.focal_weight = dice_weight, focal_weight
        self.alpha, self.gamma, self.smooth = alpha, gamma, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, valid, self.smooth)
        if self.focal_weight:
            loss = loss + self.focal_weight * focal_loss(logits, target, valid, self.alpha, self.gamma)
        return loss
