"""Segmentation metrics: confusion counts first, reductions second; ranking metrics from a histogram.

Definitions (stated again in every metrics.json):
- pixels are positive when prob >= threshold; only pixels inside the scored region (face skin, or the
  whole image) count;
- pooled ("micro"): counts summed over all images, then the ratio;
- per-image ("macro"): the ratio per image, then the mean over images. Where a ratio is 0/0 (nothing
  to find and nothing predicted) the image scores 1.0; where only the denominator of precision or
  recall is zero but the image has errors, it scores 0.0;
- ROC-AUC and average precision come from a fixed-size histogram of scores with bins uniform in logit
  space (so confident models' scores near 0 or 1 are not lumped together), so memory does not grow
  with the number of pixels; scores in one bin count as ties;
- thin-structure metrics: precision / recall / F1 with a tolerance of k pixels (a predicted pixel is
  right when a true wrinkle pixel lies within Euclidean distance k, and vice versa), and centerline
  Dice (clDice, Shit et al. 2021) on one-pixel topological skeletons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

HISTOGRAM_BINS = 80_000  # 1.3 MB of counts; bin width 5e-4 in logits (about 1.2e-4 in probability near 0.5)
LOGIT_RANGE = 20.0  # the histogram covers probabilities from sigmoid(-20) = 2e-9 to 1 - 2e-9
THIN_COLUMNS = ("pred_near", "pred_total", "true_near", "true_total", "skel_pred_in_true", "skel_pred", "skel_true_in_pred", "skel_true")


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image (tp, fp, fn, tn) as an N x 4 int64 tensor, from boolean N x ... tensors."""
    pred, target = pred.bool().flatten(1), target.bool().flatten(1)
    if region is None:
        region = torch.ones_like(pred)
    region = region.bool().flatten(1)
    tp = (pred & target & region).sum(1)
    fp = (pred & ~target & region).sum(1)
    fn = (~pred & target & region).sum(1)
    tn = (~pred & ~target & region).sum(1)
    return torch.stack([tp, fp, fn, tn], dim=1).long()


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).astype(np.uint8)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of an H x W uint8 mask by a Euclidean disk of `radius` pixels."""
    return cv2.dilate(mask, _disk(radius)) if radius > 0 else mask


def skeleton(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide topological skeleton (scikit-image's thinning, Zhang-Suen for 2-D) of an H x W
    mask, as uint8 0/1: lines of any width keep their length and connectivity, as clDice assumes."""
    from skimage.morphology import skeletonize

    return skeletonize(mask > 0).astype(np.uint8)


def thin_structure_counts(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None, tolerance: int = 2) -> torch.Tensor:
    """Per-image counts (THIN_COLUMNS) for tolerance-aware precision/recall and clDice, N x 8 int64.

    Dilation (OpenCV) and skeletonization (scikit-image) run on the CPU: a few milliseconds per image,
    far below a forward pass.
    """
    pred, target = pred.bool(), target.bool()
    if pred.dim() == 4:
        pred, target = pred[:, 0], target[:, 0]
    if region is not None:
        region = region.bool()
        region = region[:, 0] if region.dim() == 4 else region
        pred, target = pred & region, target & region
    rows = []
    for p, t in zip(pred.cpu().numpy().astype(np.uint8), target.cpu().numpy().astype(np.uint8)):
        skel_p, skel_t = skeleton(p), skeleton(t)
        rows.append(
            [
                int((p & dilate(t, tolerance)).sum()),
                int(p.sum()),
                int((t & dilate(p, tolerance)).sum()),
                int(t.sum()),
                int((skel_p & t).sum()),
                int(skel_p.sum()),
                int((skel_t & p).sum()),
                int(skel_t.sum()),
            ]
        )
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 8)


def thin_scores_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Tolerant precision, recall, F1 and clDice for each row of THIN_COLUMNS counts (empty rule as above)."""
    c = np.asarray(counts, dtype=np.int64).reshape(-1, 8)
    nothing = (c[:, 1] == 0) & (c[:, 3] == 0)  # nothing to find and nothing predicted
    precision = _ratio(c[:, 0], c[:, 1], nothing)
    recall = _ratio(c[:, 2], c[:, 3], nothing)
    f1 = _ratio(2 * precision * recall, precision + recall, nothing)
    topo_precision = _ratio(c[:, 4], c[:, 5], nothing)
    topo_sensitivity = _ratio(c[:, 6], c[:, 7], nothing)
    cldice = _ratio(2 * topo_precision * topo_sensitivity, topo_precision + topo_sensitivity, nothing)
    return {"tolerant_precision": precision, "tolerant_recall": recall, "tolerant_f1": f1, "cldice": cldice}


def _ratio(numerator: np.ndarray, denominator: np.ndarray, perfect: np.ndarray) -> np.ndarray:
    """numerator / denominator; where the denominator is 0, 1.0 for a perfect image and 0.0 otherwise."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.where(perfect, 1.0, 0.0)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def scores_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """IoU, Dice, precision and recall for each row of (tp, fp, fn, tn) counts."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 4)
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    perfect = (fp == 0) & (fn == 0)
    return {
        "iou": _ratio(tp, tp + fp + fn, perfect),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, perfect),
        "precision": _ratio(tp, tp + fp, perfect),
        "recall": _ratio(tp, tp + fn, perfect),
    }


@dataclass
class ScoreHistogram:
    """Counts of positive and negative pixels per score bin: bounded-memory ROC, PR and threshold sweeps.

    Bins are uniform in logit space over [-LOGIT_RANGE, LOGIT_RANGE] (scores beyond fall in the end
    bins). Trained models are confident: nearly all background sits at probabilities of 1e-5 and
    below, which linear bins on [0, 1] lump into one bin and score as ties with the missed wrinkles.
    In logits the same pixels spread over thousands of bins, so the figures match scikit-learn's
    exact ones on saturated and on uncertain scores alike. Non-finite scores are counted apart and
    make ROC-AUC and AP NaN.
    """

    bins: int = HISTOGRAM_BINS
    positive: np.ndarray = field(init=False)
    negative: np.ndarray = field(init=False)
    invalid: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.positive = np.zeros(self.bins, np.int64)
        self.negative = np.zeros(self.bins, np.int64)

    @property
    def edges(self) -> np.ndarray:
        """Lower edge of every bin, in logits: a pixel falls in bin k when its logit is >= edges[k]."""
        return np.linspace(-LOGIT_RANGE, LOGIT_RANGE, self.bins, endpoint=False)

    def update(self, prob: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> None:
        """Add probabilities `prob` (any shape) with boolean `target`, only where `region` is set."""
        prob, target = prob.detach().flatten(), target.bool().flatten()
        if region is not None:
            keep = region.bool().flatten()
            prob, target = prob[keep], target[keep]
        finite = torch.isfinite(prob)
        if not bool(finite.all()):
            self.invalid += int((~finite).sum())
            prob, target = prob[finite], target[finite]
        # In place, in float32 (a bin is 0.0078 of float32's step at most): this runs on every
        # validation batch, and float64 temporaries of a batch's pixels cost far more than the counts.
        position = torch.logit(prob.float().clamp(0, 1))  # +-inf at 0 and 1: the end bins
        position.add_(LOGIT_RANGE).mul_(self.bins / (2 * LOGIT_RANGE)).clamp_(0, self.bins - 1)
        index = position.long().mul_(2).add_(target)
        both = torch.bincount(index, minlength=2 * self.bins).view(self.bins, 2).cpu().numpy()
        self.negative += both[:, 0]
        self.positive += both[:, 1]

    def add_counts(self, positive: np.ndarray, negative: np.ndarray, invalid: int) -> None:
        """Add another histogram's counts (its `positive`, `negative` and `invalid`), e.g. another rank's."""
        if len(positive) != self.bins:
            raise ValueError(f"cannot merge histograms of {len(positive)} and {self.bins} bins")
        self.positive += positive
        self.negative += negative
        self.invalid += invalid

    def _descending_cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """tp and fp counts when thresholding at each non-empty bin, from the highest bin down."""
        pos, neg = self.positive[::-1], self.negative[::-1]
        used = (pos + neg) > 0
        return np.cumsum(pos)[used], np.cumsum(neg)[used]

    def roc_auc(self) -> float:
        """Area under the ROC curve (ties within a bin get half credit); NaN without both classes."""
        n_pos, n_neg = self.positive.sum(), self.negative.sum()
        if n_pos == 0 or n_neg == 0 or self.invalid:
            return float("nan")
        tp, fp = self._descending_cumulative()
        tpr = np.concatenate([[0.0], tp / n_pos])
        fpr = np.concatenate([[0.0], fp / n_neg])
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # the trapezoid rule

    def average_precision(self) -> float:
        """Average precision, sum over thresholds of (R_k - R_k-1) * P_k, as scikit-learn defines it."""
        n_pos = self.positive.sum()
        if n_pos == 0 or self.invalid:
            return float("nan")
        tp, fp = self._descending_cumulative()
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / n_pos
        return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))

    def threshold_sweep(self) -> dict[str, np.ndarray]:
        """Pooled IoU and Dice (F1) with the threshold at every bin edge (prob >= threshold is positive);
        `threshold` holds the edges as probabilities, `logit` the same edges as logits."""
        tp = np.cumsum(self.positive[::-1])[::-1]
        fp = np.cumsum(self.negative[::-1])[::-1]
        fn = self.positive.sum() - tp
        counts = np.stack([tp, fp, fn, np.zeros_like(tp)], axis=1)
        scores = scores_from_counts(counts)
        edges = self.edges
        return {"threshold": _sigmoid(edges), "logit": edges, "iou": scores["iou"], "dice": scores["dice"]}

    def best_threshold(self, metric: str = "dice") -> tuple[float, float]:
        """(threshold, score) maximizing pooled `metric` ("dice" or "iou") over the sweep.

        Every edge of a run of empty bins gives the same counts, so the best score is usually a plateau
        of thresholds; its lowest edge can be 0-like (with no scores below, "everything is positive")
        and its highest edge touches the next scores. The middle of the widest best plateau (in logits)
        is the threshold least sensitive to where the bins fall; it is strictly inside (0, 1).
        """
        sweep = self.threshold_sweep()
        score = sweep[metric]
        best = float(np.max(score))
        at_best = np.flatnonzero(score == best)
        runs = np.split(at_best, np.flatnonzero(np.diff(at_best) > 1) + 1)
        widest = max(runs, key=len)  # first of the widest on ties: the lowest threshold
        middle = (sweep["logit"][widest[0]] + sweep["logit"][widest[-1]]) / 2
        return float(_sigmoid(np.float64(middle))), best


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit))


class SegmentationMeter:
    """Accumulates per-image counts at a threshold and a score histogram, then reduces them."""

    def __init__(self, threshold: float = 0.5, bins: int = HISTOGRAM_BINS, tolerance: int = 2):
        self.threshold = threshold
        self.tolerance = tolerance
        self.histogram = ScoreHistogram(bins)
        self.counts: list[np.ndarray] = []
        self.thin_counts: list[np.ndarray] = []
        self.ids: list[str] = []

    def update(self, prob: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None, ids: list[str] | None = None) -> None:
        """Add a batch: `prob` (N x H x W or N x 1 x H x W), boolean `target` and `region` of the same shape."""
        pred = prob >= self.threshold
        counts = confusion_counts(pred, target, region)
        self.counts.append(counts.cpu().numpy())
        self.thin_counts.append(thin_structure_counts(pred, target, region, self.tolerance).cpu().numpy())
        self.histogram.update(prob, target, region)
        self.ids += list(ids) if ids is not None else [str(len(self.ids) + i) for i in range(len(counts))]

    def state(self) -> dict:
        """Everything accumulated, as plain arrays (to gather across processes)."""
        counts, thin = self._stacked()
        return {
            "counts": counts,
            "thin": thin,
            "ids": list(self.ids),
            "positive": self.histogram.positive,
            "negative": self.histogram.negative,
            "invalid": self.histogram.invalid,
        }

    def merge_state(self, state: dict) -> None:
        """Add another meter's `state()` (e.g. another rank's shard of the validation set)."""
        self.counts.append(np.asarray(state["counts"]).reshape(-1, 4))
        self.thin_counts.append(np.asarray(state["thin"]).reshape(-1, 8))
        self.ids += list(state["ids"])
        self.histogram.add_counts(state["positive"], state["negative"], state["invalid"])

    def _stacked(self) -> tuple[np.ndarray, np.ndarray]:
        counts = np.concatenate(self.counts) if self.counts else np.zeros((0, 4), np.int64)
        thin = np.concatenate(self.thin_counts) if self.thin_counts else np.zeros((0, 8), np.int64)
        return counts, thin

    def per_image(self) -> list[dict]:
        """One row per image: id, counts, the strict scores and the thin-structure scores."""
        counts, thin = self._stacked()
        scores = {**scores_from_counts(counts), **thin_scores_from_counts(thin)}
        return [
            {
                "id": image_id,
                "tp": int(c[0]),
                "fp": int(c[1]),
                "fn": int(c[2]),
                "tn": int(c[3]),
                **{k: float(v[i]) for k, v in scores.items()},
            }
            for i, (image_id, c) in enumerate(zip(self.ids, counts))
        ]

    def compute(self) -> dict[str, float]:
        """Pooled and per-image scores, ROC-AUC, average precision and the best-F1 threshold."""
        counts, thin = self._stacked()
        pooled = {**scores_from_counts(counts.sum(0)), **thin_scores_from_counts(thin.sum(0))}
        per_image = {**scores_from_counts(counts), **thin_scores_from_counts(thin)}
        best_threshold, best_dice = self.histogram.best_threshold("dice")
        result: dict[str, float] = {f"{k}": float(v[0]) for k, v in pooled.items()}  # pooled is the headline
        result.update({f"per_image_{k}": float(v.mean()) if len(v) else float("nan") for k, v in per_image.items()})
        result.update(
            auc=self.histogram.roc_auc(),
            average_precision=self.histogram.average_precision(),
            best_threshold=best_threshold,
            best_threshold_dice=best_dice,
            tolerance_px=self.tolerance,
            n_images=len(counts),
            n_empty_both=int(((counts[:, 0] + counts[:, 1] + counts[:, 2]) == 0).sum()),
        )
        return result


class TextureMeter:
    """Texture-map regression (train.task=texture): absolute and squared errors summed over the scored
    pixels, in grey levels (0..255, the published weak masks' scale), then MAE, RMSE and PSNR (peak 255).

    Pooled over pixels like the segmentation counts, so the figures do not depend on batching; `state`
    and `merge_state` add up ranks' shards."""

    def __init__(self):
        self.sums = np.zeros(3, np.float64)  # |error|, error^2, pixels

    def update(self, prob: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> None:
        """Add a batch: predicted maps `prob` in [0, 1] and uint8 `target` maps (N x H x W or N x 1 x H x W)."""
        error = prob.reshape(target.shape).double() * 255.0 - target.double()
        weight = region.reshape(target.shape).double() if region is not None else torch.ones_like(error)
        self.sums += [float((error.abs() * weight).sum()), float((error.square() * weight).sum()), float(weight.sum())]

    def state(self) -> dict:
        return {"sums": self.sums.copy()}

    def merge_state(self, state: dict) -> None:
        self.sums += state["sums"]

    def compute(self) -> dict[str, float]:
        absolute, squared, pixels = self.sums
        if pixels == 0:
            return {"mae": float("nan"), "rmse": float("nan"), "psnr": float("nan"), "pixels": 0}
        mse = squared / pixels
        psnr = float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
        return {"mae": absolute / pixels, "rmse": float(np.sqrt(mse)), "psnr": float(psnr), "pixels": int(pixels)}
