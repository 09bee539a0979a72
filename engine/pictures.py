"""Pictures a reviewer looks at first: overlays of predictions on faces, ROC / PR / threshold curves."""

from __future__ import annotations

import io

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
