"""unet/inputs.py: the one input convention (RGB or RGB + texture map, in [0, 1]) and how networks take it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unet.inputs import IMAGENET_MEAN, IMAGENET_STD, Normalize, expand_first_conv, moon_scaling, widen_input


def test_normalize_uses_imagenet_statistics_for_rgb_and_2t_minus_1_for_the_texture():
    x = torch.rand(2, 4, 5, 6)
    out = Normalize(4)(x)
    for c in range(3):
        assert torch.allclose(out[:, c], (x[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    assert torch.allclose(out[:, 3], 2 * x[:, 3] - 1)
    assert torch.equal(Normalize(3)(x[:, :3]), out[:, :3])
    assert not Normalize(4).state_dict()  # no keys: checkpoints do not depend on the statistics
    with pytest.raises(ValueError, match="3 \\(RGB\\) or 4"):
        Normalize(2)


@pytest.mark.parametrize("texture_max", [0, 1, 2, 255])
def test_moon_scaling_keeps_their_quirk_for_texture_maps_with_max_at_most_1(texture_max):
    rgb = torch.randint(0, 256, (1, 3, 4, 4)).float()
    texture = torch.zeros(1, 1, 4, 4)
    texture[0, 0, 1, 2] = texture_max
    out = moon_scaling(torch.cat([rgb, texture], dim=1) / 255)
    assert torch.allclose(out[:, :3], rgb / 255 * 2 - 1)
    # inference.py: `if arr.max() > 1: arr = arr / 255 * 2 - 1` on the uint8-valued array.
    expected = texture / 255 * 2 - 1 if texture_max > 1 else texture
    assert torch.allclose(out[:, 3:], expected, atol=1e-6)


def test_without_the_quirk_every_texture_map_is_scaled():
    x = torch.zeros(1, 4, 3, 3)
    assert moon_scaling(x, zero_map_quirk=False)[:, 3].eq(-1).all() and moon_scaling(x)[:, 3].eq(0).all()


def test_moon_scaling_decides_per_image():
    x = torch.rand(2, 4, 3, 3)
    x[0, 3] = 0
    out = moon_scaling(x)
    assert out[0, 3].eq(0).all() and torch.allclose(out[1, 3], 2 * x[1, 3] - 1)


def test_expand_first_conv_matches_segmentation_models_pytorch():
    from segmentation_models_pytorch.encoders._utils import patch_first_conv

    torch.manual_seed(0)
    ours, theirs = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    theirs.load_state_dict(ours.state_dict())
    rgb = ours[0].weight.detach().clone()
    widen_input(ours, 4)
    patch_first_conv(theirs, new_in_channels=4, pretrained=True)
    assert ours[0].weight.shape == (8, 4, 3, 3) and torch.equal(ours[0].weight, theirs[0].weight)
    assert torch.allclose(ours[0].weight[:, 3], rgb[:, 0] * 0.75)  # channel 3 from the red filters, scaled by 3/4
    assert torch.equal(ours[0].bias, theirs[0].bias)


def test_widening_refuses_what_it_cannot_do():
    widen_input(nn.Conv2d(3, 4, 1), 3)  # RGB: nothing to do
    with pytest.raises(ValueError, match="no 3-channel convolution"):
        widen_input(nn.Sequential(nn.Conv2d(1, 4, 1)), 4)
    with pytest.raises(ValueError, match="widens a 3-channel conv"):
        expand_first_conv(nn.Conv2d(4, 4, 1), 5)
