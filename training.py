"""The training engine behind train.py: `fit(cfg)` trains a run and returns its folder.

Every epoch's randomness (order, augmentation, patches, dropout) is derived from (experiment.seed,
epoch, item), so a resumed run replays exactly what an uninterrupted one would have done. Under
`torchrun`, each process trains a shard with DistributedDataParallel; metrics are reduced across
ranks before anything is logged, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from checkpoint import CheckpointError, checkpoint_config, load_checkpoint, model_state, non_finite_tensors, save_checkpoint
from config import Config, ConfigError, config_to_dict, load_config, save_config
from data.dataset import build_dataset, make_loader, require_wrinkles, split_samples
from errors import OutputError, WrinkleError, describe_os_error
from fileio import atomic_write, write_text_atomic
from inference import autocast, model_predictor, resolve_device, score_loader, to_model_input
from losses import N_SUMS, DiceFocalLoss
from metrics import SegmentationMeter
from run_log import RunLog
from unet import build_model
from visualize import overlay

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
INTERRUPTED = "interrupted.pt"  # the mid-epoch state written on Ctrl-C, beside best.pt and last.pt
RUN_FILE = "run.json"  # in each run folder: the run id its checkpoints carry
RESUMABLE_OVERRIDES = ("train.epochs", "train.early_stopping_patience", "data.num_workers", "logging.wandb")


class TrainingError(WrinkleError, RuntimeError):
    """Training cannot go on (non-finite losses, out of memory); the message says why and what to try."""


# -- processes -----------------------------------------------------------------------------------


class Distributed:
    """This process's place in a `torchrun` job (a single process when not launched by torchrun)."""

    def __init__(self, device_name: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_name)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_agree(self, flag: bool, device: torch.device) -> bool:
        """True when `flag` is true on every rank (one all-reduce; every rank must call it)."""
        if not self.enabled:
            return flag
        vote = torch.tensor([0.0 if flag else 1.0], device=device)
        dist.all_reduce(vote)
        return vote.item() == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch generator states as plain tensors and containers (weights_only-safe)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]), "gauss": [int(np_state[3]), float(np_state[4])]},
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


def weights_checksum(model: nn.Module) -> str:
    """SHA-1 of all parameters and buffers, for checking that ranks hold identical weights."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model_state(model).items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()


# -- set-up helpers ------------------------------------------------------------------------------


def new_run_dir(cfg: Config) -> Path:
    """A fresh `<output_dir>/<name>-<timestamp>` folder (suffixed if that name is taken)."""
    base = Path(cfg.experiment.output_dir) / f"{cfg.experiment.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir = base.with_name(f"{base.name}-{n}")
        n += 1
    try:
        (run_dir / "checkpoints").mkdir(parents=True)
    except OSError as err:
        raise OutputError(f"experiment.output_dir: cannot create {describe_os_error(err, run_dir)}") from err
    return run_dir


def start_run_folder(cfg: Config) -> tuple[Path, str]:
    """A new run folder holding config.yaml and run.json (the run id its checkpoints carry)."""
    run_dir = new_run_dir(cfg)
    run_id = uuid.uuid4().hex
    save_config(cfg, run_dir / "config.yaml")
    write_text_atomic(run_dir / RUN_FILE, json.dumps({"run_id": run_id, "created": datetime.now().isoformat(timespec="seconds")}) + "\n")
    return run_dir, run_id


def run_folder_of(checkpoint: str | Path, state: dict[str, Any]) -> Path | None:
    """The run folder a checkpoint belongs to, known by what it holds: `<run>/checkpoints/<file>` where
    `<run>/run.json` has the checkpoint's run id (or, for checkpoints older than run ids, where
    `<run>/config.yaml` is the checkpoint's config up to the overrides a resume may change). None when
    the checkpoint was copied elsewhere: a resume must not touch an unrelated folder's files."""
    path = Path(checkpoint).resolve()
    run_dir = path.parent.parent
    if path.parent.name != "checkpoints" or not (run_dir / "config.yaml").is_file():
        return None
    if state.get("run_id"):
        try:
            return run_dir if json.loads((run_dir / RUN_FILE).read_text())["run_id"] == state["run_id"] else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        saved = config_to_dict(load_config(run_dir / "config.yaml"))
    except ConfigError:
        return None
    ours = config_to_dict(checkpoint_config(state, checkpoint))
    for dotted in RESUMABLE_OVERRIDES:
        section, key = dotted.split(".")
        saved[section].pop(key, None), ours[section].pop(key, None)
    return run_dir if saved == ours else None


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None or not math.isfinite(best):
        return math.isfinite(value)
    return value < best if metric == "val_loss" else value > best


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over the parameters that train (frozen encoder stages are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas))


def load_initial_weights(model: nn.Module, path: str) -> dict[str, list[str]]:
    """`model.init_from`: copy weights from a checkpoint (or a plain state dict), reporting key mismatches."""
    if not Path(path).is_file():
        raise CheckpointError(f"model.init_from: checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"model.init_from: {path} is not a readable checkpoint ({type(err).__name__})") from err
    weights = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise CheckpointError(f"model.init_from: {path} holds no state dict")
    own = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    report = {
        "missing": sorted(set(own) - set(matching)),
        "unexpected": sorted(set(weights) - set(own)),
        "shape_mismatch": sorted(k for k in weights if k in own and own[k].shape != weights[k].shape),
    }
    model.load_state_dict(matching, strict=False)
    log.info("init_from %s: loaded %d tensors; %s", path, len(matching), ", ".join(f"{len(v)} {k}" for k, v in report.items()))
    for name, keys in report.items():
        if keys:
            log.warning("init_from: %s keys (first 5): %s", name, ", ".join(keys[:5]))
    return report


def resume_config(checkpoint: str | Path, overrides: list[str]) -> Config:
    """A resumed run's config: the checkpoint's own, plus overrides that do not change the run's course."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE_OVERRIDES:
            raise ConfigError(f"{key}: cannot be changed when resuming (allowed: {', '.join(RESUMABLE_OVERRIDES)}); use model.init_from to start a new run from these weights")
    state = load_checkpoint(checkpoint)
    return load_config(None, overrides, base=config_to_dict(checkpoint_config(state, checkpoint)))


def truncate_metrics(csv_path: Path, epochs: int) -> None:
    """Keep the rows of the first `epochs` epochs: a run killed between writing a row and its
    checkpoint repeats that epoch on resume, and must not log it twice."""
    if not csv_path.is_file():
        return
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [r for r in rows if r.get("epoch", "").isdigit() and int(r["epoch"]) <= epochs]
    if len(kept) != len(rows):
        fieldnames = list(rows[0].keys()) if rows else []
        with atomic_write(csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(kept)


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)) or "out of memory" in str(err).lower()


# -- the trainer ---------------------------------------------------------------------------------


class Trainer:
    """Holds one run's state: model, optimizer, scheduler, data, run folder and progress."""

    def __init__(self, cfg: Config, resume: str | Path | None = None):
        resume_state = load_checkpoint(resume) if resume is not None else None
        if resume_state is not None and resume_state.get("interrupted"):
            raise CheckpointError(
                f"{resume}: mid-epoch weights of an interrupted epoch; resume from last.pt beside it (exact), "
                f"or start a new run from these weights with model.init_from={resume}"
            )
        self.cfg = cfg
        self.dist = Distributed(cfg.experiment.device)
        self.device = self.dist.device
        seed_everything(cfg.experiment.seed, cfg.experiment.deterministic)
        if cfg.train.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs CUDA; use bf16 on the CPU")
        if cfg.train.sync_batchnorm and self.device.type != "cuda":
            raise ConfigError("train.sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm is GPU-only)")

        splits = split_samples(cfg) if self.dist.is_main else None  # rank 0 generates / lists the data once
        splits = self.dist.broadcast(splits)
        self.train_set = build_dataset(cfg, "train", splits["train"], training=True)
        self.val_set = build_dataset(cfg, "val", splits["val"], training=False)
        for split, dataset in (("train", self.train_set), ("val", self.val_set)):
            require_wrinkles(dataset, split)
        log.info("data: %d train, %d val images at %d px", len(self.train_set), len(self.val_set), cfg.data.image_size)
        pin = self.device.type == "cuda"
        world, rank = self.dist.world_size, self.dist.rank
        drop_last = len(self.train_set) // world > cfg.train.batch_size
        self.train_loader = make_loader(self.train_set, cfg.train.batch_size, True, cfg.data.num_workers, cfg.experiment.seed, pin, drop_last, rank, world)
        self.val_loader = make_loader(self.val_set, cfg.eval.batch_size, False, cfg.data.num_workers, cfg.experiment.seed, pin, False, rank, world)

        self.model = build_model(cfg.model, encoder_weights=resume_state is None and cfg.model.init_from is None)
        self.init_report = None
        if cfg.model.init_from and resume_state is None:
            self.init_report = load_initial_weights(self.model, cfg.model.init_from)
        if self.dist.enabled and cfg.train.sync_batchnorm:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
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
        self.step = 0
        self.best_metric: float | None = None
        self.best_epoch = 0
        self.threshold = cfg.eval.threshold  # the validation-chosen threshold of the latest epoch
        self.epochs_without_improvement = 0
        wandb_id = None
        run_dir = run_folder_of(resume, resume_state) if resume_state is not None else None
        if resume_state is not None:
            self._restore(resume_state)
        if run_dir is not None:
            wandb_id = resume_state.get("wandb_id")
            self.run_dir, self.run_id = run_dir, resume_state.get("run_id") or uuid.uuid4().hex
            log.info("resuming %s after epoch %d", self.run_dir, self.epoch)
            if self.dist.is_main:
                truncate_metrics(self.run_dir / "metrics.csv", self.epoch)
                if not resume_state.get("run_id"):  # a run from before run ids: give it one now
                    write_text_atomic(run_dir / RUN_FILE, json.dumps({"run_id": self.run_id}) + "\n")
        else:
            self.run_dir, self.run_id = self.dist.broadcast(start_run_folder(cfg) if self.dist.is_main else None)
            if resume_state is not None:
                log.warning("%s is not inside its own run folder (runs/NAME/checkpoints/ with that run's run.json): "
                            "continuing after epoch %d in a new run folder %s", resume, self.epoch, self.run_dir)
        self.created_run_dir = run_dir is None  # removed again if no checkpoint gets written

        # The module that trains: DDP-wrapped and/or compiled views of the same parameters.
        self.train_module: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_module = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.train.compile:
            self.train_module = torch.compile(self.train_module)
        self.run_log = (
            RunLog(self.run_dir, config_to_dict(cfg), cfg.logging.wandb, cfg.logging.project, cfg.logging.entity, self.run_dir.name, wandb_id)
            if self.dist.is_main
            else None
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self, val_metrics: dict[str, float], interrupted: bool = False) -> dict[str, Any]:
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
            "threshold": self.threshold,
            "epochs_without_improvement": self.epochs_without_improvement,
            "val_metrics": {k: float(v) for k, v in val_metrics.items()},
            "rng": rng_state(),
            "interrupted": interrupted,
            "config": config_to_dict(self.cfg),
            "run_id": self.run_id,
            "wandb_id": self.run_log.wandb_id if self.run_log else None,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.threshold = state["threshold"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        set_rng_state(state["rng"])

    def _save(self, name: str, state: dict[str, Any]) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run_dir / "checkpoints" / name, state)

    # -- loops ---------------------------------------------------------------------------------

    def train_one_epoch(self) -> float:
        cfg, module = self.cfg, self.train_module
        module.train()
        torch.manual_seed(cfg.experiment.seed * 1000 + self.epoch + 7919 * self.dist.rank)  # dropout of this epoch
        self.train_loader.sampler.set_epoch(self.epoch)
        total, count, bad_steps = 0.0, 0, 0
        started = time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}", leave=False, unit="batch", dynamic_ncols=True, disable=not self.dist.is_main)
        for batch in bar:
            x = to_model_input(batch["image"], self.device, cfg.train.channels_last)
            target = batch["mask"].to(self.device, non_blocking=True)
            region = batch["face_mask"].to(self.device, non_blocking=True) if cfg.loss.region == "skin" else None
            with autocast(self.device, cfg.train.amp):
                logits = module(x)
            loss = self.loss_fn(logits.float(), target, region)
            self.optimizer.zero_grad(set_to_none=True)
            # Every rank must take the same decision before backward(): a rank that skipped it would
            # leave the others waiting in DDP's gradient all-reduce.
            finite = self.dist.all_agree(bool(torch.isfinite(loss)), self.device)
            if finite:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf"))
                # With fp16 the scaler skips steps with inf gradients itself (and lowers its scale).
                finite = self.dist.all_agree(bool(torch.isfinite(norm)) or cfg.train.amp == "fp16", self.device)
            if not finite:
                bad_steps += 1
                self.optimizer.zero_grad(set_to_none=True)
                log.warning("non-finite loss or gradient at step %d: step skipped (%d in a row)", self.step, bad_steps)
                if bad_steps >= cfg.train.max_bad_steps:
                    raise TrainingError(f"the loss or gradients were non-finite {bad_steps} steps in a row: lower optim.lr, check the data, or set train.amp=off")
                continue
            bad_steps = 0
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            total += loss.item() * len(x)
            count += len(x)
            rate = count * self.dist.world_size / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{total / count:.4f}", img_s=f"{rate:.1f}")
            if self.run_log:
                self.run_log.log_step(self.step, {"train/step_loss": loss.item()})
        if self.dist.enabled:
            # DDP syncs BatchNorm statistics from rank 0 at the start of each forward, so after the last
            # step each rank holds its own; take rank 0's, so validation and checkpoints agree.
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)
        totals = self.dist.gather((total, count))
        return sum(t for t, _ in totals) / max(sum(c for _, c in totals), 1)

    def validate(self) -> dict[str, float]:
        """Validation metrics and loss over the whole validation set: every rank's shard merged, the loss
        from the summed Dice and focal sums of all pixels (so it depends on neither batch size nor ranks)."""
        predictor = model_predictor(self.model, self.device, self.cfg.train.amp, self.cfg.train.channels_last)
        results, meter, loss_sums = score_loader(predictor, self.val_loader, self.device, self.cfg, self.loss_fn, desc="validate")
        if not self.dist.enabled:
            return results
        merged = SegmentationMeter(meter.threshold, meter.histogram.bins, meter.tolerance)
        for part in self.dist.gather(meter.state()):
            merged.merge_state(part)
        local = loss_sums.cpu() if loss_sums is not None else torch.zeros(N_SUMS, dtype=torch.float64)  # an empty shard
        sums = sum(self.dist.gather(local))
        return {**merged.compute(), "loss": float(self.loss_fn.from_sums(sums))}

    def _log_overlays(self) -> None:
        """A few validation overlays (truth green, prediction red, both yellow) to W&B."""
        if not (self.run_log and self.run_log.wandb_run):
            return
        predictor = model_predictor(self.model, self.device, self.cfg.train.amp, self.cfg.train.channels_last)
        images = {}
        for index in range(min(4, len(self.val_set))):
            item = self.val_set[index]
            prob = predictor({"image": item["image"][None]})[1][0].cpu().numpy()
            image = item["image"].permute(1, 2, 0).numpy()
            images[f"val/overlay_{item['id']}"] = overlay(image, prob >= self.threshold, item["mask"][0].numpy().astype(bool))
        self.run_log.log_images(self.step, images)

    def fit(self) -> Path:
        cfg = self.cfg
        select = cfg.train.select_metric
        val: dict[str, float] = {}
        try:
            while self.epoch < cfg.train.epochs:
                started = time.perf_counter()
                try:
                    train_loss = self.train_one_epoch()
                except RuntimeError as err:
                    if is_out_of_memory(err):
                        raise TrainingError(
                            f"out of memory at train.batch_size={cfg.train.batch_size}, {cfg.data.image_size} px: lower train.batch_size, "
                            "set train.amp=bf16 (or fp16 on CUDA), or train on crops with data.patch_size=256"
                        ) from err
                    raise
                val = self.validate()
                self._stop_if_diverged(val["loss"])
                self.epoch += 1
                monitored = val["loss"] if cfg.scheduler.monitor == "val_loss" else val[cfg.scheduler.monitor.removeprefix("val_")]
                self.scheduler.step(monitored)
                row = {"epoch": self.epoch, "train_loss": train_loss, "lr": self.optimizer.param_groups[0]["lr"]}
                row.update({f"val_{k}": v for k, v in val.items() if k not in ("n_images", "n_empty_both", "tolerance_px")})
                row["epoch_seconds"] = round(time.perf_counter() - started, 2)
                selected = row[select]
                improved = is_better(selected, self.best_metric, select)
                self.threshold = val["best_threshold"]
                if improved:
                    self.best_metric, self.best_epoch = selected, self.epoch
                    self.epochs_without_improvement = 0
                else:
                    self.epochs_without_improvement += 1
                if self.run_log:
                    self.run_log.log_epoch(self.step, row)  # before last.pt: a resume trims rows past its epoch
                state = self._state(val)
                if improved:
                    self._save("best.pt", state)  # serialized now: a copy of this epoch's weights
                self._save("last.pt", state)
                if cfg.train.overlay_every and self.epoch % cfg.train.overlay_every == 0:
                    self._log_overlays()
                if self.dist.is_main:
                    log.info(
                        "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_iou %.4f  val_dice %.4f  val_auc %.4f  lr %.2e  (%.1fs)",
                        self.epoch, cfg.train.epochs, train_loss, val["loss"], val["iou"], val["dice"], val["auc"], row["lr"], row["epoch_seconds"],
                    )
                patience = cfg.train.early_stopping_patience
                if patience and self.epochs_without_improvement >= patience:
                    log.info("early stopping: %s did not improve for %d epochs", select, patience)
                    break
        except KeyboardInterrupt:
            # last.pt stays the exact end of the last completed epoch (what --resume continues from);
            # the mid-epoch weights go to a file of their own, for inspection or model.init_from.
            self._save(INTERRUPTED, self._state(val, interrupted=True))
            checkpoints = self.run_dir / "checkpoints"
            log.warning("interrupted during epoch %d: mid-epoch weights saved to %s; --resume %s continues exactly after epoch %d",
                        self.epoch + 1, checkpoints / INTERRUPTED, checkpoints / "last.pt", self.epoch)
            raise
        finally:
            if self.run_log:
                self.run_log.close()
        self._check_ranks_agree()
        if self.dist.is_main:
            best = self.best_metric if self.best_metric is not None else float("nan")
            log.info("best %s %.4f at epoch %d; run folder %s", select, best, self.best_epoch, self.run_dir)
        return self.run_dir

    def _stop_if_diverged(self, val_loss: float) -> None:
        """A non-finite validation loss or weights end the run before anything is saved from them."""
        finite_weights = not non_finite_tensors(self.model.state_dict())
        if math.isfinite(val_loss) and finite_weights:
            return
        what = f"the validation loss is {val_loss}" if finite_weights else "the weights hold NaN or infinity"
        remedy = "lower optim.lr" + (" or set train.amp=off" if self.cfg.train.amp != "off" else "")
        kept = f"last.pt keeps epoch {self.epoch}, the last finite one" if self.epoch else "no checkpoint was written"
        raise TrainingError(f"epoch {self.epoch + 1}: {what}: the run diverged ({remedy}); {kept}")

    def remove_run_dir_if_empty(self) -> None:
        """A run folder this run created that holds no checkpoint is removed (with its config and log):
        a failed start leaves nothing behind to be mistaken for a run."""
        checkpoints = self.run_dir / "checkpoints"
        if self.dist.is_main and self.created_run_dir and not any(checkpoints.glob("*.pt")):
            if self.run_log:
                self.run_log.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            log.info("removed %s: the run ended before writing a checkpoint", self.run_dir)

    def _check_ranks_agree(self) -> None:
        """Under DDP: every rank must end with the same weights; recorded in last.pt, an error if not."""
        if not self.dist.enabled:
            return
        checksums = self.dist.gather(weights_checksum(self.model))
        if self.dist.is_main:
            path = self.run_dir / "checkpoints" / "last.pt"
            state = load_checkpoint(path)
            state["rank_checksums"] = checksums
            save_checkpoint(path, state)
            log.info("weights identical on all %d ranks: %s", len(checksums), len(set(checksums)) == 1)
        if len(set(checksums)) != 1:
            raise TrainingError(f"ranks ended with different weights: {checksums}")


def fit(cfg: Config, resume: str | Path | None = None) -> Path:
    """Train per `cfg` and return the run folder; with `resume`, continue that checkpoint's run."""
    trainer = Trainer(cfg, resume)
    try:
        return trainer.fit()
    except BaseException:
        trainer.remove_run_dir_if_empty()
        raise
    finally:
        trainer.dist.close()
