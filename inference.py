"""Running a model: device and precision choice, checkpoint loading, batched scoring of a data loader.

Validation in train.py and evaluate.py both call `score_loader`, so they compute identical metrics.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from checkpoint import checkpoint_config, load_checkpoint
from config import Config
from metrics import SegmentationMeter

TTA_MODES = ("none", "hflip")


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when present; asking for CUDA without it is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("experiment.device=cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast for "bf16" / "fp16", a no-op for "off"; fp16 is CUDA-only."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise RuntimeError("train.amp=fp16 needs CUDA; use bf16 on the CPU")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_model_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 N x 3 x H x W on any device -> float [0, 1] on `device`, channels-last if asked."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[nn.Module, Config, dict[str, Any]]:
    """The model of a checkpoint, in eval mode on `device`, with its config and the raw checkpoint."""
    from unet import build_model

    state = load_checkpoint(checkpoint)
    cfg = checkpoint_config(state, checkpoint)
    model = build_model(cfg.model, encoder_weights=False)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, cfg, state


Predictor = Callable[[dict], tuple["torch.Tensor | None", torch.Tensor]]  # batch -> (logits or None, probs N x H x W)


def model_predictor(model: nn.Module, device: torch.device, amp: str = "off", channels_last: bool = False, tta: str = "none") -> Predictor:
    """A predictor for `score_loader`: the model in eval mode, optionally averaged with its mirror image."""
    if tta not in TTA_MODES:
        raise KeyError(f"tta {tta!r}; valid: {', '.join(TTA_MODES)}")
    model.eval()

    @torch.no_grad()
    def predict(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_model_input(batch["image"], device, channels_last)
        with autocast(device, amp):
            logits = model(x).float()
        probs = torch.sigmoid(logits)[:, 0]
        if tta == "hflip":
            with autocast(device, amp):
                mirrored = model(x.flip(-1)).float()
            probs = (probs + torch.sigmoid(mirrored)[:, 0].flip(-1)) / 2
        return logits, probs

    return predict


def score_loader(
    predictor: Predictor,
    loader,
    device: torch.device,
    cfg: Config,
    loss_fn: nn.Module | None = None,
    threshold: float | None = None,
    desc: str = "validate",
) -> tuple[dict[str, float], SegmentationMeter]:
    """Mean loss (when the predictor gives logits) and all metrics over `loader`, on the configured region."""
    meter = SegmentationMeter(threshold if threshold is not None else cfg.eval.threshold, tolerance=cfg.eval.tolerance_px)
    total_loss, n_images = 0.0, 0
    for batch in tqdm(loader, desc=desc, leave=False, unit="batch", dynamic_ncols=True):
        logits, probs = predictor(batch)
        target = batch["mask"].to(device)
        skin = batch["face_mask"].to(device)
        region = skin if cfg.eval.region == "skin" else None
        if loss_fn is not None and logits is not None:
            loss_region = skin if cfg.loss.region == "skin" else None
            total_loss += float(loss_fn(logits, target, loss_region)) * len(target)
            n_images += len(target)
        meter.update(probs.to(device), target[:, 0].bool(), None if region is None else region[:, 0].bool(), batch["id"])
    results = meter.compute()
    if loss_fn is not None:
        results["loss"] = total_loss / max(n_images, 1)
    return results, meter
