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


def test_image_without_wrinkles_what_dice_smoothing_does_and_does_not_do():
    target = torch.zeros(1, 1, 8, 8)
    confident_empty = torch.full((1, 1, 8, 8), -20.0)
    assert soft_dice_loss(confident_empty, target).item() < 1e-6  # sum(p) << smooth: about 0
    assert DiceFocalLoss()(confident_empty, target).item() < 1e-6
    assert soft_dice_loss(torch.full((1, 1, 8, 8), 20.0), target).item() > 0.95  # predicting wrinkles costs
    # The docstring's figure: at 512 px a small p everywhere already puts an empty image's Dice near 1
    # (sum(p) = 89 >> smooth), so the claim "near 0 on empty images" only holds for sum(p) << smooth.
    p = 3.4e-4
    tiny_everywhere = torch.full((1, 1, 512, 512), math.log(p / (1 - p)))
    empty_512 = torch.zeros(1, 1, 512, 512)
    assert math.isclose(soft_dice_loss(tiny_everywhere, empty_512).item(), 0.989, abs_tol=1e-3)
    # Pooled over a batch, the wrinkle-free image barely moves the Dice term of an image with wrinkles.
    wrinkled = torch.zeros(1, 1, 512, 512)
    wrinkled[..., 100:104, 50:450] = 1
    good = torch.where(wrinkled > 0, 10.0, -10.0)
    alone = soft_dice_loss(good, wrinkled).item()
    pooled = soft_dice_loss(torch.cat([good, tiny_everywhere]), torch.cat([wrinkled, empty_512])).item()
    assert alone < 0.01 and pooled - alone < 0.03  # 0.004 and 0.027


def test_loss_of_summed_sums_does_not_depend_on_batching():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 1, 16, 16) * 3, (torch.rand(6, 1, 16, 16) < 0.1).float()
    valid = (torch.rand(6, 1, 16, 16) < 0.8).float()
    loss = DiceFocalLoss()
    whole = loss(logits, target, valid)
    for size in (1, 2, 4):
        sums = sum(loss.sums(logits[i : i + size], target[i : i + size], valid[i : i + size]).double() for i in range(0, 6, size))
        assert torch.allclose(loss.from_sums(sums).float(), whole, atol=1e-6)
    # the mean of per-batch losses (how val_loss was computed before) is not the same number
    per_batch = torch.stack([loss(logits[i : i + 1], target[i : i + 1], valid[i : i + 1]) for i in range(6)]).mean()
    assert abs(per_batch.item() - whole.item()) > 1e-3


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
