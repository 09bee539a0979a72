"""Run logging: a local metrics.csv and its plots (curves.png) always, Weights & Biases when configured."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from engine.errors import OutputError, describe_os_error
from engine.fileio import write_bytes_atomic
from engine.pictures import plot_training_curves

log = logging.getLogger(__name__)

EPOCH_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_iou",
    "val_dice",
    "val_precision",
    "val_recall",
    "val_auc",
    "val_average_precision",
    "val_per_image_iou",
    "val_per_image_dice",
    "val_tolerant_f1",
    "val_cldice",
    "val_best_threshold",
    "lr",
    "epoch_seconds",
]
# train.task=texture: the texture maps' errors in grey levels (0..255) and PSNR (peak 255).
TEXTURE_EPOCH_COLUMNS = ["epoch", "train_loss", "val_loss", "val_mae", "val_rmse", "val_psnr", "lr", "epoch_seconds"]


def wandb_mode(configured: str) -> str:
    """The effective W&B mode: WANDB_MODE wins; "online" without an API key falls back to "offline"."""
    mode = os.environ.get("WANDB_MODE", configured)
    if mode not in ("online", "offline", "disabled"):
        mode = "disabled" if mode in ("dryrun", "off") else configured
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").is_file()):
        log.warning("W&B: no API key found; logging offline (sync later with `wandb sync`)")
        mode = "offline"
    return mode


CURVES_FILE = "curves.png"  # beside metrics.csv: losses, validation scores and learning rate against epoch


class RunLog:
    """Appends one row per epoch to metrics.csv, plots its rows to curves.png, and mirrors rows (and step
    losses) to W&B."""

    def __init__(
        self,
        run_dir: Path,
        config: dict,
        wandb: str,
        project: str,
        entity: str | None,
        run_name: str,
        resume_id: str | None = None,
        columns: list[str] = EPOCH_COLUMNS,
    ):
        self.csv_path = Path(run_dir) / "metrics.csv"
        self.curves_path = self.csv_path.with_name(CURVES_FILE)
        self.columns = columns
        if self.csv_path.is_file():  # a resumed run: its metrics.csv, cut back to its epoch, pictured now
            self.write_curves()
        self.wandb_run = None
        mode = wandb_mode(wandb)
        if mode != "disabled":
            try:
                import wandb as wandb_lib

                self.wandb_run = wandb_lib.init(
                    project=project,
                    entity=entity,
                    name=run_name,
                    config=config,
                    dir=str(run_dir),
                    mode=mode,
                    id=resume_id,
                    resume="allow" if resume_id else None,
                )
            except Exception as err:  # noqa: BLE001 -- logging must never end a training run
                log.warning("W&B disabled for this run: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
                self.wandb_run = None

    @property
    def wandb_id(self) -> str | None:
        return self.wandb_run.id if self.wandb_run is not None else None

    def log_step(self, step: int, values: dict[str, float]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def log_epoch(self, step: int, row: dict[str, Any]) -> None:
        """Append `row` to metrics.csv (header on first write) and to W&B."""
        new = not self.csv_path.exists()
        try:
            with open(self.csv_path, "a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow({k: row.get(k, "") for k in self.columns})
        except OSError as err:  # a write() error carries no file name: name it
            raise OutputError(f"cannot write {describe_os_error(err, self.csv_path)}") from err
        self.write_curves()
        if self.wandb_run is not None:
            self.wandb_run.log(row, step=step)

    def write_curves(self) -> None:
        """(Re)write curves.png, atomically, from every row metrics.csv holds: a resumed run's earlier
        epochs too. A full disk is an OutputError, as for metrics.csv."""
        try:
            with open(self.csv_path, newline="") as handle:
                rows = list(csv.DictReader(handle))
        except OSError as err:
            raise OutputError(f"cannot read back {describe_os_error(err, self.csv_path)}") from err
        write_bytes_atomic(self.curves_path, plot_training_curves(rows))

    def log_images(self, step: int, images: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            import wandb as wandb_lib

            self.wandb_run.log({k: wandb_lib.Image(v) for k, v in images.items()}, step=step)

    def close(self) -> None:
        """Finish the W&B run (once; closing again does nothing)."""
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
