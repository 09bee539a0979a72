"""Weak supervision (train.task=texture): texture-map targets (computed for unlabeled faces, read as stored
for FFHQ-Wrinkle's weak masks), the regression loss and metrics, and the two stages through train.py."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from config import ConfigError, load_config
from data.dataset import WrinkleDataset, build_dataset, split_samples
from data.decode import load_sample
from data.image_io import write_png
from data.sources import ffhq_wrinkle_samples, weak_samples
from data.synthetic import render_face
from data.texture import texture_map
from engine.cli import run_cli
from losses import TextureLoss
from metrics import TextureMeter
from tests.conftest import PROJECT_ROOT
from train import main as train_main

QUICKSTART = PROJECT_ROOT / "configs" / "quickstart.yaml"
TEXTURE = ["train.task=texture", "train.select_metric=val_loss"]


def weak_folder(root: Path, n: int = 4, size: int = 96, skin_masks: bool = True) -> Path:
    """Unlabeled synthetic faces in images/ with skin masks in face_masks/."""
    for index in range(n):
        face = render_face(5, size, size, index)
        write_png(root / "images" / f"face{index}.png", face.image)
        if skin_masks:
            write_png(root / "face_masks" / f"face{index}.png", face.skin_mask)
    return root


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_unlabeled_faces_serve_their_texture_maps_as_targets(tmp_path, cache):
    samples = weak_samples(weak_folder(tmp_path / "faces"))
    dataset = WrinkleDataset(samples, 96, cache=cache, cache_dir=tmp_path / "cache", target="texture")
    for index, sample in enumerate(samples):
        item = dataset[index]
        image, _, skin = load_sample(sample, 96)
        expected = texture_map(image, skin)
        assert item["mask"].shape == (1, 96, 96) and item["mask"].dtype == torch.uint8
        assert expected[skin].max() > 20 and not expected[~skin].any()  # a real map, zero off skin
        np.testing.assert_array_equal(item["mask"][0].numpy(), expected)
        assert torch.equal(item["mask"], dataset[index]["mask"])  # deterministic
    assert item["image"].shape == (3, 96, 96)  # the map is the target, not an input channel


def test_a_corrupt_unlabeled_face_is_reported_and_skipped(tmp_path, caplog):
    root = weak_folder(tmp_path / "faces", n=3)
    (root / "images" / "face1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with caplog.at_level(logging.WARNING):
        dataset = WrinkleDataset(weak_samples(root), 96, target="texture")
    assert len(dataset) == 2 and dataset.skipped == ["face1"] and "face1.png" in caplog.text


def test_published_weak_masks_are_targets_as_stored(tmp_path):
    """FFHQ-Wrinkle's weak_wrinkle_masks/ hold uint8 texture maps: the target keeps their grey levels
    (resized with the image, zero off skin), where the segmentation task binarizes them."""
    root, images = tmp_path / "ffhq-wrinkle", tmp_path / "images"
    stored = (np.arange(64 * 64).reshape(64, 64) % 200).astype(np.uint8)
    write_png(images / "00000" / "00007.png", np.full((64, 64, 3), 150, np.uint8))
    write_png(root / "weak_wrinkle_masks" / "00000" / "00007.png", stored)
    labels = np.zeros((32, 32), np.uint8)
    labels[:, :24] = 1
    (root / "face_parsed_labels").mkdir(parents=True)
    np.save(root / "face_parsed_labels" / "00007.npy", labels)
    [sample] = ffhq_wrinkle_samples(root, images, masks="weak")
    target = WrinkleDataset([sample], 64, target="texture")[0]["mask"][0].numpy()
    np.testing.assert_array_equal(target[:, :48], stored[:, :48])
    assert not target[:, 48:].any()
    mask = WrinkleDataset([sample], 64)[0]["mask"][0].numpy()  # segmentation: binarized as before
    assert set(np.unique(mask)) <= {0, 1}


def test_texture_loss_and_metrics_are_pooled_over_pixels():
    from skimage.metrics import peak_signal_noise_ratio

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=gen)
    target = torch.randint(0, 256, (3, 1, 8, 8), generator=gen).to(torch.uint8)
    skin = torch.rand(3, 1, 8, 8, generator=gen) > 0.3
    loss = TextureLoss()
    whole = loss(logits, target, skin)
    parts = loss.from_sums(sum(loss.sums(logits[i : i + 1], target[i : i + 1], skin[i : i + 1]) for i in range(3)))
    assert torch.allclose(whole, parts)
    pred = torch.sigmoid(logits)
    assert torch.allclose(whole, ((pred - target / 255.0)[skin] ** 2).mean())
    meter = TextureMeter()
    for i in range(3):
        meter.update(pred[i : i + 1], target[i : i + 1, 0], skin[i : i + 1, 0])
    result = meter.compute()
    predicted, truth = (pred[skin] * 255).double().numpy(), target[skin].double().numpy()
    assert result["mae"] == pytest.approx(np.abs(predicted - truth).mean())
    assert result["psnr"] == pytest.approx(peak_signal_noise_ratio(truth, predicted, data_range=255))
    assert result["pixels"] == int(skin.sum())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.sources.0.kind=weak"], "data.sources.0.kind: weak serves texture maps as targets; it needs train.task=texture"),
        ([*TEXTURE, "model.input=rgb_texture"], "model.input: with train.task=texture the texture map is the target"),
        (["train.task=texture"], "train.select_metric: val_iou has no meaning for train.task=texture"),
        (["train.select_metric=val_mae"], "train.select_metric: val_mae is a texture-task metric"),
    ],
)
def test_the_task_is_checked_against_the_rest_of_the_config(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_weak_faces_mix_with_labeled_sources_in_one_config(tmp_path):
    weak_folder(tmp_path / "faces", n=4)
    overrides = [
        *TEXTURE,
        f"data.sources.0.root={tmp_path / 'synthetic'}",
        "data.sources.0.n_images=6",
        f"data.sources=[{{kind: synthetic, root: {tmp_path / 'synthetic'}, n_images: 6}}, {{kind: weak, root: {tmp_path / 'faces'}}}]",
        "data.image_size=96",
        "data.split.val_fraction=0.2",
        "data.split.test_fraction=0.0",
    ]
    cfg = load_config(QUICKSTART, overrides)
    splits = split_samples(cfg)
    every = [s for split in splits.values() for s in split]
    assert {s.source for s in every} == {"0:synthetic", "1:weak"} and len(every) == 10
    train = build_dataset(cfg, "train", splits["train"], training=True)
    targets = [train[i]["mask"] for i in range(len(train))]
    assert all(t.dtype == torch.uint8 and t.max() > 1 for t in targets)  # texture maps, labeled faces included


def tiny_run(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        "--config",
        str(QUICKSTART),
        f"experiment.name={name}",
        f"experiment.output_dir={tmp_path / 'runs'}",
        f"data.sources.0.root={tmp_path / 'synthetic'}",
        "data.sources.0.n_images=10",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.image_size=64",
        "train.epochs=1",
        "train.batch_size=4",
        "logging.wandb=disabled",
        *extra,
    ]


def test_stage_one_then_stage_two_through_train_py(tmp_path, capsys, caplog):
    def train(*args: str) -> Path:
        assert run_cli(train_main, list(args)) == 0
        return Path(capsys.readouterr().out.strip().splitlines()[-1])

    stage1 = train(*tiny_run(tmp_path, "stage1", *TEXTURE))
    rows = list(csv.DictReader(open(stage1 / "metrics.csv")))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_mae", "val_rmse", "val_psnr", "lr", "epoch_seconds"]
    assert 0 <= float(rows[0]["val_mae"]) <= 255 and float(rows[0]["val_psnr"]) > 0
    best = stage1 / "checkpoints" / "best.pt"
    assert torch.load(best, weights_only=True)["config"]["train"]["task"] == "texture"

    with caplog.at_level(logging.INFO, logger="engine.trainer"):
        stage2 = train(*tiny_run(tmp_path, "stage2", f"model.init_from={best}"))
    told = [r.getMessage() for r in caplog.records if "trained for train.task=texture, now segmentation" in r.getMessage()]
    assert len(told) == 1 and "output head (head)" in told[0]
    assert any("loaded" in r.getMessage() and "0 missing" in r.getMessage() for r in caplog.records)
    rows = list(csv.DictReader(open(stage2 / "metrics.csv")))
    assert "val_iou" in rows[0] and 0 <= float(rows[0]["val_iou"]) <= 1

    # A stage-1 checkpoint predicts texture maps: evaluate.py and predict.py refuse it in one line.
    import evaluate

    assert run_cli(evaluate.main, ["--checkpoint", str(best), "--output", str(tmp_path / "eval")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained for train.task=texture" in err[0] and not (tmp_path / "eval").exists()


def test_augmentation_moves_the_texture_target_with_the_face_and_leaves_its_values(tmp_path):
    from data.transforms import build_train_transform

    off = [f"data.augment.{k}=0" for k in ("affine_p", "clahe_p", "blur_p")]
    cfg = load_config(None, [*off, "data.augment.hflip_p=1", "data.augment.noise_p=1"])
    samples = weak_samples(weak_folder(tmp_path / "faces", n=1))
    plain = WrinkleDataset(samples, 96, target="texture")[0]
    moved = WrinkleDataset(samples, 96, transform=build_train_transform(cfg.data.augment, seed=0), target="texture")[0]
    assert torch.equal(moved["mask"], plain["mask"].flip(-1))  # flipped with the face, not touched by the noise
    assert not torch.equal(moved["image"], plain["image"].flip(-1))  # the noise did reach the RGB
    assert torch.equal(moved["face_mask"], plain["face_mask"].flip(-1))
