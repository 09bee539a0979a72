"""The networks, by name: `build_model(model_config)` builds `model.arch`.

Every architecture takes float N x C x H x W in [0, 1], any H and W (C = 3: RGB; C = 4 with
`model.input=rgb_texture`: RGB + texture map, unet/inputs.py) and returns N x 1 x H x W wrinkle logits
(sigmoid gives the probability; a two-class network returns logit1 - logit0), its own normalization and
padding inside, so training, evaluation and prediction treat them all alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from engine.errors import UnknownNameError
from unet.inputs import INPUT_CHANNELS
from unet.unet_model import AttentionUNet, encoder_names

if TYPE_CHECKING:
    from config import ModelConfig

__all__ = ["ARCHITECTURES", "AttentionUNet", "build_model", "encoder_names"]

ARCHITECTURES = ("attention_unet", "smp_unet", "unetplusplus", "seed_unet", "moon_unet", "swin_unetr")


def build_model(cfg: ModelConfig, encoder_weights: str | bool | None = True) -> nn.Module:
    """The configured architecture with its freezing policy applied.

    `encoder_weights=False` skips loading pretrained encoder weights (used when a checkpoint's own
    weights are about to be loaded, so nothing is downloaded for nothing).
    """
    weights = cfg.encoder_weights if encoder_weights is True else None
    in_channels = INPUT_CHANNELS[cfg.input]
    if cfg.arch == "attention_unet":
        model = AttentionUNet(
            encoder_name=cfg.encoder,
            encoder_weights=weights,
            decoder_channels=tuple(cfg.decoder_channels),
            attention=cfg.attention,
            dropout=cfg.dropout,
            full_res_skip_channels=cfg.full_res_skip_channels,
            in_channels=in_channels,
        )
    elif cfg.arch in ("smp_unet", "unetplusplus"):
        from unet.smp_models import SmpSegmenter

        model = SmpSegmenter(cfg.arch, cfg.encoder, weights, cfg.decoder_channels, in_channels)
    elif cfg.arch == "seed_unet":
        from unet.seed_unet import SeedUNet

        model = SeedUNet(pretrained_encoder=weights == "imagenet", dropout=cfg.dropout, in_channels=in_channels)
    elif cfg.arch == "moon_unet":  # config.py requires input rgb_texture and no encoder weights for these two
        from unet.moon_unet import MoonUNet

        model = MoonUNet()
    elif cfg.arch == "swin_unetr":
        from unet.swin_unetr import SwinUNETR

        model = SwinUNETR()
    else:
        raise UnknownNameError(f"model.arch: unknown architecture {cfg.arch!r}; valid: {', '.join(ARCHITECTURES)}")
    model.freeze_encoder(cfg.freeze_encoder, cfg.unfrozen_stages)
    return model
