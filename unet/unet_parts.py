"""Building blocks of the attention U-Net, one idea each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """3x3 convolution, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): weights a skip connection by the decoder's context."""

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int):
        super().__init__()
        self.gate_proj = nn.Sequential(nn.Conv2d(gate_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels))
        self.skip_proj = nn.Sequential(nn.Conv2d(skip_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels))
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        attention = self.psi(self.relu(self.gate_proj(gate) + self.skip_proj(skip)))
        return skip * attention


class DecoderBlock(nn.Module):
    """Transposed-conv 2x upsampling, attention-gated skip concat, two conv-BN-ReLU, dropout."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, attention: bool, dropout: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.gate = (
            AttentionGate(out_channels, skip_channels, max(min(out_channels, skip_channels) // 2, 4))
            if attention and skip_channels > 0
            else None
        )
        self.conv1 = ConvBNReLU(out_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            if self.gate is not None:
                skip = self.gate(x, skip)
            x = torch.cat([x, skip], dim=1)
        return self.dropout(self.conv2(self.conv1(x)))


class FullResolutionStem(nn.Module):
    """A light conv on the input image: a full-resolution skip so 1-2 px lines keep their exact position."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class OutputHead(nn.Conv2d):
    """1x1 convolution to one logit per pixel."""

    def __init__(self, in_channels: int, classes: int = 1):
        super().__init__(in_channels, classes, kernel_size=1)


def pad_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Zero-pad an N x C x H x W batch on the right and bottom to a multiple of `stride` (callers crop
    their output back to H x W): the one padding convention of every network here."""
    pad_h, pad_w = -x.shape[-2] % stride, -x.shape[-1] % stride
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x
