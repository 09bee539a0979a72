"""Run logging: W&B mode resolution (never a crash without an API key), the local metrics.csv and its
plots, curves.png."""

from __future__ import annotations

import csv
import errno
import os
import warnings

import cv2
import numpy as np
import pytest

from engine import fileio
from engine.errors import OutputError
from engine.pictures import plot_training_curves, training_figure
from engine.run_folder import truncate_metrics
from engine.run_log import EPOCH_COLUMNS, TEXTURE_EPOCH_COLUMNS, RunLog, wandb_mode

CURVES_SHAPE = (360, 1200, 3)  # 12 x 3.6 inches at 100 dpi


def test_wandb_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("online") == "offline"  # no key: offline, not a UsageError
    assert wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment wins over the config
    assert wandb_mode("online") == "disabled"


def test_metrics_csv_has_the_contract_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_log = RunLog(tmp_path, {}, "online", "p", None, "run")
    assert run_log.wandb_run is None
    run_log.log_epoch(1, {"epoch": 1, "train_loss": 0.5, "val_iou": 0.25, "unlisted": 3})
    run_log.log_epoch(2, {"epoch": 2, "train_loss": 0.4, "val_iou": 0.30})
    run_log.close()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert list(rows[0]) == EPOCH_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    for column in ("epoch", "train_loss", "val_loss", "val_iou", "val_dice", "val_precision", "val_recall", "val_auc", "lr"):
        assert column in EPOCH_COLUMNS


def segmentation_row(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 1 / epoch,
        "val_loss": 1.5 / epoch,
        "val_iou": 0.1 * epoch,
        "val_dice": 0.15 * epoch,
        "lr": 1e-3 / epoch,
    }


def texture_row(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 0.1 / epoch,
        "val_loss": 0.2 / epoch,
        "val_mae": 20 / epoch,
        "val_rmse": 30 / epoch,
        "val_psnr": 20 + epoch,
        "lr": 1e-3,
    }


def decode(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a PNG"
    return image


def read_rows(run_dir) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "metrics.csv")))


def plotted(rows) -> dict[str, list[int]]:
    """Each curve of curves.png (by legend label) and the epochs it is drawn at, markers checked."""
    curves = {}
    for ax in training_figure(rows).axes:
        for line in ax.get_lines():
            assert line.get_marker() not in (None, "", " ", "None"), "a single epoch must show as a point"
            x, y = line.get_xdata(), line.get_ydata()
            curves[line.get_label()] = [int(e) for e, v in zip(x, y) if np.isfinite(v)]
    return curves


def test_curves_png_is_rewritten_beside_metrics_csv_every_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_log = RunLog(tmp_path, {}, "disabled", "p", None, "run")
    assert not (tmp_path / "curves.png").exists()  # a new run: nothing to picture yet
    pictures = []
    for epoch in (1, 2):
        run_log.log_epoch(epoch, segmentation_row(epoch))
        pictures.append((tmp_path / "curves.png").read_bytes())
        image = decode(pictures[-1])
        assert image.shape == CURVES_SHAPE and (image < 128).any()  # not blank
    run_log.close()
    assert pictures[0] != pictures[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.csv"]  # no temporary file left
    assert plotted(read_rows(tmp_path)) == {label: [1, 2] for label in ("train", "validation", "IoU", "Dice", "learning rate")}


def test_a_full_disk_while_writing_curves_png_is_one_line_and_keeps_the_last_one(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_log = RunLog(tmp_path, {}, "disabled", "p", None, "run")
    run_log.log_epoch(1, segmentation_row(1))
    before = (tmp_path / "curves.png").read_bytes()

    def full_disk(file, mode="r", *args, **kwargs):  # fileio's open: every file it writes fails
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio, "open", full_disk, raising=False)
    with pytest.raises(OutputError, match=r"cannot write .*curves\.png: no space left on device"):
        run_log.log_epoch(2, segmentation_row(2))
    assert (tmp_path / "curves.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.csv"]


def test_curves_png_of_the_texture_task(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_log = RunLog(tmp_path, {}, "disabled", "p", None, "run", columns=TEXTURE_EPOCH_COLUMNS)
    for epoch in (1, 2, 3):
        run_log.log_epoch(epoch, texture_row(epoch))
    assert decode((tmp_path / "curves.png").read_bytes()).shape == CURVES_SHAPE
    assert plotted(read_rows(tmp_path)) == {label: [1, 2, 3] for label in ("train", "validation", "MAE", "RMSE", "PSNR", "learning rate")}


def test_curves_png_of_a_resumed_run_holds_every_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir(), resumed.mkdir()
    run_log = RunLog(whole, {}, "disabled", "p", None, "run")
    for epoch in (1, 2, 3, 4):
        run_log.log_epoch(epoch, segmentation_row(epoch))
    # Killed after epoch 3's row but before its checkpoint: the resume cuts metrics.csv back to epoch 2
    # (as open_run_folder does before the trainer opens its RunLog), and curves.png follows at once.
    run_log = RunLog(resumed, {}, "disabled", "p", None, "run")
    for epoch in (1, 2, 3):
        run_log.log_epoch(epoch, segmentation_row(epoch))
    truncate_metrics(resumed / "metrics.csv", 2)
    run_log = RunLog(resumed, {}, "disabled", "p", None, "run")
    rows = read_rows(resumed)
    assert np.array_equal(decode((resumed / "curves.png").read_bytes()), decode(plot_training_curves(rows)))
    for epoch in (3, 4):
        run_log.log_epoch(epoch, segmentation_row(epoch))
    rows = read_rows(resumed)
    assert plotted(rows)["validation"] == [1, 2, 3, 4]
    picture = decode((resumed / "curves.png").read_bytes())
    assert np.array_equal(picture, decode((whole / "curves.png").read_bytes()))  # as if never interrupted
    assert not np.array_equal(picture, decode(plot_training_curves(rows[2:])))  # not only this session's epochs


def test_training_curves_of_one_epoch_and_of_missing_values():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log scale of nothing, no empty legend
        assert plotted([segmentation_row(1)]) == {label: [1] for label in ("train", "validation", "IoU", "Dice", "learning rate")}
        rows = [
            {"epoch": "1", "train_loss": "0.5", "val_loss": "", "val_iou": "nan", "val_dice": "0.2", "lr": "0"},
            {"epoch": "2", "train_loss": "inf", "val_loss": "", "val_iou": "", "val_dice": "0.3", "lr": ""},
            {"epoch": "", "train_loss": "9"},  # no epoch: not a row of the plot
            {"epoch": "3", "train_loss": "0.4", "val_dice": "0.35"},  # a column the file does not have
        ]
        assert plotted(rows) == {"train": [1, 3], "Dice": [1, 2, 3]}  # a column without values is not drawn
        assert decode(plot_training_curves(rows)).shape == CURVES_SHAPE
        assert decode(plot_training_curves([])).shape == CURVES_SHAPE
