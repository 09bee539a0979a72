"""Run folders: a new one per run, known by its run id; what a resume may change and continue."""

from __future__ import annotations

import csv
import json
import logging
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from config import Config, ConfigError, config_to_dict, load_config, save_config
from engine.checkpoint import CheckpointError, checkpoint_config, load_checkpoint
from engine.distributed import Distributed
from engine.errors import OutputError, describe_os_error
from engine.fileio import atomic_write, write_text_atomic
from engine.train_state import TrainState

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted.pt"  # the mid-epoch state written on Ctrl-C, beside best.pt and last.pt
RUN_FILE = "run.json"  # in each run folder: the run id its checkpoints carry
RESUMABLE_OVERRIDES = ("train.epochs", "train.early_stopping_patience", "data.num_workers", "logging.wandb")


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


def resume_config(checkpoint: str | Path, overrides: list[str]) -> Config:
    """A resumed run's config: the checkpoint's own, plus overrides that do not change the run's course."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"{key}: cannot be changed when resuming (allowed: {', '.join(RESUMABLE_OVERRIDES)}); use model.init_from to start a new run from these weights"
            )
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


def load_resumable(checkpoint: str | Path) -> dict[str, Any]:
    """A checkpoint that `--resume` can continue: the end of a completed epoch, not Ctrl-C's mid-epoch state."""
    state = load_checkpoint(checkpoint)
    if state.get("interrupted"):
        raise CheckpointError(
            f"{checkpoint}: mid-epoch weights of an interrupted epoch; resume from last.pt beside it (exact), "
            f"or start a new run from these weights with model.init_from={checkpoint}"
        )
    return state


def open_run_folder(
    cfg: Config, dist: Distributed, state: TrainState, resume: str | Path | None, checkpoint: dict | None
) -> tuple[Path, bool, str | None]:
    """The run folder, whether this run created it, and the W&B run to continue: a resumed checkpoint's
    own folder (its metrics.csv cut back to its epoch), else a new folder (`state.run_id` set)."""
    run_dir = run_folder_of(resume, checkpoint) if checkpoint is not None else None
    if run_dir is None:
        run_dir, state.run_id = dist.broadcast(start_run_folder(cfg) if dist.is_main else None)
        if checkpoint is not None:
            log.warning(
                "%s is not inside its own run folder (runs/NAME/checkpoints/ with that run's run.json): "
                "continuing after epoch %d in a new run folder %s",
                resume,
                state.epoch,
                run_dir,
            )
        return run_dir, True, None
    log.info("resuming %s after epoch %d", run_dir, state.epoch)
    if dist.is_main:
        truncate_metrics(run_dir / "metrics.csv", state.epoch)
        if not state.run_id:  # a run from before run ids: give it one now
            state.run_id = uuid.uuid4().hex
            write_text_atomic(run_dir / RUN_FILE, json.dumps({"run_id": state.run_id}) + "\n")
    state.run_id = dist.broadcast(state.run_id)
    return run_dir, False, checkpoint.get("wandb_id")
