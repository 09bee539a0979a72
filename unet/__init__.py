"""The networks, by name: `build_model(model_config)` builds `model.arch`.

Every architecture takes float RGB in [0, 1] (N x 3 x H x W, any H and W) and returns N x 1 x H x W
wrinkle logits, its own normalization and padding inside, so training, evaluation and prediction
treat them all alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from engine.errors import UnknownNameError
from unet.unet_model import AttentionUNet, encoder_names

if TYPE_CHECKING:
    from config import ModelConfig

__all__ = ["ARCHITECTURES", "AttentionUNet", "build_model", "encoder_names"]

ARCHITECTURES = ("attention_unet", "smp_unet", "unetplusplus", "seed_unet")


def build_model(cfg: ModelConfig, encoder_weights: str | bool | None = True) -> nn.Module:
    """The configured architecture with its freezing policy applied.

    `encoder_weights=False` skips loading pretrained encoder weights (used when a checkpoint's own
    weights are about to be loaded, so nothing is downloaded for nothing).
    """
    weights = cfg.encoder_weights if encoder_weights is True else None
    if cfg.arch == "attention_unet":
        model = AttentionUNet(
            encoder_name=cfg.encoder,
            encoder_weights=weights,
            decoder_channels=tuple(cfg.decoder_channels),
            attention=cfg.attention,
            dropout=cfg.dropout,
            full_res_skip_channels=cfg.full_res_skip_channels,
        )
    elif cfg.arch in ("smp_unet", "unetplusplus"):
        from unet.smp_models import SmpSegmenter

        model = SmpSegmenter(cfg.arch, cfg.encoder, weights, cfg.decoder_channels)
    elif cfg.arch == "seed_unet":
        from unet.seed_unet import SeedUNet

        model = SeedUNet(pretrained_encoder=weights == "imagenet", dropout=cfg.dropout)
    else:
        raise UnknownNameError(f"model.arch: unknown architecture {cfg.arch!r}; valid: {', '.join(ARCHITECTURES)}")
    model.freeze_encoder(cfg.freeze_encoder, cfg.unfrozen_stages)
    return model
