"""Running a model: device and precision choice, checkpoint loading, batched scoring of a data loader.

Validation in train.py and evaluate.py both call `score_loader`, so they compute identical metrics.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm import tqdm

from config import Config, ConfigError
from engine.checkpoint import CheckpointError, checkpoint_config, load_checkpoint, non_finite_tensors, state_mismatch
from engine.errors import UnknownNameError
from engine.tiling import tiled_probabilities
from metrics import SegmentationMeter, TextureMeter

if TYPE_CHECKING:
    from engine.onnx_model import OnnxNetwork

log = logging.getLogger(__name__)

TTA_MODES = ("none", "hflip")


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present; asking for CUDA without it is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("experiment.device=cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def inference_amp(trained_amp: str, device: torch.device) -> str:
    """The autocast a model runs under for inference on `device`: as trained, except that fp16 (a CUDA
    speed-up; the weights are float32 either way) runs in float32 where there is no CUDA."""
    return "off" if trained_amp == "fp16" and device.type != "cuda" else trained_amp


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast for "bf16" / "fp16", a no-op for "off"; fp16 is CUDA-only."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs CUDA; use bf16 on the CPU")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_model_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 N x 3 x H x W on any device -> float [0, 1] on `device`, channels-last if asked."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[nn.Module, Config, dict[str, Any]]:
    """The model of a checkpoint, in eval mode on `device`, with its config and the raw checkpoint.

    Weights holding NaN or infinity (a diverged run) are refused: they predict nothing, silently; so is a
    texture-task (stage 1) checkpoint, which predicts texture maps, not wrinkle probabilities."""
    from unet import build_model

    state = load_checkpoint(checkpoint)
    cfg = checkpoint_config(state, checkpoint)
    bad = non_finite_tensors(state["model"])
    if bad:
        raise CheckpointError(
            f"{checkpoint}: {len(bad)} weight tensors hold NaN or infinity (e.g. {bad[0]}): the run that wrote it diverged"
        )
    if cfg.train.task != "segmentation":
        # A stage-1 network predicts texture maps: thresholding them would pass for wrinkle masks.
        raise CheckpointError(
            f"{checkpoint}: trained for train.task={cfg.train.task} (texture maps, stage 1), not wrinkle masks; "
            "fine-tune it first (model.init_from, configs/finetune_manual.yaml), and see its metrics.csv for val_mae / val_psnr"
        )
    model = build_model(cfg.model, encoder_weights=False)
    load_weights(model, state["model"], checkpoint)
    model.to(device).eval()
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, cfg, state


RUNTIMES = ("torch", "onnx")


def is_onnx_file(path: str | Path) -> bool:
    """An ONNX model (by its suffix), as opposed to a PyTorch checkpoint."""
    return Path(path).suffix.lower() == ".onnx"


def load_network(
    path: str | Path, device: torch.device, runtime: str | None = None, threads: int | None = None
) -> tuple[nn.Module | OnnxNetwork, Config, dict[str, Any]]:
    """What predict.py and evaluate.py run: (network, config, facts with "threshold" and "epoch").

    `runtime` "torch" loads a .pt checkpoint; "onnx" runs an export.py `.onnx` file in ONNX Runtime, or
    exports a .pt checkpoint in memory first; None picks by the file's suffix. `threads` sets PyTorch's
    intra-op threads, and ONNX Runtime uses as many as PyTorch does (None: PyTorch's default, the cores)."""
    from engine.onnx_model import OnnxNetwork, export_checkpoint, read_onnx, source_label

    if runtime is None:
        runtime = "onnx" if is_onnx_file(path) else "torch"
    if runtime not in RUNTIMES:
        raise UnknownNameError(f"runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if is_onnx_file(path):
        if runtime == "torch":
            raise ConfigError(f"--runtime torch needs a PyTorch checkpoint (.pt); {path} is an ONNX model: use --runtime onnx")
        data, cfg, facts = read_onnx(path)
        return OnnxNetwork(data, str(path), device, torch.get_num_threads()), cfg, facts
    # A model bound for ONNX Runtime is exported from the CPU: it never needs to be on `device`.
    model, cfg, state = load_model(path, device if runtime == "torch" else torch.device("cpu"))
    facts = {"threshold": state.get("threshold"), "epoch": state.get("epoch")}
    if runtime == "torch":
        return model, cfg, facts
    log.info("exporting %s to ONNX in memory (export.py writes it once, for reuse)", path)
    with tempfile.TemporaryDirectory(prefix="onnx-") as scratch:
        exported = export_checkpoint(model, cfg, Path(scratch) / "model.onnx", facts["threshold"], facts["epoch"], source_label(path))
        data = exported.read_bytes()
    return OnnxNetwork(data, str(path), device, torch.get_num_threads()), cfg, facts


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], checkpoint: str | Path) -> None:
    """Load a checkpoint's weights into the model its config describes; a mismatch (an edited config,
    another project's file) is a CheckpointError naming the file and the first differing keys."""
    mismatch = state_mismatch(model, weights)
    if mismatch:
        raise CheckpointError(f"{checkpoint}: its weights do not fit the model its config describes: {mismatch}")
    model.load_state_dict(weights)


def resolve_threshold(
    threshold: str | float | None, checkpoint_threshold: float | None, cfg: Config, checkpoint: str | Path = "checkpoint"
) -> float:
    """None: eval.threshold from the config; "auto": the validation-chosen threshold stored in `checkpoint`;
    else the number given. Anything but a finite probability strictly inside (0, 1) is refused."""
    if threshold is None:
        return cfg.eval.threshold
    if threshold == "auto":
        if checkpoint_threshold is None:
            raise ConfigError("--threshold auto: this checkpoint records no validation threshold")
        if isinstance(checkpoint_threshold, bool) or not isinstance(checkpoint_threshold, (int, float)) or not 0 < checkpoint_threshold < 1:
            raise CheckpointError(
                f"{checkpoint}: its stored threshold {checkpoint_threshold!r} is not a probability in (0, 1); pass --threshold 0.5 (or another value)"
            )
        return float(checkpoint_threshold)
    try:
        value = float(threshold)
    except ValueError:
        raise ConfigError(f"--threshold must be a number in (0, 1) or 'auto', got {threshold!r}") from None
    if not 0 < value < 1:  # also false for NaN
        raise ConfigError(f"--threshold must be in (0, 1) or 'auto', got {threshold}")
    return value


Predictor = Callable[[dict], tuple["torch.Tensor | None", torch.Tensor]]  # batch -> (logits or None, probs N x H x W)


def model_predictor(
    model: nn.Module | OnnxNetwork,
    device: torch.device,
    amp: str = "off",
    channels_last: bool = False,
    tta: str = "none",
    tile: int = 0,
    overlap: int = 0,
) -> Predictor:
    """A predictor for `score_loader`: the model (a PyTorch module in eval mode, or an ONNX Runtime
    session: probabilities only, logits None, so no loss), optionally averaged with its mirror image.
    With `tile` > 0, images larger than tile x tile are read in overlapping windows (engine/tiling.py)
    and only probabilities come back."""
    if tta not in TTA_MODES:
        raise UnknownNameError(f"tta {tta!r}; valid: {', '.join(TTA_MODES)}")
    if isinstance(model, nn.Module):
        model.eval()
    else:
        channels_last = False  # ONNX Runtime takes contiguous NCHW arrays: a channels-last copy would only be undone

    def run(x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        if not isinstance(model, nn.Module):
            return None, model(x)
        with autocast(device, amp):
            logits = model(x).float()
        return logits, torch.sigmoid(logits)[:, 0]

    def forward(x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits, probs = run(x)
        if tta == "hflip":
            probs = (probs + run(x.flip(-1))[1].flip(-1)) / 2
        return logits, probs

    @torch.no_grad()
    def predict(batch: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
        x = to_model_input(batch["image"], device, channels_last)
        if tile and max(x.shape[-2:]) > tile:
            return None, tiled_probabilities(lambda crops: forward(crops)[1], x, tile, overlap)
        return forward(x)

    return predict


def score_loader(
    predictor: Predictor,
    loader,
    device: torch.device,
    cfg: Config,
    loss_fn: nn.Module | None = None,
    threshold: float | None = None,
    desc: str = "validate",
) -> tuple[dict[str, float], SegmentationMeter | TextureMeter, torch.Tensor | None]:
    """All metrics over `loader` on the configured region, and the loss when `loss_fn` is given and the
    predictor gives logits: (results, meter, loss sums). The loss is `loss_fn.from_sums` of sums over
    every pixel of the loader (float64), so it does not depend on the batch size; processes that each
    scored a shard add their sums (and merge their meters) to get the figures of the whole set. With
    train.task=texture the batches' `mask` entries are texture maps (0..255), scored by MAE, RMSE and PSNR."""
    texture = cfg.train.task == "texture"
    meter = (
        TextureMeter()
        if texture
        else SegmentationMeter(threshold if threshold is not None else cfg.eval.threshold, tolerance=cfg.eval.tolerance_px)
    )
    loss_sums = None
    for batch in tqdm(loader, desc=desc, leave=False, unit="batch", dynamic_ncols=True):
        logits, probs = predictor(batch)
        target = batch["mask"].to(device)
        skin = batch["face_mask"].to(device)
        region = skin[:, 0].bool() if cfg.eval.region == "skin" else None
        if loss_fn is not None and logits is not None:
            sums = loss_fn.sums(logits, target, skin if cfg.loss.region == "skin" else None).double()
            loss_sums = sums if loss_sums is None else loss_sums + sums
        if texture:
            meter.update(probs.to(device), target[:, 0], region)
        else:
            meter.update(probs.to(device), target[:, 0].bool(), region, batch["id"])
    results = meter.compute()
    if loss_sums is not None:
        results["loss"] = float(loss_fn.from_sums(loss_sums))
    return results, meter, loss_sums
