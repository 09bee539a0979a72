"""Dice + Focal on hand-made cases, including an image with no wrinkles and low-precision logits."""

from __future__ import annotations

import math

import torch

from losses import DiceFocalLoss, focal_loss, soft_dice_loss


def _case(target_pattern):
    target = torch.tensor(target_pattern, dtype=torch.float32)[None, None]
    return target


def test_perfect_and_opposite_predictions():
    target = _case([[0, 1, 1, 0], [0, 0, 1, 0]])
    perfect = (target * 2 - 1) * 30  # logits +-30
    assert soft_dice_loss(perfect, target).item() < 1e-6
    assert focal_loss(perfect, target).item() < 1e-10
    opposite = -perfect
    # Dice: 1 - (0 + 1) / (5 + 3 + 1) with smooth 1
    assert math.isclose(soft_dice_loss(opposite, target).item(), 1 - 1 / 9, rel_tol=1e-5)


def test_image_without_wrinkles_is_not_penalized_when_predicted_empty():
    target = torch.zeros(1, 1, 8, 8)
    confident_empty = torch.full((1, 1, 8, 8), -20.0)
    assert soft_dice_loss(confident_empty, target).item() < 1e-6  # the seed's Dice gave ~1 here
    assert DiceFocalLoss()(confident_empty, target).item() < 1e-6
    # predicting wrinkles on an empty image does cost
    assert soft_dice_loss(torch.full((1, 1, 8, 8), 20.0), target).item() > 0.95


def test_focal_matches_its_formula():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    alpha, gamma = 0.75, 2.0
    p = torch.sigmoid(logits)
    expected = torch.where(target > 0, -alpha * (1 - p) ** gamma * torch.log(p), -(1 - alpha) * p**gamma * torch.log(1 - p)).mean()
    assert torch.allclose(focal_loss(logits, target, alpha=alpha, gamma=gamma), expected, atol=1e-6)


def test_valid_region_excludes_pixels():
    target = _case([[1, 0], [0, 0]])
    logits = torch.tensor([[[[5.0, -5.0], [-5.0, 9.0]]]])  # the last pixel is a confident false positive
    valid = _case([[1, 1], [1, 0]])  # ... outside the region
    inside = DiceFocalLoss()(logits, target, valid)
    assert inside.item() < 0.01
    assert DiceFocalLoss()(logits, target).item() > inside.item() + 0.1


def test_half_precision_logits_stay_finite_and_are_computed_in_float32():
    target = torch.randint(0, 2, (2, 1, 16, 16)).float()
    for dtype in (torch.float16, torch.bfloat16):
        logits = (torch.randn(2, 1, 16, 16) * 60).to(dtype)  # extreme logits overflow naive fp16 focal
        loss = DiceFocalLoss()(logits, target)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_weights_combine_linearly():
    logits, target = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 1, 8, 8)).float()
    dice, focal = soft_dice_loss(logits, target), focal_loss(logits, target)
    combined = DiceFocalLoss(dice_weight=0.3, focal_weight=2.0)(logits, target)
    assert torch.allclose(combined, 0.3 * dice + 2.0 * focal, atol=1e-6)
