"""Scoring a checkpoint on a data split: metrics.json, per_image.csv, curves and overlays."""

from __future__ import annotations

import csv
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from config import Config, ConfigError, config_to_dict, load_config
from data.dataset import build_dataset, make_loader
from data.image_io import write_png
from inference import load_model, predict_probs, resolve_device, score_loader
from visualize import overlay, plot_curves

log = logging.getLogger(__name__)

N_OVERLAYS = 3  # best and worst images each


def resolve_threshold(threshold: str | float | None, checkpoint_threshold: float | None, cfg: Config) -> float:
    """None: eval.threshold from the config; "auto": the validation-chosen threshold in the checkpoint."""
    if threshold is None:
        return cfg.eval.threshold
    if threshold == "auto":
        if checkpoint_threshold is None:
            raise ConfigError("--threshold auto: this checkpoint records no validation threshold")
        return float(checkpoint_threshold)
    try:
        value = float(threshold)
    except ValueError:
        raise ConfigError(f"--threshold must be a number in (0, 1) or 'auto', got {threshold!r}") from None
    if not 0 < value < 1:
        raise ConfigError(f"--threshold must be in (0, 1) or 'auto', got {threshold}")
    return value


def definitions(cfg: Config, threshold: float) -> dict[str, str]:
    """What each figure in metrics.json means, written beside the figures."""
    region = "face skin pixels only (the sample's skin mask)" if cfg.eval.region == "skin" else "every pixel of the image"
    return {
        "region": region,
        "positive_pixel": f"wrinkle probability >= {threshold:.4f}",
        "pooled": "iou, dice, precision, recall: counts summed over all images, then the ratio (micro)",
        "per_image": "per_image_*: the ratio per image, then the mean over images (macro)",
        "empty_masks": "an image with no wrinkle pixels and none predicted scores 1.0 on every per-image ratio; "
        "a ratio whose denominator is 0 while the image has errors scores 0.0",
        "auc": "ROC-AUC over the region's pixels, from a 10,000-bin score histogram (ties within a bin get half credit)",
        "average_precision": "area under the precision-recall curve, scikit-learn's step definition, same histogram",
        "best_threshold": "threshold maximizing pooled Dice on THIS split (for information; never use a test split's value)",
        "ground_truth": "the original masks, never dilated",
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    split: str = "test",
    threshold: str | float | None = None,
) -> dict:
    """Score `checkpoint` on `split` of the data its config (or `config_path` + overrides) describes."""
    output_dir = Path(output_dir)
    device = resolve_device("auto")
    model, ckpt_cfg, state = load_model(checkpoint, device)
    cfg = load_config(config_path, overrides or [], base=config_to_dict(ckpt_cfg))
    if cfg.data.image_size != ckpt_cfg.data.image_size:
        log.warning("evaluating at %d px; the model was trained at %d px", cfg.data.image_size, ckpt_cfg.data.image_size)
    used_threshold = resolve_threshold(threshold, state.get("threshold"), cfg)

    dataset = build_dataset(cfg, split)
    loader = make_loader(dataset, cfg.eval.batch_size, False, cfg.data.num_workers, cfg.experiment.seed)
    log.info("evaluating %s on %d %s images at threshold %.4f", checkpoint, len(dataset), split, used_threshold)
    results, meter = score_loader(model, loader, device, cfg, threshold=used_threshold, desc=f"evaluate {split}")

    output_dir.mkdir(parents=True, exist_ok=True)
    rows = meter.per_image()
    report = {
        **results,
        "threshold": used_threshold,
        "region": cfg.eval.region,
        "split": split,
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_epoch": state.get("epoch"),
        "data_sources": [f"{s.kind}:{Path(s.root).resolve()}" for s in cfg.data.sources],
        "image_size": cfg.data.image_size,
        "skipped_files": dataset.skipped,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "definitions": definitions(cfg, used_threshold),
    }
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(output_dir / "per_image.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "iou", "dice", "precision", "recall", "tp", "fp", "fn", "tn"])
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(meter.histogram, output_dir, used_threshold)
    write_overlays(model, dataset, rows, output_dir / "overlays", device, cfg, used_threshold)
    return report


def write_overlays(model, dataset, rows: list[dict], out_dir: Path, device, cfg: Config, threshold: float) -> None:
    """Overlays (truth green, prediction red, overlap yellow) for the best and worst images by IoU."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["iou"])
    picks = {f"worst{n + 1}": i for n, i in enumerate(order[:N_OVERLAYS])}
    picks.update({f"best{n + 1}": i for n, i in enumerate(reversed(order[-N_OVERLAYS:]))})
    for tag, index in picks.items():
        item = dataset[index]
        prob = predict_probs(model, item["image"][None], device, cfg.train.amp, cfg.train.channels_last)[0].cpu().numpy()
        image = item["image"].numpy().transpose(1, 2, 0)
        truth = item["mask"][0].numpy().astype(bool)
        pred = prob >= threshold
        if cfg.eval.region == "skin":
            pred &= item["face_mask"][0].numpy().astype(bool)
        panel = np.concatenate([image, overlay(image, pred, truth)], axis=1)
        write_png(out_dir / f"{tag}_{item['id']}_iou{rows[index]['iou']:.3f}.png", panel)
