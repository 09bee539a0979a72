"""The training engine behind train.py: `fit(cfg)` trains a run and returns its folder.

Built from small parts, as timm's train.py is: `build_data`, `build_learner` and `wrap_for_training`
set a run up; `train_one_epoch` and `validate` are functions of explicit arguments; `TrainState`
(engine/train_state.py) owns what a checkpoint holds; `Trainer` wires them and `Trainer.fit` reads top
to bottom. Every epoch's randomness (order, augmentation, patches, dropout) is derived from
(experiment.seed, epoch, item), so a resumed run replays exactly what an uninterrupted one would have
done. Under `torchrun`, each process trains a shard with DistributedDataParallel; metrics are reduced
across ranks before anything is logged, and only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from config import Config, ConfigError, config_to_dict
from data.dataset import WrinkleDataset, build_dataset, make_loader, require_wrinkles, split_samples
from engine.checkpoint import CheckpointError, load_checkpoint, non_finite_tensors, save_checkpoint
from engine.distributed import Distributed, seed_everything, weights_checksum
from engine.errors import WrinkleError
from engine.inference import autocast, model_predictor, score_loader, to_model_input
from engine.pictures import overlay
from engine.run_folder import INTERRUPTED, load_resumable, open_run_folder, resume_config
from engine.run_log import EPOCH_COLUMNS, TEXTURE_EPOCH_COLUMNS, RunLog
from engine.train_state import Learner, TrainState
from losses import DiceFocalLoss, TextureLoss
from metrics import SegmentationMeter, TextureMeter
from unet import build_model

__all__ = ["Trainer", "TrainingError", "fit", "resume_config"]

log = logging.getLogger(__name__)


class TrainingError(WrinkleError, RuntimeError):
    """Training cannot go on (non-finite losses, out of memory); the message says why and what to try."""


# -- building a run --------------------------------------------------------------------------------


@dataclass
class TrainData:
    """The training and validation sets and their (sharded) loaders."""

    train_set: WrinkleDataset
    val_set: WrinkleDataset
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader


def build_data(cfg: Config, dist_: Distributed) -> TrainData:
    """Split the configured data (rank 0 generates and lists it once), build both sets, refuse a split
    without wrinkles, and shard the loaders across ranks."""
    splits = dist_.broadcast(split_samples(cfg) if dist_.is_main else None)
    train_set = build_dataset(cfg, "train", splits["train"], training=True)
    val_set = build_dataset(cfg, "val", splits["val"], training=False)
    for split, dataset in (("train", train_set), ("val", val_set)):
        if cfg.train.task == "segmentation":  # texture targets are the faces' own maps: never all empty
            require_wrinkles(dataset, split)
    log.info("data: %d train, %d val images at %d px", len(train_set), len(val_set), cfg.data.image_size)
    pin, world, rank = dist_.device.type == "cuda", dist_.world_size, dist_.rank
    drop_last = len(train_set) // world > cfg.train.batch_size
    train_loader = make_loader(
        train_set, cfg.train.batch_size, True, cfg.data.num_workers, cfg.experiment.seed, pin, drop_last, rank, world
    )
    val_loader = make_loader(val_set, cfg.eval.batch_size, False, cfg.data.num_workers, cfg.experiment.seed, pin, False, rank, world)
    return TrainData(train_set, val_set, train_loader, val_loader)


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over the parameters that train (frozen encoder stages are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas))


def output_head(model: nn.Module) -> str:
    """The name of the network's output layer (its last convolution): the one part a task change concerns."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)][-1]


def load_initial_weights(model: nn.Module, path: str, task: str = "segmentation") -> dict[str, list[str]]:
    """`model.init_from`: copy weights from a checkpoint (or a plain state dict), reporting key mismatches,
    and what happens to the output head when the checkpoint was trained for another `train.task`."""
    from unet.unet_model import load_weights_file

    state = load_weights_file(
        Path(path), "give model.init_from a checkpoint written by train.py, or a state dict", label=f"model.init_from={path}"
    )
    weights = state.get("model", state)
    if not isinstance(weights, dict):
        raise CheckpointError(f"model.init_from: {path} holds no state dict")
    trained_for = state.get("config", {}).get("train", {}).get("task", "segmentation") if "model" in state else task
    if trained_for != task:
        # Both tasks end in one sigmoid channel (a texture map in [0, 1], a wrinkle probability), so the
        # stage-1 head is a fitting start: wrinkles are where the texture response is high.
        log.info(
            "init_from %s: trained for train.task=%s, now %s; the output head (%s) is kept as is: one sigmoid channel in both",
            path,
            trained_for,
            task,
            output_head(model),
        )
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


def build_learner(cfg: Config, dist_: Distributed, fresh: bool) -> tuple[Learner, dict | None]:
    """The model (pretrained encoder or `model.init_from` weights unless `fresh` is False, i.e. resuming)
    on its device, with AdamW, ReduceLROnPlateau, the gradient scaler and the loss; and the init_from report."""
    model = build_model(cfg.model, encoder_weights=fresh and cfg.model.init_from is None)
    init_report = load_initial_weights(model, cfg.model.init_from, cfg.train.task) if cfg.model.init_from and fresh else None
    if dist_.enabled and cfg.train.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(dist_.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    s = cfg.scheduler
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=s.mode, factor=s.factor, patience=s.patience, min_lr=s.min_lr)
    scaler = torch.amp.GradScaler(dist_.device.type, enabled=cfg.train.amp == "fp16")
    loss = cfg.loss
    if cfg.train.task == "texture":
        loss_fn = TextureLoss()
    else:
        loss_fn = DiceFocalLoss(loss.dice_weight, loss.focal_weight, loss.focal_alpha, loss.focal_gamma, loss.dice_smooth)
    return Learner(model, optimizer, scheduler, scaler, loss_fn), init_report


def wrap_for_training(model: nn.Module, cfg: Config, dist_: Distributed) -> nn.Module:
    """The module that trains: DDP-wrapped and/or compiled views of the same parameters."""
    if dist_.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[dist_.device.index] if dist_.device.type == "cuda" else None)
    return torch.compile(model) if cfg.train.compile else model


def check_device_options(cfg: Config, device: torch.device) -> None:
    """Options that need CUDA, refused on the CPU before anything is built."""
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs CUDA; use bf16 on the CPU")
    if cfg.train.sync_batchnorm and device.type != "cuda":
        raise ConfigError("train.sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm is GPU-only)")


# -- one epoch -------------------------------------------------------------------------------------


def train_step(module: nn.Module, learner: Learner, batch: dict, cfg: Config, dist_: Distributed) -> torch.Tensor | None:
    """Forward, backward, clipping and an optimizer step; None (nothing changed) when the loss or the
    gradients are non-finite on any rank."""
    device = dist_.device
    x = to_model_input(batch["image"], device, cfg.train.channels_last)
    target = batch["mask"].to(device, non_blocking=True)
    region = batch["face_mask"].to(device, non_blocking=True) if cfg.loss.region == "skin" else None
    with autocast(device, cfg.train.amp):
        logits = module(x)
    loss = learner.loss_fn(logits.float(), target, region)
    learner.optimizer.zero_grad(set_to_none=True)
    # Every rank must take the same decision before backward(): a rank that skipped it would leave the
    # others waiting in DDP's gradient all-reduce.
    finite = dist_.all_agree(bool(torch.isfinite(loss)), device)
    if finite:
        learner.scaler.scale(loss).backward()
        learner.scaler.unscale_(learner.optimizer)
        norm = nn.utils.clip_grad_norm_(learner.model.parameters(), cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf"))
        # With fp16 the scaler skips steps with inf gradients itself (and lowers its scale).
        finite = dist_.all_agree(bool(torch.isfinite(norm)) or cfg.train.amp == "fp16", device)
    if not finite:
        learner.optimizer.zero_grad(set_to_none=True)
        return None
    learner.scaler.step(learner.optimizer)
    learner.scaler.update()
    return loss


def train_one_epoch(
    module: nn.Module, learner: Learner, loader, cfg: Config, dist_: Distributed, state: TrainState, run_log: RunLog | None
) -> float:
    """One pass over `loader` (epoch `state.epoch`, counting `state.step`); the mean training loss over
    all ranks. `train.max_bad_steps` non-finite steps in a row end the run."""
    module.train()
    torch.manual_seed(cfg.experiment.seed * 1000 + state.epoch + 7919 * dist_.rank)  # dropout of this epoch
    loader.sampler.set_epoch(state.epoch)
    total, count, bad_steps = 0.0, 0, 0
    started = time.perf_counter()
    bar = tqdm(
        loader, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", leave=False, unit="batch", dynamic_ncols=True, disable=not dist_.is_main
    )
    for batch in bar:
        loss = train_step(module, learner, batch, cfg, dist_)
        if loss is None:
            bad_steps += 1
            log.warning("non-finite loss or gradient at step %d: step skipped (%d in a row)", state.step, bad_steps)
            if bad_steps >= cfg.train.max_bad_steps:
                raise TrainingError(
                    f"the loss or gradients were non-finite {bad_steps} steps in a row: lower optim.lr, check the data, or set train.amp=off"
                )
            continue
        bad_steps = 0
        state.step += 1
        total += loss.item() * len(batch["image"])
        count += len(batch["image"])
        bar.set_postfix(loss=f"{total / count:.4f}", img_s=f"{count * dist_.world_size / max(time.perf_counter() - started, 1e-9):.1f}")
        if run_log:
            run_log.log_step(state.step, {"train/step_loss": loss.item()})
    if dist_.enabled:
        # DDP syncs BatchNorm statistics from rank 0 at the start of each forward, so after the last step
        # each rank holds its own; take rank 0's, so validation and checkpoints agree.
        for buffer in learner.model.buffers():
            dist.broadcast(buffer, src=0)
    totals = dist_.gather((total, count))
    return sum(t for t, _ in totals) / max(sum(c for _, c in totals), 1)


def validate(model: nn.Module, loss_fn: DiceFocalLoss | TextureLoss, loader, cfg: Config, dist_: Distributed) -> dict[str, float]:
    """Validation metrics and loss over the whole validation set: every rank's shard merged, the loss from
    the summed sums of all pixels (so it depends on neither batch size nor ranks). Segmentation: IoU,
    Dice, ... (metrics.py); train.task=texture: MAE, RMSE and PSNR of the texture maps."""
    predictor = model_predictor(model, dist_.device, cfg.train.amp, cfg.train.channels_last)
    results, meter, loss_sums = score_loader(predictor, loader, dist_.device, cfg, loss_fn, desc="validate")
    if not dist_.enabled:
        return results
    merged = TextureMeter() if cfg.train.task == "texture" else SegmentationMeter(meter.threshold, meter.histogram.bins, meter.tolerance)
    for part in dist_.gather(meter.state()):
        merged.merge_state(part)
    local = loss_sums.cpu() if loss_sums is not None else torch.zeros(loss_fn.n_sums, dtype=torch.float64)  # an empty shard
    return {**merged.compute(), "loss": float(loss_fn.from_sums(sum(dist_.gather(local))))}


def stop_if_diverged(model: nn.Module, val_loss: float, epoch: int, cfg: Config) -> None:
    """A non-finite validation loss or weights end the run before anything is saved from them."""
    finite_weights = not non_finite_tensors(model.state_dict())
    if math.isfinite(val_loss) and finite_weights:
        return
    what = f"the validation loss is {val_loss}" if finite_weights else "the weights hold NaN or infinity"
    remedy = "lower optim.lr" + (" or set train.amp=off" if cfg.train.amp != "off" else "")
    kept = f"last.pt keeps epoch {epoch}, the last finite one" if epoch else "no checkpoint was written"
    raise TrainingError(f"epoch {epoch + 1}: {what}: the run diverged ({remedy}); {kept}")


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)) or "out of memory" in str(err).lower()


def epoch_row(epoch: int, train_loss: float, val: dict[str, float], lr: float, seconds: float) -> dict[str, Any]:
    """The metrics.csv row of an epoch."""
    row = {"epoch": epoch, "train_loss": train_loss, "lr": lr}
    row.update({f"val_{k}": v for k, v in val.items() if k not in ("n_images", "n_empty_both", "tolerance_px", "pixels")})
    row["epoch_seconds"] = round(seconds, 2)
    return row


def epoch_summary(row: dict[str, Any], epochs: int) -> str:
    """The log line of an epoch's metrics.csv row."""
    keys = ("train_loss", "val_loss", "val_iou", "val_dice", "val_auc", "val_mae", "val_psnr")
    metrics = "  ".join(f"{key} {row[key]:.4f}" for key in keys if key in row)
    return f"epoch {row['epoch']}/{epochs}  {metrics}  lr {row['lr']:.2e}  ({row['epoch_seconds']:.1f}s)"


def validation_overlays(model: nn.Module, val_set: WrinkleDataset, cfg: Config, device: torch.device, threshold: float) -> dict[str, Any]:
    """A few validation overlays (truth green, prediction red, both yellow), for W&B."""
    predictor = model_predictor(model, device, cfg.train.amp, cfg.train.channels_last)
    images = {}
    for index in range(min(4, len(val_set))):
        item = val_set[index]
        prob = predictor({"image": item["image"][None]})[1][0].cpu().numpy()
        image = item["image"][:3].permute(1, 2, 0).numpy()  # RGB (a texture channel is not pictured)
        images[f"val/overlay_{item['id']}"] = overlay(image, prob >= threshold, item["mask"][0].numpy().astype(bool))
    return images


def check_ranks_agree(model: nn.Module, dist_: Distributed, last: Path) -> None:
    """Under DDP: every rank must end with the same weights; recorded in last.pt, an error if not."""
    if not dist_.enabled:
        return
    checksums = dist_.gather(weights_checksum(model))
    if dist_.is_main:
        state = load_checkpoint(last)
        state["rank_checksums"] = checksums
        save_checkpoint(last, state)
        log.info("weights identical on all %d ranks: %s", len(checksums), len(set(checksums)) == 1)
    if len(set(checksums)) != 1:
        raise TrainingError(f"ranks ended with different weights: {checksums}")


# -- the run ---------------------------------------------------------------------------------------


def _delegate(part: str, name: str) -> property:
    """`self.<part>.<name>` as `self.<name>`, for reading and replacing."""
    return property(lambda self: getattr(getattr(self, part), name), lambda self, value: setattr(getattr(self, part), name, value))


class Trainer:
    """One run: its data, learner, progress and folder, wired from the parts above."""

    def __init__(self, cfg: Config, resume: str | Path | None = None):
        checkpoint = load_resumable(resume) if resume is not None else None
        self.cfg, self.dist = cfg, Distributed(cfg.experiment.device)
        self.device = self.dist.device
        seed_everything(cfg.experiment.seed, cfg.experiment.deterministic)
        check_device_options(cfg, self.device)
        self.data = build_data(cfg, self.dist)
        self.learner, self.init_report = build_learner(cfg, self.dist, fresh=checkpoint is None)
        self.state = TrainState(threshold=cfg.eval.threshold)
        if checkpoint is not None:
            self.state.restore(checkpoint, self.learner)
        self.run_dir, self.created_run_dir, wandb_id = open_run_folder(cfg, self.dist, self.state, resume, checkpoint)
        self.train_module = wrap_for_training(self.model, cfg, self.dist)
        log_args = (config_to_dict(cfg), cfg.logging.wandb, cfg.logging.project, cfg.logging.entity, self.run_dir.name, wandb_id)
        columns = TEXTURE_EPOCH_COLUMNS if cfg.train.task == "texture" else EPOCH_COLUMNS
        self.run_log = RunLog(self.run_dir, *log_args, columns=columns) if self.dist.is_main else None
        self.last_val: dict[str, float] = {}

    # The parts' members, reachable (and replaceable, e.g. by a test's spy) by name.
    model, optimizer, loss_fn = (_delegate("learner", name) for name in ("model", "optimizer", "loss_fn"))
    train_set, val_set, train_loader, val_loader = (
        _delegate("data", name) for name in ("train_set", "val_set", "train_loader", "val_loader")
    )
    epoch, step = _delegate("state", "epoch"), _delegate("state", "step")

    def train_one_epoch(self) -> float:
        return train_one_epoch(self.train_module, self.learner, self.data.train_loader, self.cfg, self.dist, self.state, self.run_log)

    def validate(self) -> dict[str, float]:
        return validate(self.model, self.loss_fn, self.data.val_loader, self.cfg, self.dist)

    def save(self, name: str, val: dict[str, float], interrupted: bool = False) -> None:
        """Write checkpoints/`name` (rank 0 only): the learner and progress of this moment."""
        if self.dist.is_main:
            wandb_id = self.run_log.wandb_id if self.run_log else None
            save_checkpoint(self.run_dir / "checkpoints" / name, self.state.checkpoint(self.learner, self.cfg, val, wandb_id, interrupted))

    def fit(self) -> Path:
        """Train the remaining epochs (early stopping per `train.early_stopping_patience`); Ctrl-C keeps
        last.pt the exact end of the last completed epoch and writes the mid-epoch state beside it."""
        cfg, state = self.cfg, self.state
        try:
            while state.epoch < cfg.train.epochs and not self.run_epoch():
                pass
        except KeyboardInterrupt:
            self.save(INTERRUPTED, self.last_val, interrupted=True)
            checkpoints = self.run_dir / "checkpoints"
            log.warning(
                "interrupted during epoch %d: mid-epoch weights saved to %s; --resume %s continues exactly after epoch %d",
                state.epoch + 1,
                checkpoints / INTERRUPTED,
                checkpoints / "last.pt",
                state.epoch,
            )
            raise
        finally:
            if self.run_log:
                self.run_log.close()
        check_ranks_agree(self.model, self.dist, self.run_dir / "checkpoints" / "last.pt")
        if self.dist.is_main:
            best = state.best_metric if state.best_metric is not None else float("nan")
            log.info("best %s %.4f at epoch %d; run folder %s", cfg.train.select_metric, best, state.best_epoch, self.run_dir)
        return self.run_dir

    def run_epoch(self) -> bool:
        """Train and validate one epoch, log it, save last.pt (and best.pt); True when early stopping ends the run."""
        cfg, state, started = self.cfg, self.state, time.perf_counter()
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
        stop_if_diverged(self.model, val["loss"], state.epoch, cfg)
        state.epoch += 1
        self.learner.scheduler.step(val["loss"] if cfg.scheduler.monitor == "val_loss" else val[cfg.scheduler.monitor.removeprefix("val_")])
        row = epoch_row(state.epoch, train_loss, val, self.optimizer.param_groups[0]["lr"], time.perf_counter() - started)
        # The texture task has no threshold to choose: the configured one stays in the checkpoint.
        improved = state.record_epoch(row[cfg.train.select_metric], cfg.train.select_metric, val.get("best_threshold", state.threshold))
        self.last_val = val
        if self.run_log:
            self.run_log.log_epoch(state.step, row)  # before last.pt: a resume trims rows past its epoch
        if improved:
            self.save("best.pt", val)  # serialized now: a copy of this epoch's weights
        self.save("last.pt", val)
        overlays_due = cfg.train.overlay_every and state.epoch % cfg.train.overlay_every == 0 and cfg.train.task == "segmentation"
        if self.run_log and self.run_log.wandb_run and overlays_due:
            self.run_log.log_images(state.step, validation_overlays(self.model, self.data.val_set, cfg, self.device, state.threshold))
        if self.dist.is_main:
            log.info("%s", epoch_summary(row, cfg.train.epochs))
        patience = cfg.train.early_stopping_patience
        if patience and state.epochs_without_improvement >= patience:
            log.info("early stopping: %s did not improve for %d epochs", cfg.train.select_metric, patience)
            return True
        return False

    def remove_run_dir_if_empty(self) -> None:
        """A run folder this run created that holds no checkpoint is removed (with its config and log):
        a failed start leaves nothing behind to be mistaken for a run."""
        if self.dist.is_main and self.created_run_dir and not any((self.run_dir / "checkpoints").glob("*.pt")):
            if self.run_log:
                self.run_log.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            log.info("removed %s: the run ended before writing a checkpoint", self.run_dir)


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
