"""Architectures by name (`model.arch`): each builds, keeps the project's input/output conventions,
freezes by stages, trains, resumes exactly and runs through evaluation and prediction."""

from __future__ import annotations

import csv

import pytest
import torch

from config import ConfigError, config_to_dict, load_config
from data.image_io import write_png
from data.synthetic import render_face
from engine.checkpoint import model_state, save_checkpoint
from engine.segment_photos import predict_folder
from engine.trainer import fit, resume_config
from tests.conftest import PROJECT_ROOT
from unet import build_model

QUICKSTART = PROJECT_ROOT / "configs" / "quickstart.yaml"


def model_config(*overrides: str):
    return load_config(None, ["model.encoder_weights=null", *overrides]).model


def test_an_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(
        ConfigError, match="model.arch: 'unet3' is not valid; choose one of attention_unet, smp_unet, unetplusplus, seed_unet"
    ):
        load_config(None, ["model.arch=unet3"])


@pytest.mark.parametrize("arch", ["attention_unet", "smp_unet", "unetplusplus"])
def test_every_architecture_takes_rgb_in_0_1_of_any_size_and_gives_wrinkle_logits(arch):
    model = build_model(
        model_config(f"model.arch={arch}", "model.encoder=resnet18", "model.freeze_encoder=partial", "model.unfrozen_stages=1")
    )
    assert model(torch.rand(2, 3, 40, 56)).shape == (2, 1, 40, 56)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all("layer4" not in name for name in frozen)  # the deepest stage trains
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
    normalized = (x - ours.input_mean) / ours.input_std
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


def test_unetplusplus_resnext50_trains_and_resumes_exactly(tmp_path):
    arch = ["model.arch=unetplusplus", "model.encoder=resnext50_32x4d", "model.encoder_weights=null", "model.freeze_encoder=none"]
    whole = fit(load_config(QUICKSTART, tiny(tmp_path, *arch, "train.epochs=2", "experiment.name=whole")))
    first = fit(load_config(QUICKSTART, tiny(tmp_path, *arch, "train.epochs=1", "experiment.name=parts")))
    last = first / "checkpoints" / "last.pt"
    resumed = fit(resume_config(last, ["train.epochs=2"]), resume=last)
    assert resumed == first

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
