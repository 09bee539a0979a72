"""Published models: the seed's ResNet50 U-Net (its exact key set) and importing its released weights."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cli import run_cli
from engine.errors import OutputError, UnknownNameError
from tests.conftest import fixture_shapes, random_weights
from unet import import_weights as iw
from unet.seed_unet import SEED_KEY_COUNT, SEED_PARAMETER_COUNT, SeedUNet
from unet.unet_model import WeightsError

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def published_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every key of the seed's released state dict, from the fixture."""
    return fixture_shapes("seed_unet_keys.txt")


@pytest.fixture(scope="module")
def seed_model() -> SeedUNet:
    return SeedUNet().eval()


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict:
    """The released weights' two containers, with random values: the seed's training .pth (DataParallel
    prefixes, optimizer and scheduler state beside the weights) and the Hugging Face .safetensors."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("published")
    weights = random_weights(published_shapes())
    pth = folder / "best_checkpoint_iou032.pth"
    torch.save(
        {
            "epoch": 31,
            "model_state_dict": {f"module.{k}": v for k, v in weights.items()},
            "optimizer_state_dict": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
            "scheduler_state_dict": {"last_epoch": 31},
            "best_val_iou": 0.3254,
            "all_metrics": {"val_iou": [0.1, 0.3254]},
        },
        pth,
    )
    safetensors = folder / "wrinkle_model.safetensors"
    save_file(weights, str(safetensors), metadata={"epoch": "31", "best_val_iou": "0.3254"})
    return {"weights": weights, "pth": pth, "safetensors": safetensors}


def test_seed_unet_has_exactly_the_published_keys_and_shapes(seed_model):
    shapes = published_shapes()
    # The fixture against the facts (PUBLISHED_MODELS.md section 2), then the model against the fixture.
    assert len(shapes) == SEED_KEY_COUNT == 390
    assert sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(BUFFERS)) == SEED_PARAMETER_COUNT == 72_293_185
    assert shapes["input_layer.0.weight"] == (64, 3, 7, 7) and "input_layer.1.running_var" in shapes
    ups = [shapes[f"up{i}.up.weight"][:2] for i in range(1, 6)]
    assert ups == [(2048, 1024), (1024, 512), (512, 256), (256, 128), (128, 64)]
    convs = [shapes[f"up{i}.conv.double_conv.0.weight"][:2] for i in range(1, 6)]
    assert convs == [(1024, 2048), (512, 1024), (256, 512), (128, 192), (64, 64)]
    assert shapes["outc.conv.weight"] == (1, 64, 1, 1) and shapes["outc.conv.bias"] == (1,)
    assert {k: tuple(v.shape) for k, v in seed_model.state_dict().items()} == shapes
    assert sum(p.numel() for p in seed_model.parameters()) == SEED_PARAMETER_COUNT


def test_seed_unet_gives_full_resolution_logits_for_any_size(seed_model):
    with torch.no_grad():
        out = seed_model(torch.rand(2, 3, 40, 56))
    assert out.shape == (2, 1, 40, 56) and torch.isfinite(out).all()
    assert seed_model.normalize.mean.shape == (1, 3, 1, 1)  # normalization inside, yet no state-dict keys (above)


def test_seed_unet_wires_its_skips_as_the_seed_did(seed_model):
    # The released weights expect the seed's wiring: up4's skip is input_layer's stride-2 output (the
    # max-pool comes after it), and every skip comes before the upsampled features in the concatenation.
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        seed_model.input_layer.register_forward_hook(lambda _m, _i, out: seen.setdefault("x0", out.clone())),
        seed_model.up4.conv.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("up4_in", inputs[0].clone())),
        seed_model.up3.conv.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("up3_in", inputs[0].clone())),
        seed_model.encoder1.register_forward_hook(lambda _m, _i, out: seen.setdefault("x1", out.clone())),
    ]
    try:
        with torch.no_grad():
            seed_model(torch.rand(1, 3, 64, 64))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["x0"].shape == (1, 64, 32, 32) and seen["x1"].shape == (1, 256, 16, 16)
    assert torch.equal(seen["up4_in"][:, :64], seen["x0"]) and torch.equal(seen["up3_in"][:, :256], seen["x1"])


def test_seed_unet_freezes_its_shallow_stages_and_keeps_their_batchnorm_in_eval(seed_model):
    model = copy.deepcopy(seed_model)
    model.freeze_encoder("partial", 2)
    model.train()
    frozen, trained = [model.input_layer, model.encoder1, model.encoder2], [model.encoder3, model.encoder4, model.up1, model.outc]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in trained for p in m.parameters())
    assert all(not bn.training for m in frozen for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    assert all(bn.training for m in trained for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    model.freeze_encoder("all")
    assert not any(p.requires_grad for p in model.encoder4.parameters()) and model.up5.up.weight.requires_grad
    model.freeze_encoder("none")
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in model.modules())
    with pytest.raises(UnknownNameError, match="model.freeze_encoder: unknown policy 'some'"):
        model.freeze_encoder("some")


@pytest.mark.parametrize("container", ["pth", "safetensors"])
def test_import_reproduces_the_published_weights_and_warns_of_an_unknown_digest(published, container, tmp_path, caplog):
    source, output = published[container], tmp_path / "seed.pt"
    digest = iw.file_digest(source, "sha256")
    with caplog.at_level(logging.INFO, logger="unet.import_weights"):
        assert iw.import_weights("seed-unet", source, output) == output
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and digest in warnings[0] and "not a known seed-unet release" in warnings[0]
    state = load_checkpoint(output)
    assert state["format"] == 1 and state["epoch"] == 0 and state["threshold"] == 0.5
    assert state["imported_from"] == {"file": source.name, "sha256": digest, "model": "seed-unet"}
    cfg = state["config"]
    assert cfg["model"]["arch"] == "seed_unet" and cfg["model"]["encoder_weights"] is None and cfg["model"]["freeze_encoder"] == "none"
    assert (cfg["data"]["image_size"], cfg["data"]["zero_non_skin"]) == (512, True)
    assert (cfg["face"]["align"], cfg["face"]["skin"], cfg["face"]["skin_classes"], cfg["eval"]["threshold"]) == (
        "ffhq",
        "bisenet",
        [1, 10],
        0.5,
    )
    model = SeedUNet()
    model.load_state_dict(state["model"], strict=True)
    expected = published["weights"]
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_a_known_digest_imports_without_a_warning(published, tmp_path, caplog, monkeypatch):
    source = published["safetensors"]
    known = dataclasses.replace(iw.PUBLISHED["seed-unet"], known_sha256=frozenset({iw.file_digest(source, "sha256")}))
    monkeypatch.setitem(iw.PUBLISHED, "seed-unet", known)
    with caplog.at_level(logging.INFO, logger="unet.import_weights"):
        iw.import_weights("seed-unet", source, tmp_path / "seed.pt")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("is a known seed-unet release" in r.getMessage() for r in caplog.records)


def test_weights_of_another_network_are_a_one_line_error(published, tmp_path, capsys):
    weights = dict(published["weights"])
    weights["head.conv.weight"] = weights.pop("outc.conv.weight")
    weights["up4.up.weight"] = torch.zeros(256, 64, 2, 2)
    wrong, output = tmp_path / "other.pth", tmp_path / "seed.pt"
    torch.save(weights, wrong)  # a bare state dict
    with pytest.raises(WeightsError) as caught:
        iw.import_weights("seed-unet", wrong, output)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{wrong}: not the seed-unet weights")
    assert "1 missing (e.g. outc.conv.weight)" in message and "1 unexpected (e.g. head.conv.weight)" in message
    assert "1 wrongly shaped (e.g. up4.up.weight (256, 64, 2, 2) vs (256, 128, 2, 2))" in message
    assert not output.exists()
    # The CLI prints it as one line and exits 1.
    assert run_cli(iw.main, ["seed-unet", str(wrong), "--output", str(output)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]


def test_an_existing_output_is_replaced_only_with_overwrite(published, tmp_path, capsys):
    output = tmp_path / "seed.pt"
    output.write_bytes(b"an earlier checkpoint")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        iw.import_weights("seed-unet", published["safetensors"], output)
    assert output.read_bytes() == b"an earlier checkpoint"
    assert run_cli(iw.main, ["seed-unet", str(published["safetensors"]), "--output", str(output), "--overwrite"]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    assert load_checkpoint(output)["imported_from"]["model"] == "seed-unet"


def test_an_imported_checkpoint_loads_and_segments_photos(published, tmp_path):
    from config import ModelConfig, load_config
    from data.image_io import write_png
    from data.synthetic import render_face
    from engine.inference import load_model
    from engine.segment_photos import predict_folder
    from unet import build_model

    if "arch" not in ModelConfig.model_fields:
        pytest.skip("config.py has no model.arch yet")
    if not isinstance(build_model(load_config(None, ["model.arch=seed_unet"]).model, encoder_weights=False), SeedUNet):
        pytest.skip("unet.build_model does not build model.arch=seed_unet yet")
    checkpoint = iw.import_weights("seed-unet", published["pth"], tmp_path / "seed.pt")
    model, cfg, _ = load_model(checkpoint, torch.device("cpu"))
    assert isinstance(model, SeedUNet) and not model.training and cfg.model.arch == "seed_unet"
    assert all(torch.equal(v, published["weights"][k]) for k, v in model.state_dict().items())

    # The same weights at a 64-pixel input size, so the CPU forward passes take a moment, not seconds.
    state = load_checkpoint(checkpoint)
    state["config"]["data"]["image_size"] = 64
    small = tmp_path / "seed_64.pt"
    save_checkpoint(small, state)
    images, masks = tmp_path / "faces", tmp_path / "face_masks"
    for index, (height, width) in enumerate([(48, 40), (40, 56)]):
        face = render_face(7, height, width, index)
        write_png(images / f"face{index}.png", face.image)
        write_png(masks / f"face{index}.png", face.skin_mask)
    rows = predict_folder(small, images, tmp_path / "out", threshold=None, face_mask_dir=masks)
    assert [(r["file"], r["status"]) for r in rows] == [("face0.png", "ok"), ("face1.png", "ok")]
    assert (tmp_path / "out" / "masks" / "face1.png").is_file()

    import evaluate
    from tests.conftest import PROJECT_ROOT

    quickstart = PROJECT_ROOT / "configs" / "quickstart.yaml"
    data = [f"data.sources.0.root={tmp_path / 'synthetic'}", "data.sources.0.n_images=8", "data.split.test_fraction=0.25"]
    data.append(f"data.cache_dir={tmp_path / 'cache'}")
    args = ["--checkpoint", str(small), "--config", str(quickstart), "--output", str(tmp_path / "eval"), *data, "data.image_size=64"]
    assert run_cli(evaluate.main, args) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_images"] == 2
