"""Blocks the published U-Nets share, under the module names their released weights use (milesial's
Pytorch-UNet layout, which both Moon et al.'s U-Net and the seed's decoder follow)."""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Module):
    """(3x3 conv without bias, BN, ReLU) x 2, optionally dropout: `double_conv.{0,1,3,4}` (dropout, if
    any, is `double_conv.6` and holds no weights)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        mid_channels = mid_channels or out_channels
        layers = [
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        self.double_conv = nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout > 0 else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class OutConv(nn.Module):
    """The 1x1 output conv, named `outc.conv`."""

    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
