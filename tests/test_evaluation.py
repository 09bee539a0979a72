"""Test-time augmentation and the ridge baseline."""

from __future__ import annotations

import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from data.synthetic import render_face
from engine.inference import model_predictor
from engine.ridge_baseline import RidgeBaseline


class ColumnLogits(nn.Module):
    """A deliberately asymmetric 'model': the logit of a pixel is its column index, minus the centre."""

    def forward(self, x):
        width = x.shape[-1]
        columns = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
        return columns.expand(x.shape[0], 1, x.shape[-2], width).clone()


def test_hflip_tta_averages_with_the_mirrored_prediction():
    batch = {"image": torch.zeros(2, 3, 4, 6, dtype=torch.uint8)}
    plain = model_predictor(ColumnLogits(), torch.device("cpu"))(batch)[1]
    assert not torch.allclose(plain[..., 0], plain[..., -1])
    _, averaged = model_predictor(ColumnLogits(), torch.device("cpu"), tta="hflip")(batch)
    assert torch.allclose(averaged, torch.full_like(averaged, 0.5), atol=1e-6)  # sigmoid(c) + sigmoid(-c) = 1


def test_ridge_baseline_finds_synthetic_wrinkles():
    faces = [render_face(21, 192, 192, i) for i in range(4)]
    images = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1) for f in faces])
    skin = torch.stack([torch.from_numpy(f.skin_mask)[None] for f in faces])
    scores = RidgeBaseline(192)(images, skin)
    assert scores.shape == (4, 192, 192) and scores.min() >= 0 and scores.max() <= 1
    region = torch.stack([torch.from_numpy(f.skin_mask) for f in faces])
    truth = torch.stack([torch.from_numpy(f.wrinkle_mask) for f in faces])
    assert roc_auc_score(truth[region].numpy(), scores[region].numpy()) > 0.8
