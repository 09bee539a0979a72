"""Scoring a checkpoint (or the ridge baseline) on a data split: metrics.json, per_image.csv, pictures."""

from __future__ import annotations

import csv
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from torch import nn

from config import Config, ConfigError, config_to_dict, load_config
from data.dataset import WrinkleDataset, build_dataset, make_loader
from data.image_io import write_png
from engine.fileio import atomic_write, write_bytes_atomic, write_text_atomic
from engine.inference import (
    Predictor,
    inference_amp,
    is_onnx_file,
    load_model,
    load_network,
    model_predictor,
    resolve_device,
    resolve_threshold,
    score_loader,
)
from engine.output_folder import OutputFolder
from engine.pictures import overlay, plot_curves
from engine.ridge_baseline import RidgeBaseline
from metrics import SegmentationMeter

log = logging.getLogger(__name__)

N_OVERLAYS = 3  # best and worst images each
PER_IMAGE_COLUMNS = [
    "id",
    "iou",
    "dice",
    "precision",
    "recall",
    "tolerant_precision",
    "tolerant_recall",
    "tolerant_f1",
    "cldice",
    "tp",
    "fp",
    "fn",
    "tn",
]


def definitions(cfg: Config, threshold: float) -> dict[str, str]:
    """What each figure in metrics.json means, written beside the figures."""
    region = "face skin pixels only (the sample's skin mask)" if cfg.eval.region == "skin" else "every pixel of the image"
    k = cfg.eval.tolerance_px
    return {
        "region": region,
        "positive_pixel": f"wrinkle probability >= {threshold:.4f}",
        "pooled": "iou, dice, precision, recall, tolerant_*, cldice: counts summed over all images, then the ratio (micro)",
        "per_image": "per_image_*: the ratio per image, then the mean over images (macro)",
        "empty_masks": "an image with no wrinkle pixels and none predicted scores 1.0 on every per-image ratio; "
        "a ratio whose denominator is 0 while the image has errors scores 0.0",
        "tolerant_precision": f"share of predicted pixels within {k} px (Euclidean) of a true wrinkle pixel",
        "tolerant_recall": f"share of true wrinkle pixels within {k} px of a predicted pixel",
        "tolerant_f1": "harmonic mean of tolerant precision and recall",
        "cldice": "centerline Dice (Shit et al. 2021): skeleton of prediction inside truth vs skeleton of truth inside prediction",
        "auc": "ROC-AUC over the region's pixels, from a score histogram of 80,000 bins uniform in logit over [-20, 20] "
        "(ties within a bin get half credit; within 1e-3 of scikit-learn's exact figure, also for confident models)",
        "average_precision": "area under the precision-recall curve, scikit-learn's step definition, same histogram",
        "best_threshold": "threshold maximizing pooled Dice on THIS split, the middle of the best plateau "
        "(for information; never choose a threshold on test)",
        "ground_truth": "the original masks, never dilated; evaluation images are never augmented",
    }


def _write_report(
    output: OutputFolder, report: dict, meter: SegmentationMeter, dataset: WrinkleDataset, predictor: Predictor, cfg: Config
) -> dict:
    """Pictures and per_image.csv first, metrics.json last: a folder with metrics.json is complete."""
    report["definitions"] = definitions(cfg, report["threshold"])
    report["evaluated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = meter.per_image()
    write_overlays(predictor, dataset, rows, output, cfg, report["threshold"])
    for name, png in plot_curves(meter.histogram, report["threshold"]).items():
        write_bytes_atomic(output.path(name), png)
    with atomic_write(output.path("per_image.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PER_IMAGE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    write_text_atomic(output.path("metrics.json"), json.dumps(report, indent=2) + "\n")
    output.finish()
    return report


def _describe_data(cfg: Config, split: str, dataset: WrinkleDataset) -> dict:
    return {
        "split": split,
        "region": cfg.eval.region,
        "tolerance_px": cfg.eval.tolerance_px,
        "data_sources": [f"{s.kind}:{Path(s.root).resolve()}" for s in cfg.data.sources],
        "image_size": cfg.data.image_size,
        "skipped_files": dataset.skipped,
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    split: str = "test",
    threshold: str | float | None = None,
    tta: str = "none",
    save_probs: bool = False,
    overwrite: bool = False,
    runtime: str | None = None,
    threads: int | None = None,
) -> dict:
    """Score `checkpoint` (a .pt, or an export.py .onnx; `runtime`, `threads`: see `load_network`) on
    `split` of the data its config (or `config_path` + overrides) describes; `save_probs` also writes
    each image's scored pixels to OUTPUT/probs/ (see `saving_predictor`). `output_dir` follows
    `OutputFolder`'s rules (`overwrite`)."""
    device = resolve_device("auto")
    model, ckpt_cfg, facts = load_network(checkpoint, device, runtime, threads)
    # The network is the checkpoint's, and so is what it takes (model.input: the texture channel or not):
    # a training config's model section (config.yaml's, say) describes another model and is not used.
    cfg = load_config(config_path, overrides or [], base=config_to_dict(ckpt_cfg), keep=("model",))
    if cfg.data.image_size != ckpt_cfg.data.image_size:
        log.warning("evaluating at %d px; the model was trained at %d px", cfg.data.image_size, ckpt_cfg.data.image_size)
    used_threshold = resolve_threshold(threshold, facts["threshold"], cfg, checkpoint)
    output = OutputFolder(output_dir, "evaluate.py", overwrite=overwrite)
    dataset = build_dataset(cfg, split, training=False)
    loader = make_loader(dataset, cfg.eval.batch_size, False, cfg.data.num_workers, cfg.experiment.seed)
    log.info("evaluating %s on %d %s images at threshold %.4f", checkpoint, len(dataset), split, used_threshold)
    amp = inference_amp(cfg.train.amp, device)
    predictor = model_predictor(model, device, amp, cfg.train.channels_last, tta, cfg.eval.tile, cfg.eval.overlap)
    if save_probs:
        predictor = saving_predictor(predictor, output, cfg.eval.region)
    results, meter, _ = score_loader(predictor, loader, device, cfg, threshold=used_threshold, desc=f"evaluate {split}")
    report = {
        **results,
        "threshold": used_threshold,
        **_describe_data(cfg, split, dataset),
        "model": f"checkpoint {Path(checkpoint).resolve()}",
        "runtime": "torch" if isinstance(model, nn.Module) else f"onnxruntime {'/'.join(model.providers)}",
        "checkpoint_epoch": facts["epoch"],
        "tta": tta,
        "tiles": f"{cfg.eval.tile} px windows, {cfg.eval.overlap} px overlap" if cfg.eval.tile else "off",
    }
    if "precision" in facts:  # an export.py file: what it holds and where it came from
        report.update(onnx_precision=facts["precision"], onnx_source=facts["source"])
    return _write_report(output, report, meter, dataset, predictor, cfg)


def evaluate_baseline(
    output_dir: str | Path,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    split: str = "test",
    checkpoint: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Score the ridge baseline on `split`, its threshold chosen on the validation split (best pooled F1)."""
    if checkpoint is not None:
        if is_onnx_file(checkpoint):  # only the data it names is wanted: its config, not a session
            from engine.onnx_model import read_onnx

            ckpt_cfg = read_onnx(checkpoint)[1]
        else:
            ckpt_cfg = load_model(checkpoint, resolve_device("cpu"))[1]
        cfg = load_config(config_path, overrides or [], base=config_to_dict(ckpt_cfg))
    elif config_path is not None:
        cfg = load_config(config_path, overrides or [])
    else:
        raise ConfigError("--baseline needs --config (or --checkpoint) to know which data to score")
    device = resolve_device("cpu")
    output = OutputFolder(output_dir, "evaluate.py", overwrite=overwrite)
    baseline = RidgeBaseline(cfg.data.image_size)

    def predictor(batch: dict):
        return None, baseline(batch["image"][:, :3], batch["face_mask"])

    val = build_dataset(cfg, "val", training=False)
    _, val_meter, _ = score_loader(
        predictor, make_loader(val, cfg.eval.batch_size, False, 0, 0), device, cfg, desc="baseline threshold on val"
    )
    chosen, val_dice = val_meter.histogram.best_threshold("dice")
    log.info("ridge baseline: threshold %.4f chosen on %d validation images (pooled Dice %.4f)", chosen, len(val), val_dice)
    dataset = build_dataset(cfg, split, training=False)
    results, meter, _ = score_loader(
        predictor, make_loader(dataset, cfg.eval.batch_size, False, 0, 0), device, cfg, threshold=chosen, desc=f"baseline {split}"
    )
    report = {
        **results,
        "threshold": chosen,
        "threshold_chosen_on": f"val ({len(val)} images, pooled Dice {val_dice:.4f})",
        **_describe_data(cfg, split, dataset),
        "model": f"baseline: {baseline.describe()}",
    }
    return _write_report(output, report, meter, dataset, predictor, cfg)


def saving_predictor(predictor: Predictor, output: OutputFolder, region: str) -> Predictor:
    """`predictor`, also writing `probs/<id>.npz` in `output` per image: `prob` (float32 wrinkle
    probability), `truth` (the wrinkle mask scored against) and `region` (the pixels scored), all H x W
    at the evaluation resolution, so every figure in metrics.json can be recomputed independently."""

    def predict(batch: dict):
        logits, probs = predictor(batch)
        truth, skin = batch["mask"][:, 0].bool().numpy(), batch["face_mask"][:, 0].bool().numpy()
        for i, image_id in enumerate(batch["id"]):
            scored = skin[i] if region == "skin" else np.ones_like(skin[i])
            with atomic_write(output.path(f"probs/{image_id}.npz")) as handle:
                np.savez_compressed(handle, prob=probs[i].float().cpu().numpy(), truth=truth[i], region=scored)
        return logits, probs

    return predict


def write_overlays(
    predictor: Predictor, dataset: WrinkleDataset, rows: list[dict], output: OutputFolder, cfg: Config, threshold: float
) -> None:
    """Overlays (truth green, prediction red, overlap yellow) for the best and worst images by IoU; each
    image once (a split of fewer than 2 x N_OVERLAYS images is not run through the model twice)."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["iou"])
    worst = order[:N_OVERLAYS]
    best = [i for i in reversed(order) if i not in worst][:N_OVERLAYS]
    picks = {f"worst{n + 1}": i for n, i in enumerate(worst)}
    picks.update({f"best{n + 1}": i for n, i in enumerate(best)})
    for tag, index in picks.items():
        item = dataset[index]
        batch = {key: value[None] if hasattr(value, "shape") else [value] for key, value in item.items()}
        prob = predictor(batch)[1][0].cpu().numpy()
        image = item["image"][:3].permute(1, 2, 0).numpy()  # RGB (a texture channel is not pictured)
        truth = item["mask"][0].numpy().astype(bool)
        pred = prob >= threshold
        if cfg.eval.region == "skin":
            pred &= item["face_mask"][0].numpy().astype(bool)
        panel = np.concatenate([image, overlay(image, pred, truth)], axis=1)
        write_png(output.path(f"overlays/{tag}_{item['id']}_iou{rows[index]['iou']:.3f}.png"), panel)
