"""Pictures a reviewer looks at first: overlays of predictions on faces, ROC / PR / threshold curves,
and a run's training curves."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from metrics import ScoreHistogram

GREEN = np.array([0, 220, 0], np.float32)  # ground truth only
RED = np.array([255, 30, 30], np.float32)  # prediction only (or any prediction, without ground truth)
YELLOW = np.array([255, 230, 0], np.float32)  # both


def overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, alpha: float = 0.75) -> np.ndarray:
    """RGB uint8 image with predicted pixels red; with `truth`, missed pixels green and hits yellow."""
    out = image.copy()
    pred = pred.astype(bool)
    layers = [(pred, RED)] if truth is None else [(pred & ~truth, RED), (truth & ~pred, GREEN), (pred & truth, YELLOW)]
    for where, color in layers:
        # Only the marked pixels are blended: a photo of many megapixels is not converted as a whole.
        out[where] = np.clip((1 - alpha) * out[where].astype(np.float32) + alpha * color + 0.5, 0, 255).astype(np.uint8)
    return out


REGION_COLORS = {  # outlines of the facial regions predict.py reports (RGB)
    "forehead": (80, 160, 255),
    "glabella": (255, 230, 0),
    "periorbital": (0, 220, 120),
    "cheeks": (255, 140, 230),
}


def draw_region_outlines(image: np.ndarray, regions: dict[str, np.ndarray]) -> np.ndarray:
    """A copy of `image` with each region's outline drawn in its REGION_COLORS colour, about 1/400
    of the image side thick."""
    import cv2

    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for name, mask in regions.items():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, REGION_COLORS.get(name, (255, 255, 255)), thickness, lineType=cv2.LINE_AA)
    return out


def plot_curves(histogram: ScoreHistogram, threshold: float) -> dict[str, bytes]:
    """roc.png, pr.png and threshold.png (pooled F1 and IoU against the threshold), as PNG bytes by name
    (the caller writes them, atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig) -> bytes:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        return buffer.getvalue()

    pos, neg = histogram.positive[::-1], histogram.negative[::-1]
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    n_pos, n_neg = max(pos.sum(), 1), max(neg.sum(), 1)
    plots = {}

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(np.r_[0, fp / n_neg], np.r_[0, tp / n_pos])
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC (AUC {histogram.roc_auc():.3f})")
    plots["roc.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    used = (pos + neg) > 0
    ax.plot((tp / n_pos)[used], (tp / np.maximum(tp + fp, 1))[used])
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1), title=f"PR (AP {histogram.average_precision():.3f})")
    plots["pr.png"] = png(fig)

    sweep = histogram.threshold_sweep()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(sweep["threshold"], sweep["dice"], label="F1 (Dice), pooled")
    ax.plot(sweep["threshold"], sweep["iou"], label="IoU, pooled")
    ax.axvline(threshold, color="grey", ls=":", label=f"used: {threshold:.3f}")
    ax.set_xscale("logit")  # the sweep's thresholds are spaced in logits: confident models live near 0 and 1
    ax.set(xlabel="threshold (logit scale)", ylabel="score", xlim=(1e-4, 1 - 1e-4), ylim=(0, 1))
    ticks = [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks], fontsize=7)
    ax.minorticks_off()
    ax.legend(loc="best", fontsize=8)
    plots["threshold.png"] = png(fig)
    return plots


# curves.png: (panel, metrics.csv column, legend label). The middle panel holds what the task's rows hold:
# IoU / Dice (segmentation) or MAE / RMSE in grey levels with PSNR on a right-hand axis (texture).
TRAINING_SERIES = (
    ("loss", "train_loss", "train"),
    ("loss", "val_loss", "validation"),
    ("scores", "val_iou", "IoU"),
    ("scores", "val_dice", "Dice"),
    ("scores", "val_mae", "MAE"),
    ("scores", "val_rmse", "RMSE"),
    ("psnr", "val_psnr", "PSNR"),
    ("lr", "lr", "learning rate"),
)


def _number(value: Any) -> float:
    """A metrics.csv cell as a float: NaN for an empty, missing or non-numeric one, and for infinities."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def training_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The curves of `rows` (metrics.csv's, as strings or numbers) by panel, then by column:
    (epochs, values), ordered by epoch; a row without an epoch is skipped and a repeated epoch counts once
    (its last row). Values that are empty or not finite (and learning rates <= 0) are NaN, gaps in the
    curve; a column with no value left is left out."""
    by_epoch: dict[int, Mapping[str, Any]] = {}
    for row in rows:
        epoch = _number(row.get("epoch"))
        if not math.isnan(epoch):
            by_epoch[int(epoch)] = row
    epochs = np.array(sorted(by_epoch), dtype=np.int64)
    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {"loss": {}, "scores": {}, "psnr": {}, "lr": {}}
    for panel, column, _ in TRAINING_SERIES:
        values = np.array([_number(by_epoch[e].get(column)) for e in epochs], dtype=np.float64)
        if column == "lr":
            values[~(values > 0)] = np.nan  # a log scale has no place for 0
        if np.isfinite(values).any():
            series[panel][column] = (epochs, values)
    return series


def training_figure(rows: Sequence[Mapping[str, Any]]):
    """The matplotlib Figure of curves.png: losses, validation scores and the learning rate (log scale)
    against epoch, each value a marker (one epoch is a visible point). Made without pyplot: no backend
    is chosen for, and no figure left open in, the training process."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = training_series(rows)
    labels = {column: label for _, column, label in TRAINING_SERIES}
    n_epochs = max((len(x) for panel in series.values() for x, _ in panel.values()), default=0)
    style = {"marker": "o", "markersize": 4 if n_epochs <= 40 else 2, "linewidth": 1.5}

    fig = Figure(figsize=(12, 3.6))
    loss_ax, score_ax, lr_ax = fig.subplots(1, 3)
    psnr_ax = score_ax.twinx() if series["psnr"] else None
    texture = bool(series["psnr"]) or any(column in series["scores"] for column in ("val_mae", "val_rmse"))
    titles = ("loss", "validation MAE / PSNR" if texture else "validation IoU / Dice", "learning rate")
    colors = iter(f"C{i}" for i in range(10))
    for ax, panel, title in ((loss_ax, "loss", titles[0]), (score_ax, "scores", titles[1]), (lr_ax, "lr", titles[2])):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(True, alpha=0.3)
        for column, (x, y) in series[panel].items():
            ax.plot(x, y, color=next(colors), label=labels[column], **style)
    loss_ax.set_ylabel("loss")
    score_ax.set_ylabel("grey levels (0..255)" if texture else "score")
    if psnr_ax is not None:
        for column, (x, y) in series["psnr"].items():
            psnr_ax.plot(x, y, color=next(colors), linestyle="--", label=labels[column], **style)
        psnr_ax.set_ylabel("PSNR (dB)")
    for ax in (loss_ax, score_ax, psnr_ax):
        if ax is not None:  # 126.15, not "+1.261e2" above the axis and 0.054
            ax.ticklabel_format(axis="y", useOffset=False)
    if series["lr"]:
        lr_ax.set_yscale("log")
    epochs = [x for panel in series.values() for x, _ in panel.values()]
    if epochs:  # whole epochs on the axis, and a single one in the middle of it
        first, last = min(x[0] for x in epochs), max(x[-1] for x in epochs)
        pad = max(0.5, 0.04 * (last - first))
        for ax in (loss_ax, score_ax, lr_ax):
            ax.set_xlim(first - pad, last + pad)
    for ax, twin in ((loss_ax, None), (score_ax, psnr_ax), (lr_ax, None)):
        handles = ax.get_lines() + (twin.get_lines() if twin is not None else [])
        if handles:  # on the twin axis when there is one, so that its curves pass under the legend too
            (twin or ax).legend(handles=handles, loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center", color="grey")
    fig.tight_layout()
    return fig


def plot_training_curves(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """curves.png of metrics.csv's `rows` as PNG bytes (1200 x 360 px; the caller writes it, atomically)."""
    buffer = io.BytesIO()
    training_figure(rows).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
