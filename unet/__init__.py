"""The attention U-Net: `build_model(model_config)` is the entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unet.unet_model import AttentionUNet, encoder_names

if TYPE_CHECKING:
    from config import ModelConfig

__all__ = ["AttentionUNet", "build_model", "encoder_names"]


def build_model(cfg: ModelConfig, encoder_weights: str | bool | None = True) -> AttentionUNet:
    """The configured AttentionUNet with its freezing policy applied.

    `encoder_weights=False` skips loading pretrained encoder weights (used when a checkpoint's own
    weights are about to be loaded, so nothing is downloaded for nothing).
    """
    weights = cfg.encoder_weights if encoder_weights is True else None
    model = AttentionUNet(
        encoder_name=cfg.encoder,
        encoder_weights=weights,
        decoder_channels=tuple(cfg.decoder_channels),
        attention=cfg.attention,
        dropout=cfg.dropout,
        full_res_skip_channels=cfg.full_res_skip_channels,
    )
    model.freeze_encoder(cfg.freeze_encoder, cfg.unfrozen_stages)
    return model
