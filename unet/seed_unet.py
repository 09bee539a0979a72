"""SeedUNet: the seed blog's ResNet50 U-Net (no attention), with its published module names.

The released weights of github.com/rmsandu/FFHQ-detect-face-wrinkles (390 keys, 72,293,185 parameters)
load into it strictly: `python -m unet.import_weights seed-unet FILE --output CKPT`. What the seed's
code did outside the network (ImageNet normalization, sigmoid, any input size) is done here inside it,
so the model follows this project's conventions like AttentionUNet does.
"""

from __future__ import annotations

import torch
from torch import nn

from unet.freezing import EncoderFreezing
from unet.inputs import Normalize, expand_first_conv
from unet.published_parts import DoubleConv, OutConv
from unet.unet_parts import pad_to_multiple

SEED_KEY_COUNT = 390
SEED_PARAMETER_COUNT = 72_293_185


class SeedUp(nn.Module):
    """A transposed conv (k2 s2) halving the channels, the skip (if any) before it in the concatenation, a double conv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + skip_channels, out_channels, dropout=dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            # The seed concatenates [skip, upsampled]: its released weights expect this channel order.
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class SeedUNet(EncoderFreezing):
    """The seed's U-Net: torchvision ResNet50 encoder, five transposed-conv decoder blocks, no attention.

    Input: float N x in_channels x H x W in [0, 1] (RGB as the seed's release; RGB + texture map trains a
    4-channel variant, conv1's texture filters started from the RGB ones), any H and W (padded internally
    to a multiple of 32). ImageNet normalization happens inside the model (no state-dict keys).
    Output: N x 1 x H x W raw logits; sigmoid gives the wrinkle probability (the seed thresholds at 0.5).
    """

    stride = 32

    def __init__(self, pretrained_encoder: bool = False, dropout: float = 0.2, in_channels: int = 3):
        super().__init__()
        from torchvision.models import ResNet50_Weights, resnet50

        # Only an explicit request downloads (torchvision's cache); the import CLI and tests never ask.
        resnet = resnet50(weights=ResNet50_Weights.DEFAULT if pretrained_encoder else None)
        self.in_channels = in_channels
        self.normalize = Normalize(in_channels)
        if in_channels != 3:  # a texture channel: its filters start from the (pretrained) RGB ones
            resnet.conv1 = expand_first_conv(resnet.conv1, in_channels)
        # The seed keeps the max-pool outside input_layer (its `pool`), so the stride-2 features are the
        # 64-channel skip of up4; a parameter-free module adds no keys either way.
        self.input_layer = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)
        self.pool = resnet.maxpool
        self.encoder1 = resnet.layer1  # 256 channels, stride 4
        self.encoder2 = resnet.layer2  # 512, stride 8
        self.encoder3 = resnet.layer3  # 1024, stride 16
        self.encoder4 = resnet.layer4  # 2048, stride 32
        self.up1 = SeedUp(2048, 1024, 1024, dropout)
        self.up2 = SeedUp(1024, 512, 512, dropout)
        self.up3 = SeedUp(512, 256, 256, dropout)
        self.up4 = SeedUp(256, 64, 128, dropout)
        self.up5 = SeedUp(128, 0, 64, dropout)  # back to full resolution; the seed has no skip here
        self.outc = OutConv(64, 1)
        self._frozen_bn: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(self.normalize(x), self.stride)
        x0 = self.input_layer(x)
        x1 = self.encoder1(self.pool(x0))
        x2 = self.encoder2(x1)
        x3 = self.encoder3(x2)
        y = self.encoder4(x3)
        y = self.up1(y, x3)
        y = self.up2(y, x2)
        y = self.up3(y, x1)
        y = self.up4(y, x0)
        y = self.up5(y, None)
        return self.outc(y)[..., :height, :width]

    def encoder_stages(self) -> list[list[nn.Module]]:
        """The encoder's modules by output stride, shallowest first: input_layer, encoder1..4."""
        return [[self.input_layer], [self.encoder1], [self.encoder2], [self.encoder3], [self.encoder4]]

    def encoder_modules(self) -> list[nn.Module]:
        """input_layer and encoder1..4 (the max-pool has no parameters)."""
        return [module for stage in self.encoder_stages() for module in stage]
