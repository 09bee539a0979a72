"""Dice + Focal loss for thin, rare structures, computed in float32 on the pixels that count.

Both terms are ratios of sums over pixels (Dice: overlap over total; focal: summed loss over the
number of pixels), so a loss over many batches, or over several processes, is the same ratio of the
summed sums: `DiceFocalLoss.sums` gives them, `DiceFocalLoss.from_sums` turns any total of them into
the loss. Training uses one batch's sums; validation adds every batch's (and every rank's), so
`val_loss` does not depend on the batch size or the number of processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_SUMS = 4  # dice overlap, dice total, focal sum, focal pixel count


def soft_dice_sums(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of p * t, sum of p + t) over the valid pixels: the two halves of soft Dice."""
    prob = torch.sigmoid(logits.float())
    target = target.float()
    if valid is not None:
        prob = prob * valid
        target = target * valid
    return (prob * target).sum(), prob.sum() + target.sum()


def dice_loss_from_sums(intersection: torch.Tensor, total: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - (2 * intersection + smooth) / (total + smooth).

    `smooth` keeps the ratio defined when nothing is marked or predicted (loss 0 at p = 0 exactly),
    but it does not make an image without wrinkles cheap: once the predicted mass sum(p) is well
    above `smooth` the loss is close to 1 (at 512 x 512 px, p = 3.4e-4 everywhere gives 0.989). The
    sums are therefore pooled over a whole batch (and over the whole set for val_loss), where images
    without wrinkles are outweighed by those with; the focal term is what pushes their probabilities down.
    """
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, pooled over the whole batch (see `dice_loss_from_sums`)."""
    return dice_loss_from_sums(*soft_dice_sums(logits, target, valid), smooth)


def focal_sums(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, alpha: float = 0.75, gamma: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed binary focal loss, number of pixels it was summed over) on the valid pixels.

    Computed from logits in float32 with BCE-with-logits, so it neither overflows under fp16 autocast
    nor takes log(0); `alpha` weights the positive class (Lin et al. 2017).
    """
    logits = logits.float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true class
    alpha_t = alpha * target + (1.0 - alpha) * (1.0 - target)
    loss = alpha_t * (1.0 - p_t).pow(gamma) * bce
    if valid is None:
        return loss.sum(), logits.new_tensor(float(loss.numel()))
    valid = valid.float()
    return (loss * valid).sum(), valid.sum()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, alpha: float = 0.75, gamma: float = 2.0
) -> torch.Tensor:
    """Binary focal loss, mean over valid pixels (0 when there are none)."""
    total, count = focal_sums(logits, target, valid, alpha, gamma)
    return total / count.clamp_min(1.0)


class DiceFocalLoss(nn.Module):
    """Weighted sum of soft Dice and focal loss; `valid` restricts both to a region (e.g. face skin)."""

    n_sums = N_SUMS

    def __init__(self, dice_weight: float = 1.0, focal_weight: float = 1.0, alpha: float = 0.75, gamma: float = 2.0, smooth: float = 1.0):
        super().__init__()
        self.dice_weight, self.focal_weight = dice_weight, focal_weight
        self.alpha, self.gamma, self.smooth = alpha, gamma, smooth

    def sums(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The loss's four sums (N_SUMS) as one float32 tensor; sums of several batches add up. A term
        with weight 0 is not computed (its sums stay 0)."""
        zero = logits.new_zeros((), dtype=torch.float32)
        intersection, total = soft_dice_sums(logits, target, valid) if self.dice_weight else (zero, zero)
        focal_total, count = focal_sums(logits, target, valid, self.alpha, self.gamma) if self.focal_weight else (zero, zero)
        return torch.stack([intersection, total, focal_total, count])

    def from_sums(self, sums: torch.Tensor) -> torch.Tensor:
        """The loss of (a total of) `sums`."""
        intersection, total, focal_total, count = sums.unbind()
        loss = sums.new_zeros(())
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss_from_sums(intersection, total, self.smooth)
        if self.focal_weight:
            loss = loss + self.focal_weight * focal_total / count.clamp_min(1.0)
        return loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.from_sums(self.sums(logits, target, valid))


class TextureLoss(nn.Module):
    """Mean squared error between the predicted texture map, sigmoid(logits) in [0, 1], and the target map
    (uint8 0..255 scaled to [0, 1]) on the valid pixels: stage 1 of Moon et al.'s recipe (train.task=texture).

    One sigmoid output, as for segmentation, so a stage-1 network fine-tunes to wrinkle masks with its
    head as it is. Sums (squared error, pixel count) add up over batches and ranks as DiceFocalLoss's do."""

    n_sums = 2

    def sums(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(sum of squared errors, number of pixels) as one float32 tensor."""
        error = (torch.sigmoid(logits.float()) - target.float() / 255.0).square()
        if valid is None:
            return torch.stack([error.sum(), logits.new_tensor(float(error.numel()), dtype=torch.float32)])
        valid = valid.float()
        return torch.stack([(error * valid).sum(), valid.sum()])

    def from_sums(self, sums: torch.Tensor) -> torch.Tensor:
        squared, count = sums.unbind()
        return squared / count.clamp_min(1.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.from_sums(self.sums(logits, target, valid))
