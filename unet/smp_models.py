"""segmentation-models-pytorch's Unet and UnetPlusPlus with this project's conventions inside.

Kim et al. 2024's wrinkle model is a UNet++ with a ResNeXt-50 encoder (`model.arch=unetplusplus
model.encoder=resnext50_32x4d`); smp's plain Unet is the reference the architecture benchmark compares
against. As for every architecture here: float RGB (or RGB + texture map) in [0, 1] in, any H and W, wrinkle logits out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unet.freezing import EncoderFreezing
from unet.inputs import Normalize, widen_input
from unet.unet_model import build_encoder
from unet.unet_parts import pad_to_multiple

SMP_ARCHS = {"smp_unet": "Unet", "unetplusplus": "UnetPlusPlus"}


class SmpSegmenter(EncoderFreezing):
    """An smp Unet / UnetPlusPlus (`net`): ImageNet normalization and padding to a multiple of 32 inside,
    N x 1 x H x W logits out. Pretrained encoder weights come through `build_encoder` (cache first, one
    quick check of the hub, or a local file), never through a silent download."""

    def __init__(self, arch: str, encoder_name: str, encoder_weights: str | None, decoder_channels: Sequence[int], in_channels: int = 3):
        super().__init__()
        import segmentation_models_pytorch as smp

        depth = len(decoder_channels)
        self.net = getattr(smp, SMP_ARCHS[arch])(
            encoder_name=encoder_name, encoder_weights=None, encoder_depth=depth, decoder_channels=tuple(decoder_channels), classes=1
        )
        if encoder_weights is not None:
            self.net.encoder.load_state_dict(build_encoder(encoder_name, encoder_weights, depth=depth).state_dict())
        widen_input(self.net.encoder, in_channels)  # after the pretrained weights: the texture filters start from them
        self.in_channels = in_channels
        self.normalize = Normalize(in_channels)
        self.stride = 2**depth
        self._frozen_bn: list[str] = []

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(self.normalize(x), self.stride)
        return self.net(x)[..., :height, :width]
