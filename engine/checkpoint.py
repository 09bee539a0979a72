"""Checkpoints: plain tensors and containers, written atomically, loaded with weights_only=True."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from config import Config, ConfigError, config_from_dict
from engine.errors import WrinkleError
from engine.fileio import atomic_write


class CheckpointError(WrinkleError, ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weights (never a reference to the live ones), without DDP prefixes."""
    module = model.module if hasattr(model, "module") else model
    module = getattr(module, "_orig_mod", module)  # torch.compile wrapper
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in a state dict that hold NaN or infinity."""
    return [name for name, tensor in state.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def state_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """How `state` differs from what `model` holds (missing, unexpected and wrongly shaped keys, the first
    of each), or None when it loads strictly."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    found = [(what, keys) for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", reshaped)) if keys]
    return "; ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in found) + " keys" if found else None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to a temporary file beside `path`, fsync it, then rename: never a half-written file
    (a full disk is an OutputError naming `path`, and the temporary file is removed)."""
    with atomic_write(path, "wb", fsync=True) as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    state = load_torch_file(path, CheckpointError, "not a readable checkpoint", "copy it again or use another checkpoint")
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no 'model' and 'config' entries)")
    return state


def load_torch_file(path: Path, error: type[WrinkleError], what: str, way_out: str, label: str | None = None) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU. A file that does not load raises `error` in one
    line, `<label>: <what>: <why, in words>; <way_out>`: never torch's own text, which for a foreign pickle
    advises a way of loading that runs arbitrary code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torch raises many types (EOFError, RuntimeError, UnpicklingError, KeyError...) for foreign bytes
        raise error(f"{label or path}: {what}: {_unreadable_reason(path, err)}; {way_out}") from None


def _unreadable_reason(path: Path, err: Exception) -> str:
    """Why torch could not load `path`, in words."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    if "weights_only" in str(err) or "Unpickling" in type(err).__name__:
        return "it holds Python objects other than tensors and plain containers, which are never loaded (a file from another program?)"
    text = str(err).strip().splitlines()[0].split(". ")[0][:100] if str(err).strip() else ""
    detail = f"; {text}" if any(c.isalpha() for c in text) else ""
    return f"truncated or not a PyTorch file ({size} bytes{detail})"


def checkpoint_config(state: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    """The resolved config embedded in a checkpoint."""
    try:
        return config_from_dict(copy.deepcopy(state["config"]))
    except ConfigError as err:
        raise CheckpointError(f"{path}: embedded config does not fit this version's schema: {err}") from err
