"""What a training checkpoint holds: the objects that learn and the run's progress, saved and restored
exactly (random generators included), so a resumed run replays what an uninterrupted one would do."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from config import Config, config_to_dict
from engine.checkpoint import model_state
from losses import DiceFocalLoss, TextureLoss

CHECKPOINT_FORMAT = 1


@dataclass
class Learner:
    """The model and what updates it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    loss_fn: DiceFocalLoss | TextureLoss


@dataclass
class TrainState:
    """A run's progress; with a `Learner`, everything a checkpoint holds."""

    threshold: float  # the validation-chosen threshold of the latest epoch
    run_id: str = ""
    epoch: int = 0  # completed epochs
    step: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0

    def record_epoch(self, selected: float, metric: str, threshold: float) -> bool:
        """Note a completed epoch's selection metric and threshold; True when it is the best so far."""
        self.threshold = threshold
        improved = is_better(selected, self.best_metric, metric)
        if improved:
            self.best_metric, self.best_epoch = selected, self.epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return improved

    def checkpoint(
        self, learner: Learner, cfg: Config, val_metrics: dict[str, float], wandb_id: str | None, interrupted: bool = False
    ) -> dict[str, Any]:
        """The checkpoint of this moment: plain tensors and containers only (weights_only-safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": model_state(learner.model),
            "optimizer": learner.optimizer.state_dict(),
            "scheduler": learner.scheduler.state_dict(),
            "scaler": learner.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "threshold": self.threshold,
            "epochs_without_improvement": self.epochs_without_improvement,
            "val_metrics": {k: float(v) for k, v in val_metrics.items()},
            "rng": rng_state(),
            "interrupted": interrupted,
            "config": config_to_dict(cfg),
            "run_id": self.run_id,
            "wandb_id": wandb_id,
        }

    def restore(self, checkpoint: dict[str, Any], learner: Learner) -> None:
        """Continue from `checkpoint`: weights, optimizer, scheduler, scaler, progress and generators."""
        learner.model.load_state_dict(checkpoint["model"])
        learner.optimizer.load_state_dict(checkpoint["optimizer"])
        learner.scheduler.load_state_dict(checkpoint["scheduler"])
        learner.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.best_metric, self.best_epoch = checkpoint["best_metric"], checkpoint["best_epoch"]
        self.threshold = checkpoint["threshold"]
        self.epochs_without_improvement = checkpoint["epochs_without_improvement"]
        self.run_id = checkpoint.get("run_id") or self.run_id
        set_rng_state(checkpoint["rng"])


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None or not math.isfinite(best):
        return math.isfinite(value)
    return value < best if metric in ("val_loss", "val_mae") else value > best


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch generator states as plain tensors and containers (weights_only-safe)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "gauss": [int(np_state[3]), float(np_state[4])],
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["gauss"][0], numpy["gauss"][1]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
