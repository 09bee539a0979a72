"""MoonUNet: Moon et al.'s stage-2 wrinkle U-Net (labhai/ffhq-wrinkle-dataset), with its published module names.

The network is the milesial Pytorch-UNet layout that their inference.py builds as
`UNet(n_channels=4, n_classes=2, bilinear=True)`: 110 state-dict keys, 17,263,618 parameters
(/work/shared/PUBLISHED_MODELS.md section 1), so their stage2_unet.pth loads into it strictly.

Conventions (this project's, applied inside the model; unet/inputs.py):
  Input: float N x 4 x H x W in [0, 1], RGB then the texture map / 255, which `moon_scaling` turns into
  Moon et al.'s x / 255 * 2 - 1 (in eval mode with their quirk: an all-zero texture map stays 0, not -1).
  Any H and W: the input is zero-padded at the bottom and right to a multiple of 16 before scaling (so the
  padding reads as masked-out, black pixels without texture: -1) and the output cropped back.
  Output: N x 1 x H x W logits equal to logit1 - logit0 of their two-class head, so sigmoid(output)
  equals softmax(their logits)[:, 1] exactly (sigmoid(a - b) = e^a / (e^a + e^b)), and output > 0 is their
  argmax(1) == 1 (class 1 = wrinkle; threshold 0.5 on the probability).

`model.arch=moon_unet` needs `model.input=rgb_texture`. It has no pretrained encoder: trained from scratch
it freezes nothing (config.py requires model.freeze_encoder=none); fine-tuning released weights
(model.init_from), `freeze_encoder` freezes the contracting path by resolution (`inc`, `down1` ... `down4`).
"""

from __future__ import annotations

import torch
from torch import nn

from unet.freezing import EncoderFreezing
from unet.inputs import moon_scaling
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


class MoonUNet(EncoderFreezing):
    """Moon et al.'s U-Net (4 input channels, 2 classes). See the module docstring for input and output."""

    stride = 16
    in_channels = 4

    def __init__(self):
        super().__init__()
        self._frozen_bn: list[str] = []
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

    def encoder_modules(self) -> list[nn.Module]:
        """The contracting path: `inc` and the four `down` blocks."""
        return [self.inc, self.down1, self.down2, self.down3, self.down4]

    def encoder_stages(self) -> list[list[nn.Module]]:
        """One stage per resolution, shallowest first (stride 1, 2, 4, 8, 16)."""
        return [[module] for module in self.encoder_modules()]

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Their N x 2 x H x W logits for this project's N x 4 x H x W input (see the module docstring)."""
        height, width = x.shape[-2:]
        # Padded before scaling, so the padding reads as masked-out pixels (black, no texture: -1), not as mid-grey.
        x = moon_scaling(pad_to_multiple(x, self.stride), zero_map_quirk=not self.training)
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
