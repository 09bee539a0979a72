"""MoonUNet: Moon et al.'s stage-2 wrinkle U-Net (labhai/ffhq-wrinkle-dataset), with its published module names.

The network is the milesial Pytorch-UNet layout that their inference.py builds as
`UNet(n_channels=4, n_classes=2, bilinear=True)`: 110 state-dict keys, 17,263,618 parameters
(/work/shared/PUBLISHED_MODELS.md section 1), so their stage2_unet.pth loads into it strictly.

Conventions (this project's, applied inside the model):
  Input: float N x 4 x H x W. Channels 0-2 are RGB in [0, 1]; the model rescales them to x * 2 - 1, which is
  Moon et al.'s (x / 255) * 2 - 1. Channel 3 is the texture channel already in [-1, 1], exactly as
  data/texture.py's `texture_channel` gives it, and is passed through unchanged. Their scaling is skipped for
  an array whose max is <= 1, so an all-zero texture stays 0 instead of -1; `texture_channel` keeps that
  quirk. Here it is applied to the texture only: an all-black RGB image (which their code would also leave
  at 0) becomes -1 here; a real masked face image is never all zero, so this does not arise in practice.
  Any H and W: the input is zero-padded at the bottom and right to a multiple of 16 and the output cropped back.
  Output: N x 1 x H x W logits equal to logit1 - logit0 of their two-class head, so sigmoid(output)
  equals softmax(their logits)[:, 1] exactly (sigmoid(a - b) = e^a / (e^a + e^b)), and output > 0 is their
  argmax(1) == 1 (class 1 = wrinkle; threshold 0.5 on the probability).

Not yet reachable through config.py: the project's data pipeline does not feed the texture channel yet
(model.input=rgb_texture comes later), so there is no `model.arch=moon_unet`. The model is used directly and
through `python -m unet.import_weights moon-unet FILE --check-only`. It has no pretrained encoder, so there
is no freeze_encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from unet.published_parts import DoubleConv, OutConv
from unet.unet_parts import pad_to_multiple

MOON_KEY_COUNT = 110
MOON_PARAMETER_COUNT = 17_263_618


class Down(nn.Module):
    """Max-pool by 2, then a double conv: `maxpool_conv.1`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Parameter-free bilinear upsample (align_corners=True), concatenation [skip, upsampled], double conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # The input is padded to a multiple of 16, so the upsampled map always matches the skip exactly.
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class MoonUNet(nn.Module):
    """Moon et al.'s U-Net (4 input channels, 2 classes). See the module docstring for input and output."""

    stride = 16
    in_channels = 4

    def __init__(self):
        super().__init__()
        self.inc = DoubleConv(4, 64)
        self.down1 = Down(64, 128)
        self.down2 = Down(128, 256)
        self.down3 = Down(256, 512)
        self.down4 = Down(512, 512)  # 1024 // 2: milesial's bilinear variant halves the bottleneck
        self.up1 = Up(1024, 256)
        self.up2 = Up(512, 128)
        self.up3 = Up(256, 64)
        self.up4 = Up(128, 64)
        self.outc = OutConv(64, 2)

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Their N x 2 x H x W logits for this project's N x 4 x H x W input (see the module docstring)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"MoonUNet takes N x 4 x H x W input (RGB in [0, 1], texture in [-1, 1]), not {tuple(x.shape)}")
        height, width = x.shape[-2:]
        x = torch.cat([x[:, :3] * 2 - 1, x[:, 3:]], dim=1)
        x = pad_to_multiple(x, self.stride)
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        y = self.down4(x4)
        y = self.up1(y, x4)
        y = self.up2(y, x3)
        y = self.up3(y, x2)
        y = self.up4(y, x1)
        return self.outc(y)[..., :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1 x H x W wrinkle logits: logit1 - logit0, so sigmoid of it is softmax(...)[:, 1]."""
        logits = self.class_logits(x)
        return logits[:, 1:2] - logits[:, 0:1]
