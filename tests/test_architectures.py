"""Architectures by name (`model.arch`): each builds, keeps the project's input/output conventions,
freezes by stages, trains, resumes exactly and runs through evaluation and prediction."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from config import ConfigError, config_to_dict, load_config
from data.image_io import write_png
from data.synthetic import render_face
from engine.checkpoint import model_state, save_checkpoint
from engine.cli import run_cli
from engine.segment_photos import predict_folder
from tests.conftest import PROJECT_ROOT
from train import main as train_main
from unet import build_model
from unet.inputs import IMAGENET_MEAN, IMAGENET_STD

QUICKSTART = PROJECT_ROOT / "configs" / "quickstart.yaml"


def model_config(*overrides: str):
    return load_config(None, ["model.encoder_weights=null", *overrides]).model


def test_an_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match="model.arch: 'unet3' is not valid; choose one of attention_unet, smp_unet, unetplusplus, seed_unet, moon_unet, swin_unetr",
    ):
        load_config(None, ["model.arch=unet3"])


@pytest.mark.parametrize(
    ("arch", "channels", "deepest"),
    [
        ("attention_unet", 3, "layer4"),
        ("smp_unet", 3, "layer4"),
        ("unetplusplus", 3, "layer4"),
        ("attention_unet", 4, "layer4"),
        ("smp_unet", 4, "layer4"),
        ("seed_unet", 4, "encoder4"),
        ("moon_unet", 4, "down4"),
    ],
)
def test_every_architecture_takes_its_input_in_0_1_of_any_size_and_gives_wrinkle_logits(arch, channels, deepest):
    encoder = "resnet50" if arch in ("seed_unet", "moon_unet") else "resnet18"
    model = build_model(
        model_config(
            f"model.arch={arch}",
            f"model.encoder={encoder}",
            f"model.input={'rgb_texture' if channels == 4 else 'rgb'}",
            "model.freeze_encoder=none",
        )
    )
    model.freeze_encoder("partial", 1)  # as build_model does for model.freeze_encoder=partial (moon_unet: after init_from)
    assert model.in_channels == channels
    assert model(torch.rand(2, channels, 40, 56)).shape == (2, 1, 40, 56)
    with pytest.raises(ValueError, match=f"takes N x {channels} x H x W input"):
        model(torch.rand(2, 7 - channels, 40, 56))  # RGB for an RGB + texture model, or the reverse
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(deepest not in name for name in frozen)  # the deepest stage trains
    model.train()
    assert all(not module.training for name, module in model.named_modules() if name in model._frozen_bn)


def test_unetplusplus_on_resnext50_is_kim_et_als_network_as_smp_builds_it():
    import segmentation_models_pytorch as smp

    ours = build_model(model_config("model.arch=unetplusplus", "model.encoder=resnext50_32x4d", "model.freeze_encoder=none"))
    reference = smp.UnetPlusPlus("resnext50_32x4d", encoder_weights=None, classes=1)
    assert {k.removeprefix("net.") for k in ours.state_dict()} == set(reference.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    ours.net.load_state_dict(reference.state_dict())
    x = torch.rand(1, 3, 64, 64)
    normalized = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ours.eval(), reference.eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(normalized), atol=1e-5)


def tiny(tmp_path, *extra: str) -> list[str]:
    return [
        "experiment.name=arch",
        f"experiment.output_dir={tmp_path / 'runs'}",
        "experiment.deterministic=true",
        f"data.sources.0.root={tmp_path / 'synthetic'}",
        "data.sources.0.n_images=10",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.image_size=64",
        "data.num_workers=0",
        "data.split.val_fraction=0.2",
        "data.split.test_fraction=0.1",
        "train.batch_size=4",
        "eval.batch_size=4",
        "logging.wandb=disabled",
        *extra,
    ]


@pytest.mark.parametrize(
    "arch",
    [
        ["model.arch=unetplusplus", "model.encoder=resnext50_32x4d", "model.encoder_weights=null", "model.freeze_encoder=none"],
        # The texture channel through augmentation (quickstart's), the disk cache and resume, on the default network.
        ["model.input=rgb_texture", "model.encoder=resnet18", "model.encoder_weights=null", "data.cache=disk"],
    ],
    ids=["unetplusplus-resnext50", "rgb_texture"],
)
def test_trains_and_resumes_exactly(tmp_path, arch, capsys):
    """Through train.py's main (its --config and --resume), in this process."""

    def train(*args: str) -> Path:
        assert run_cli(train_main, list(args)) == 0
        return Path(capsys.readouterr().out.strip().splitlines()[-1])  # train.py prints the run folder

    whole = train("--config", str(QUICKSTART), *tiny(tmp_path, *arch, "train.epochs=2", "experiment.name=whole"))
    first = train("--config", str(QUICKSTART), *tiny(tmp_path, *arch, "train.epochs=1", "experiment.name=parts"))
    last = first / "checkpoints" / "last.pt"
    resumed = train("--resume", str(last), "train.epochs=2")
    assert resumed == first
    if "model.input=rgb_texture" in arch:
        assert torch.load(last, weights_only=True)["model"]["encoder.conv1.weight"].shape[1] == 4

    def rows(run):
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(open(run / "metrics.csv"))]

    assert rows(resumed) == rows(whole) and len(rows(whole)) == 2
    a, b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"] for run in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_and_prediction_take_any_architecture(tmp_path):
    cfg = load_config(QUICKSTART, ["model.arch=smp_unet", "model.encoder=resnet18", "data.image_size=64"])
    model = build_model(cfg.model, encoder_weights=False)
    save_checkpoint(tmp_path / "smp.pt", {"model": model_state(model), "config": config_to_dict(cfg), "threshold": 0.5})
    for i in range(2):
        face = render_face(11, 72, 64, i)
        write_png(tmp_path / "photos" / f"f{i}.png", face.image)
        write_png(tmp_path / "skin" / f"f{i}.png", face.skin_mask)
    rows = predict_folder(tmp_path / "smp.pt", tmp_path / "photos", tmp_path / "out", face_mask_dir=tmp_path / "skin")
    assert [r["status"] for r in rows] == ["ok", "ok"] and (tmp_path / "out" / "masks" / "f1.png").is_file()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.arch=moon_unet"], "model.input: moon_unet takes RGB \\+ the texture map; set model.input=rgb_texture"),
        (
            ["model.arch=swin_unetr", "model.input=rgb_texture", "model.encoder_weights=imagenet"],
            "model.encoder_weights: swin_unetr has no",
        ),
        (
            ["model.arch=swin_unetr", "model.input=rgb_texture"],
            "model.freeze_encoder: swin_unetr trained from scratch has nothing to freeze",
        ),
    ],
)
def test_moon_et_als_networks_refuse_settings_they_cannot_have(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, ["model.encoder_weights=null", *overrides])


@pytest.mark.parametrize("arch", ["attention_unet", "smp_unet", "seed_unet"])
def test_the_texture_filters_start_from_the_pretrained_rgb_ones(arch, tmp_path):
    """model.input=rgb_texture on pretrained weights: the first conv's 4th input channel is the red one's
    filters, all scaled by 3/4 (segmentation-models-pytorch's rule), not random."""
    torch.manual_seed(0)
    rgb = build_model(model_config(f"model.arch={arch}", "model.input=rgb", "model.encoder=resnet50"))
    first = {"attention_unet": "encoder.conv1", "smp_unet": "net.encoder.conv1", "seed_unet": "input_layer.0"}[arch]
    pretrained = rgb.get_submodule(first).weight.detach()
    if arch == "seed_unet":  # torchvision's ImageNet download is not possible here: the same seeded init stands in
        torch.manual_seed(0)
        wide = build_model(model_config(f"model.arch={arch}", "model.input=rgb_texture"))
    else:
        encoder = rgb.encoder.state_dict()
        torch.save(encoder, tmp_path / "encoder.pt")
        wide = build_model(
            model_config(
                f"model.arch={arch}",
                "model.input=rgb_texture",
                "model.encoder=resnet50",
                f"model.encoder_weights={tmp_path / 'encoder.pt'}",
            )
        )
    weight = wide.get_submodule(first).weight.detach()
    assert weight.shape == (64, 4, 7, 7)
    assert torch.allclose(weight[:, :3], pretrained * 0.75) and torch.allclose(weight[:, 3], pretrained[:, 0] * 0.75)
