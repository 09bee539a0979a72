"""The training engine behind train.py: one call, `fit(cfg)`, trains a run and returns its folder.

Every epoch's randomness (shuffling, augmentation, dropout) is derived from (experiment.seed, epoch),
so a resumed run replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import logging
import math
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from checkpoint import CheckpointError, checkpoint_config, load_checkpoint, model_state, save_checkpoint
from config import Config, ConfigError, config_to_dict, load_config, save_config
from data.dataset import build_dataset, make_loader, split_samples
from inference import autocast, model_predictor, resolve_device, score_loader, to_model_input
from losses import DiceFocalLoss
from run_log import RunLog
from unet import build_model

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message says why."""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def new_run_dir(cfg: Config) -> Path:
    """A fresh `<output_dir>/<name>-<timestamp>` folder (suffixed if that name is taken)."""
    base = Path(cfg.experiment.output_dir) / f"{cfg.experiment.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir = base.with_name(f"{base.name}-{n}")
        n += 1
    (run_dir / "checkpoints").mkdir(parents=True)
    return run_dir


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None or not math.isfinite(best):
        return math.isfinite(value)
    return value < best if metric == "val_loss" else value > best


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over the parameters that train (frozen encoder stages are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas))


def load_initial_weights(model: nn.Module, path: str) -> None:
    """`model.init_from`: copy weights from a checkpoint (or a plain state dict), reporting key mismatches."""
    state = torch.load(path, map_location="cpu", weights_only=True) if Path(path).is_file() else None
    if state is None:
        raise CheckpointError(f"model.init_from: checkpoint not found: {path}")
    weights = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise CheckpointError(f"model.init_from: {path} holds no state dict")
    own = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(matching))
    unexpected = sorted(set(weights) - set(own))
    reshaped = sorted(k for k in weights if k in own and own[k].shape != weights[k].shape)
    model.load_state_dict(matching, strict=False)
    log.info("init_from %s: loaded %d tensors; %d missing, %d unexpected, %d of another shape", path, len(matching), len(missing), len(unexpected), len(reshaped))
    for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", reshaped)):
        if keys:
            log.warning("init_from: %s keys (first 5): %s", name, ", ".join(keys[:5]))


class Trainer:
    """Holds one run's state: model, optimizer, scheduler, data, run folder and progress."""

    def __init__(self, cfg: Config, resume: str | Path | None = None):
        resume_state = load_checkpoint(resume) if resume is not None else None
        self.cfg = cfg
        seed_everything(cfg.experiment.seed, cfg.experiment.deterministic)
        self.device = resolve_device(cfg.experiment.device)

        splits = split_samples(cfg)
        self.train_set = build_dataset(cfg, "train", splits["train"])
        self.val_set = build_dataset(cfg, "val", splits["val"])
        log.info("data: %d train, %d val images at %d px", len(self.train_set), len(self.val_set), cfg.data.image_size)
        pin = self.device.type == "cuda"
        self.train_loader = make_loader(self.train_set, cfg.train.batch_size, True, cfg.data.num_workers, cfg.experiment.seed, pin, drop_last=len(self.train_set) > cfg.train.batch_size)
        self.val_loader = make_loader(self.val_set, cfg.eval.batch_size, False, cfg.data.num_workers, cfg.experiment.seed, pin)

        self.model = build_model(cfg.model, encoder_weights=resume_state is None and cfg.model.init_from is None)
        if cfg.model.init_from and resume_state is None:
            load_initial_weights(self.model, cfg.model.init_from)
        self.model.to(self.device)
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode=cfg.scheduler.mode, factor=cfg.scheduler.factor, patience=cfg.scheduler.patience, min_lr=cfg.scheduler.min_lr
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        self.loss_fn = DiceFocalLoss(cfg.loss.dice_weight, cfg.loss.focal_weight, cfg.loss.focal_alpha, cfg.loss.focal_gamma, cfg.loss.dice_smooth)

        self.epoch = 0  # completed epochs
        self.best_metric: float | None = None
        self.best_epoch = 0
        self.best_threshold = cfg.eval.threshold
        self.epochs_without_improvement = 0
        self.step = 0
        wandb_id = None
        if resume_state is not None:
            self.run_dir = Path(resume).resolve().parent.parent
            self._restore(resume_state)
            wandb_id = resume_state.get("wandb_id")
            log.info("resuming %s after epoch %d", self.run_dir, self.epoch)
        else:
            self.run_dir = new_run_dir(cfg)
            save_config(cfg, self.run_dir / "config.yaml")
        self.run_log = RunLog(
            self.run_dir, config_to_dict(cfg), cfg.logging.wandb, cfg.logging.project, cfg.logging.entity, self.run_dir.name, wandb_id
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self, val_metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "threshold": self.best_threshold,
            "epochs_without_improvement": self.epochs_without_improvement,
            "val_metrics": {k: float(v) for k, v in val_metrics.items()},
            "config": config_to_dict(self.cfg),
            "wandb_id": self.run_log.wandb_id,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.best_threshold = state["threshold"]
        self.epochs_without_improvement = state["epochs_without_improvement"]

    # -- loops ---------------------------------------------------------------------------------

    def _reseed_epoch(self) -> None:
        """Shuffling, augmentation and dropout of epoch e depend on (seed, e) only: exact resume."""
        seed = self.cfg.experiment.seed * 1000 + self.epoch
        torch.manual_seed(seed)
        self.train_loader.generator.manual_seed(seed)
        self.train_set.reseed(seed)  # workers reseed themselves from the generator

    def train_one_epoch(self) -> float:
        cfg, model = self.cfg, self.model
        model.train()
        self._reseed_epoch()
        total, count, bad_steps = 0.0, 0, 0
        started = time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}", leave=False, unit="batch", dynamic_ncols=True)
        for batch in bar:
            x = to_model_input(batch["image"], self.device, cfg.train.channels_last)
            target = batch["mask"].to(self.device, non_blocking=True)
            region = batch["face_mask"].to(self.device, non_blocking=True) if cfg.loss.region == "skin" else None
            with autocast(self.device, cfg.train.amp):
                logits = model(x)
            loss = self.loss_fn(logits.float(), target, region)
            if not torch.isfinite(loss):
                bad_steps += 1
                log.warning("non-finite loss at step %d: step skipped (%d in a row)", self.step, bad_steps)
                if bad_steps >= 5:
                    raise TrainingError("the loss was non-finite 5 steps in a row: lower optim.lr, check the data, or turn train.amp off")
                self.optimizer.zero_grad(set_to_none=True)
                continue
            bad_steps = 0
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            total += loss.item() * len(x)
            count += len(x)
            rate = count / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{total / count:.4f}", img_s=f"{rate:.1f}")
            self.run_log.log_step(self.step, {"train/step_loss": loss.item()})
        return total / max(count, 1)

    def fit(self) -> Path:
        cfg = self.cfg
        select = cfg.train.select_metric
        try:
            while self.epoch < cfg.train.epochs:
                started = time.perf_counter()
                train_loss = self.train_one_epoch()
                predictor = model_predictor(self.model, self.device, cfg.train.amp, cfg.train.channels_last)
                val, _ = score_loader(predictor, self.val_loader, self.device, cfg, self.loss_fn)
                self.epoch += 1
                monitored = val["loss"] if cfg.scheduler.monitor == "val_loss" else val[cfg.scheduler.monitor.removeprefix("val_")]
                self.scheduler.step(monitored)
                row = {"epoch": self.epoch, "train_loss": train_loss, "lr": self.optimizer.param_groups[0]["lr"]}
                row.update({f"val_{k}": v for k, v in val.items() if k not in ("n_images", "n_empty_both")})
                row["epoch_seconds"] = round(time.perf_counter() - started, 2)
                selected = row[select]
                if is_better(selected, self.best_metric, select):
                    self.best_metric, self.best_epoch = selected, self.epoch
                    self.best_threshold = val["best_threshold"]
                    self.epochs_without_improvement = 0
                    save_checkpoint(self.run_dir / "checkpoints" / "best.pt", self._state(val))
                else:
                    self.epochs_without_improvement += 1
                self.run_log.log_epoch(self.step, row)
                save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self._state(val))
                log.info(
                    "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_iou %.4f  val_dice %.4f  val_auc %.4f  lr %.2e  (%.1fs)",
                    self.epoch, cfg.train.epochs, train_loss, val["loss"], val["iou"], val["dice"], val["auc"], row["lr"], row["epoch_seconds"],
                )
                patience = cfg.train.early_stopping_patience
                if patience and self.epochs_without_improvement >= patience:
                    log.info("early stopping: %s did not improve for %d epochs", select, patience)
                    break
        finally:
            self.run_log.close()
        log.info("best %s %.4f at epoch %d; run folder %s", select, self.best_metric if self.best_metric is not None else float("nan"), self.best_epoch, self.run_dir)
        return self.run_dir


RESUMABLE_OVERRIDES = ("train.epochs", "train.early_stopping_patience", "data.num_workers", "logging.wandb")


def resume_config(checkpoint: str | Path, overrides: list[str]) -> Config:
    """A resumed run's config: the checkpoint's own, plus overrides that do not change the run's course."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE_OVERRIDES:
            raise ConfigError(f"{key}: cannot be changed when resuming (allowed: {', '.join(RESUMABLE_OVERRIDES)}); use model.init_from to start a new run from these weights")
    state = load_checkpoint(checkpoint)
    return load_config(None, overrides, base=config_to_dict(checkpoint_config(state, checkpoint)))


def fit(cfg: Config, resume: str | Path | None = None) -> Path:
    """Train per `cfg` and return the run folder; with `resume`, continue that checkpoint's run."""
    return Trainer(cfg, resume).fit()
