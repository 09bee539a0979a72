"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, jaccard_score, precision_score, recall_score, roc_auc_score

from metrics import (
    ScoreHistogram,
    SegmentationMeter,
    confusion_counts,
    scores_from_counts,
    skeleton,
    thin_scores_from_counts,
    thin_structure_counts,
)


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


def _line(rows, cols, shape=(1, 24, 40)):
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[0, rows, cols] = True
    return mask


def test_tolerant_metrics_forgive_small_offsets_only():
    truth = _line(10, slice(5, 35))
    shifted = _line(11, slice(5, 35))  # one pixel off: strictly all wrong
    far = _line(15, slice(5, 35))
    for tolerance, expected in ((0, 0.0), (1, 1.0), (2, 1.0)):
        scores = thin_scores_from_counts(thin_structure_counts(shifted, truth, tolerance=tolerance).numpy())
        assert scores["tolerant_precision"][0] == expected and scores["tolerant_recall"][0] == expected
    assert thin_scores_from_counts(thin_structure_counts(far, truth, tolerance=2).numpy())["tolerant_f1"][0] == 0.0
    # k = 0 is the strict definition
    half = _line(10, slice(5, 20))
    strict = thin_scores_from_counts(thin_structure_counts(half, truth, tolerance=0).numpy())
    assert strict["tolerant_precision"][0] == 1.0 and strict["tolerant_recall"][0] == pytest.approx(15 / 30)


def test_tolerance_is_a_euclidean_disk():
    truth = _line(10, 10)
    diagonal = _line(12, 12)  # distance sqrt(8) ~ 2.83
    straight = _line(10, 12)  # distance 2
    assert thin_structure_counts(diagonal, truth, tolerance=2)[0, 0] == 0
    assert thin_structure_counts(straight, truth, tolerance=2)[0, 0] == 1


def test_cldice_by_hand():
    truth = torch.zeros(1, 24, 40, dtype=torch.bool)
    truth[0, 9:12, 5:35] = True  # a 3-px-wide wrinkle; its skeleton is the middle row
    skel = skeleton(truth[0].numpy().astype(np.uint8)).astype(bool)
    assert skel.sum() > 0 and not (skel & ~truth[0].numpy()).any()
    assert skel[10, 7:33].all() and (skel[:, 6:33].sum(0) == 1).all()  # the middle row, one pixel wide
    perfect = thin_scores_from_counts(thin_structure_counts(truth, truth).numpy())
    assert perfect["cldice"][0] == 1.0
    centre_only = _line(10, slice(5, 35))  # the centreline: topologically right, strictly thin
    scores = thin_scores_from_counts(thin_structure_counts(centre_only, truth).numpy())
    assert scores["cldice"][0] == pytest.approx(1.0, abs=0.1)
    assert scores_from_counts(confusion_counts(centre_only, truth).numpy())["iou"][0] == pytest.approx(1 / 3, abs=0.02)
    half = _line(10, slice(5, 20))  # finds half the wrinkle: Tprec 1, Tsens 1/2, clDice 2/3
    assert thin_scores_from_counts(thin_structure_counts(half, truth).numpy())["cldice"][0] == pytest.approx(2 / 3, abs=0.05)
    empty = torch.zeros_like(truth)
    assert thin_scores_from_counts(thin_structure_counts(empty, empty).numpy())["cldice"][0] == 1.0
    assert thin_scores_from_counts(thin_structure_counts(empty, truth).numpy())["cldice"][0] == 0.0


def test_meter_reports_thin_metrics_pooled_and_per_image():
    truth = torch.cat([_line(10, slice(5, 35)), _line(4, slice(0, 10))])
    pred = torch.cat([_line(11, slice(5, 35)), torch.zeros(1, 24, 40, dtype=torch.bool)])
    meter = SegmentationMeter(tolerance=1)
    meter.update(pred.float(), truth)
    result = meter.compute()
    assert result["tolerant_precision"] == 1.0 and result["tolerant_recall"] == pytest.approx(30 / 40)
    assert result["per_image_tolerant_recall"] == pytest.approx((1.0 + 0.0) / 2)
    assert result["tolerance_px"] == 1
    assert {"tolerant_f1", "cldice"} <= set(meter.per_image()[0])


def test_auc_and_ap_match_sklearn_on_a_confident_models_saturated_scores():
    # A trained model: 2 M background logits ~ N(-12, 2), 20 k wrinkle pixels, 70 % found ~ N(2, 1.5),
    # 30 % missed ~ N(-9, 1.5). Linear bins on [0, 1] put nearly all of it in the first bin and gave
    # ROC-AUC 0.920 / AP 0.747 against the exact 0.965 / 0.757.
    rng = np.random.default_rng(0)
    background = rng.normal(-12, 2, 2_000_000)
    wrinkles = np.concatenate([rng.normal(2, 1.5, 14_000), rng.normal(-9, 1.5, 6_000)])
    logits = np.concatenate([background, wrinkles])
    truth = np.concatenate([np.zeros(len(background), bool), np.ones(len(wrinkles), bool)])
    prob = torch.sigmoid(torch.from_numpy(logits).float())  # what the model hands over: float32 probabilities
    hist = ScoreHistogram()
    for chunk in range(4):  # batch by batch, as in evaluation
        part = slice(chunk * len(prob) // 4, (chunk + 1) * len(prob) // 4)
        hist.update(prob[part], torch.from_numpy(truth[part]))
    assert hist.roc_auc() == pytest.approx(roc_auc_score(truth, logits), abs=1e-3)
    assert hist.average_precision() == pytest.approx(average_precision_score(truth, logits), abs=1e-3)
    threshold, best = hist.best_threshold("dice")
    assert f1_score(truth, prob.numpy() >= threshold) == pytest.approx(best, abs=1e-6)


def test_best_threshold_is_the_middle_of_its_plateau_never_zero():
    # Separable scores: every threshold between 0.1 and 0.9 is perfect; the lowest edge of that plateau
    # (what was returned before) sits right on the background's scores.
    truth = np.r_[np.zeros(900, bool), np.ones(100, bool)]
    hist = ScoreHistogram()
    hist.update(torch.from_numpy(np.where(truth, 0.9, 0.1)), torch.from_numpy(truth))
    threshold, best = hist.best_threshold("dice")
    assert best == 1.0 and threshold == pytest.approx(0.5, abs=1e-3)  # logit midway between logit(0.1) and logit(0.9)
    # A collapsed model (one score everywhere): "everything positive" is the best F1, and its plateau
    # starts at the bottom of the histogram; the threshold must still be a probability inside (0, 1).
    collapsed = ScoreHistogram()
    collapsed.update(torch.full((1000,), 0.3), torch.from_numpy(truth))
    threshold, best = collapsed.best_threshold("dice")
    assert 0.0 < threshold < 0.3 and best == pytest.approx(f1_score(truth, np.ones_like(truth)))
    for metric in ("dice", "iou"):
        assert 0.0 < ScoreHistogram().best_threshold(metric)[0] < 1.0  # nothing seen at all


def test_non_finite_scores_make_ranking_metrics_nan_not_a_number():
    hist = ScoreHistogram()
    hist.update(torch.tensor([0.1, 0.9, float("nan"), 0.2]), torch.tensor([False, True, True, False]))
    assert hist.invalid == 1 and np.isnan(hist.roc_auc()) and np.isnan(hist.average_precision())


@pytest.mark.parametrize("width", [1, 2, 3])
def test_skeleton_is_one_pixel_wide_and_keeps_the_line(width):
    mask = np.zeros((24, 60), np.uint8)
    mask[10 : 10 + width, 5:55] = 1
    slanted = np.zeros((60, 60), np.uint8)
    for x in range(5, 55):  # a 1:3 slope drawn `width` pixels thick
        slanted[20 + x // 3 : 20 + x // 3 + width, x] = 1
    for line, length in ((mask, 50), (slanted, 50)):
        skel = skeleton(line).astype(bool)
        assert not (skel & ~line.astype(bool)).any()
        columns = skel[:, 10:50].sum(0)
        assert (columns == 1).all(), f"width {width}: skeleton is {columns.max()} px wide"  # the old one was 2 px on even widths
        assert skel.sum() >= length - width - 2  # the line's length survives
    # clDice of the centreline of a 2-px line against that line: topologically perfect
    truth = torch.from_numpy(mask[None].astype(bool))
    centre = torch.zeros_like(truth)
    centre[0, 10 + (width - 1) // 2, 5:55] = True
    assert thin_scores_from_counts(thin_structure_counts(centre, truth).numpy())["cldice"][0] > 0.97
