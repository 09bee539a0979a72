"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, jaccard_score, precision_score, recall_score, roc_auc_score

from metrics import ScoreHistogram, SegmentationMeter, confusion_counts, scores_from_counts


def _structured_batch(rng, n=6, size=32):
    """Thin lines as truth, noisy probabilities that mostly follow them, a skin-like region."""
    truth = np.zeros((n, size, size), bool)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            r = rng.integers(2, size - 2)
            truth[i, r, rng.integers(0, 8) : rng.integers(16, size)] = True
    prob = np.clip(truth * rng.uniform(0.3, 1.0, truth.shape) + rng.uniform(0, 0.6, truth.shape) ** 3, 0, 1)
    region = np.zeros_like(truth)
    region[:, 1:-1, 2:-2] = True
    return prob.astype(np.float32), truth, region


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_pooled_and_per_image_match_sklearn(kind):
    rng = np.random.default_rng(0 if kind == "random" else 1)
    if kind == "random":
        prob = rng.random((5, 24, 24)).astype(np.float32)
        truth = rng.random((5, 24, 24)) < 0.1
        region = rng.random((5, 24, 24)) < 0.8
    else:
        prob, truth, region = _structured_batch(rng)
    meter = SegmentationMeter(threshold=0.5)
    meter.update(torch.from_numpy(prob[:3]), torch.from_numpy(truth[:3]), torch.from_numpy(region[:3]))
    meter.update(torch.from_numpy(prob[3:]), torch.from_numpy(truth[3:]), torch.from_numpy(region[3:]))
    result = meter.compute()

    y, p, s = truth[region], prob[region] >= 0.5, prob[region]
    assert result["iou"] == pytest.approx(jaccard_score(y, p))
    assert result["dice"] == pytest.approx(f1_score(y, p))
    assert result["precision"] == pytest.approx(precision_score(y, p))
    assert result["recall"] == pytest.approx(recall_score(y, p))
    assert result["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-3)
    assert result["average_precision"] == pytest.approx(average_precision_score(y, s), abs=1e-3)

    per_image = [(truth[i][region[i]], prob[i][region[i]] >= 0.5) for i in range(len(prob))]
    assert result["per_image_iou"] == pytest.approx(np.mean([jaccard_score(t, q, zero_division=1.0) for t, q in per_image]))
    assert result["per_image_dice"] == pytest.approx(np.mean([f1_score(t, q, zero_division=1.0) for t, q in per_image]))
    assert result["n_images"] == len(prob)


def test_background_outside_region_does_not_inflate_auc():
    # Inside the region the scores are uninformative; outside, a huge easy background (the seed counted it).
    rng = np.random.default_rng(2)
    prob = rng.random((1, 64, 64)).astype(np.float32)
    truth = rng.random((1, 64, 64)) < 0.2
    region = np.zeros_like(truth)
    region[:, :16] = True
    prob[~region] = 0.0
    truth[~region] = False
    meter = SegmentationMeter()
    meter.update(torch.from_numpy(prob), torch.from_numpy(truth), torch.from_numpy(region))
    assert meter.compute()["auc"] == pytest.approx(roc_auc_score(truth[region], prob[region]), abs=1e-3)
    assert abs(meter.compute()["auc"] - 0.5) < 0.06


def test_empty_masks_and_all_positive():
    # No wrinkles, none predicted: a perfect image. No wrinkles, some predicted: precision 0, IoU 0.
    counts = np.array([[0, 0, 0, 100], [0, 5, 0, 95], [10, 0, 0, 0], [0, 0, 4, 96]])
    scores = scores_from_counts(counts)
    assert scores["iou"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert scores["dice"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert scores["precision"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert scores["recall"].tolist() == [1.0, 0.0, 1.0, 0.0]
    meter = SegmentationMeter()
    meter.update(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool))
    result = meter.compute()
    assert result["per_image_iou"] == 1.0 and result["n_empty_both"] == 2
    assert np.isnan(result["auc"])  # undefined without both classes, never a made-up number


def test_confusion_counts_by_hand():
    pred = torch.tensor([[[1, 1, 0, 0]]], dtype=torch.bool)
    truth = torch.tensor([[[1, 0, 1, 0]]], dtype=torch.bool)
    assert confusion_counts(pred, truth).tolist() == [[1, 1, 1, 1]]
    region = torch.tensor([[[1, 1, 1, 0]]], dtype=torch.bool)
    assert confusion_counts(pred, truth, region).tolist() == [[1, 1, 1, 0]]


def test_threshold_sweep_finds_the_best_f1_threshold():
    rng = np.random.default_rng(3)
    truth = rng.random(20000) < 0.05
    prob = np.where(truth, rng.uniform(0.3, 1.0, truth.shape), rng.uniform(0.0, 0.4, truth.shape))
    hist = ScoreHistogram()
    hist.update(torch.from_numpy(prob), torch.from_numpy(truth))
    threshold, best = hist.best_threshold("dice")
    brute = max(f1_score(truth, prob >= t) for t in np.arange(0.0, 1.0, 0.01))
    assert best == pytest.approx(brute, abs=5e-3)
    assert f1_score(truth, prob >= threshold) == pytest.approx(best, abs=1e-6)
