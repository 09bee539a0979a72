"""Tiled prediction (engine/tiling.py): windows cover every pixel, blend seamlessly, keep memory to the tile."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from config import ConfigError, load_config
from engine.inference import model_predictor
from engine.tiling import blend_weight, tile_origins, tiled_probabilities


@pytest.mark.parametrize(("length", "tile", "overlap"), [(128, 32, 8), (100, 32, 8), (33, 32, 0), (32, 32, 16), (20, 32, 4), (257, 64, 63)])
def test_windows_cover_every_pixel_and_share_at_least_the_overlap(length, tile, overlap):
    origins = tile_origins(length, tile, overlap)
    covered = torch.zeros(length, dtype=torch.int64)
    for start in origins:
        assert start >= 0 and (start + tile <= length or (start == 0 and length < tile))
        covered[start : start + tile] += 1
    assert covered.min() >= 1
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(origins))  # neighbours share >= overlap
    assert origins == sorted(set(origins))


def test_bad_tiles_are_refused():
    for tile, overlap in ((0, 0), (32, 32), (32, -1)):
        with pytest.raises(ValueError, match="tile > 0 and 0 <= overlap < tile"):
            tile_origins(100, tile, overlap)


def test_the_blend_weight_ramps_over_the_overlap_and_is_positive_everywhere():
    weight = blend_weight(32, 8)
    assert weight.min() > 0 and weight[8:24, 8:24].eq(1).all()
    assert weight[0, 16] < weight[4, 16] < weight[8, 16] and torch.equal(weight, weight.T)
    assert blend_weight(16, 0).eq(1).all()


def test_a_constant_prediction_blends_to_the_same_constant():
    x = torch.rand(2, 3, 100, 130)
    out = tiled_probabilities(lambda crops: torch.full(crops.shape[:1] + crops.shape[2:], 0.3), x, 32, 8)
    assert out.shape == (2, 100, 130) and torch.allclose(out, torch.full_like(out, 0.3), atol=1e-6)


def test_a_pixelwise_model_gives_the_whole_image_prediction_exactly_where_tiles_meet():
    """A model whose output at a pixel depends on that pixel only: tiling must not change anything, so
    any misplaced window, swapped batch item or wrong weight shows."""

    def pixelwise(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(3 * x[:, 0] - 2 * x[:, 1] + x[:, 2])

    x = torch.rand(3, 3, 97, 150)
    whole = pixelwise(x)
    for tile, overlap, per_batch in ((32, 8, 4), (40, 0, 1), (64, 31, 7)):
        assert torch.allclose(tiled_probabilities(pixelwise, x, tile, overlap, per_batch), whole, atol=1e-6)


def test_memory_stays_bounded_by_the_tile_for_an_image_four_times_as_large():
    """The model never sees more than max(tiles_per_batch, N) windows of tile x tile pixels at once; the
    image-sized buffers are the two float32 accumulators (N x H x W and H x W)."""
    seen = []

    def spy(crops: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(crops.shape))
        return crops.mean(1)

    x = torch.rand(1, 3, 128, 128)  # 4 x the 32 px tile on each side
    for per_batch, most in ((None, 1), (4, 4)):  # by default one window per image at a time
        seen.clear()
        tiled_probabilities(spy, x, 32, 8, **({} if per_batch is None else {"tiles_per_batch": per_batch}))
        assert max(shape[0] for shape in seen) == most and all(shape[2:] == (32, 32) for shape in seen)
        assert sum(shape[0] for shape in seen) == len(tile_origins(128, 32, 8)) ** 2  # each window once


def test_the_model_predictor_tiles_large_images_with_tta():
    from unet import build_model

    model = build_model(load_config(None, ["model.encoder=resnet18", "model.encoder_weights=null", "model.freeze_encoder=none"]).model)
    batch = {"image": torch.randint(0, 256, (2, 3, 96, 128), dtype=torch.uint8)}
    logits, probs = model_predictor(model, torch.device("cpu"), tta="hflip", tile=64, overlap=16)(batch)
    assert logits is None and probs.shape == (2, 96, 128) and torch.isfinite(probs).all()
    small = {"image": batch["image"][:, :, :64, :64]}
    tiled, plain = (model_predictor(model, torch.device("cpu"), tile=t)(small) for t in (64, 0))
    assert tiled[0] is not None and torch.equal(tiled[1], plain[1])  # an image that fits one tile is not tiled


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["eval.tile=16"], "eval.tile: 0 \\(off\\) or at least 32"),
        (["eval.tile=64", "eval.overlap=64"], "eval.overlap: must be below eval.tile"),
        (
            [
                "model.arch=swin_unetr",
                "model.input=rgb_texture",
                "model.encoder_weights=null",
                "model.freeze_encoder=none",
                "eval.tile=512",
            ],
            "eval.tile: swin_unetr pads every input to a multiple of 1024 px",
        ),
    ],
)
def test_tile_settings_are_checked(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_evaluate_reads_larger_images_in_tiles(tmp_path, capsys):
    """A model trained at 64 px scores 128 px images in 64 px windows (evaluate.py --tile / --overlap)."""
    import evaluate
    from config import config_to_dict
    from engine.checkpoint import model_state, save_checkpoint
    from engine.cli import run_cli
    from tests.conftest import PROJECT_ROOT
    from unet import build_model

    cfg = load_config(PROJECT_ROOT / "configs" / "quickstart.yaml", ["data.image_size=64"])
    save_checkpoint(tmp_path / "m.pt", {"model": model_state(build_model(cfg.model)), "config": config_to_dict(cfg), "threshold": 0.5})
    data = [f"data.sources.0.root={tmp_path / 'synthetic'}", "data.sources.0.n_images=8", "data.split.test_fraction=0.25"]
    args = ["--checkpoint", str(tmp_path / "m.pt"), "--output", str(tmp_path / "eval"), "--tile", "64", "--overlap", "16"]
    assert run_cli(evaluate.main, [*args, *data, "data.image_size=128", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["tiles"] == "64 px windows, 16 px overlap" and metrics["image_size"] == 128 and metrics["n_images"] == 2
