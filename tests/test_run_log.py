"""Run logging: W&B mode resolution (never a crash without an API key) and the local metrics.csv."""

from __future__ import annotations

import csv

from engine.run_log import EPOCH_COLUMNS, RunLog, wandb_mode


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
