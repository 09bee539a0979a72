"""Moon et al.'s stage-2 U-Net: its exact published key set, its output convention, and checking its released weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from engine.cli import run_cli
from tests.conftest import fixture_shapes, random_weights
from unet import import_weights as iw
from unet.moon_unet import MOON_KEY_COUNT, MOON_PARAMETER_COUNT, MoonUNet

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def published_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every key of the released state dict, from the fixture."""
    return fixture_shapes("moon_unet_keys.txt")


@pytest.fixture(scope="module")
def model() -> MoonUNet:
    model = MoonUNet().eval()
    model.load_state_dict(random_weights(published_shapes(), scale=0.1), strict=True)
    return model


@pytest.fixture()
def published(tmp_path) -> dict:
    """stage2_unet.pth's container as their inference.py reads it, with random values: a `model` entry with
    DataParallel prefixes, optimizer state beside it."""
    weights = random_weights(published_shapes(), 1, scale=0.1)
    pth = tmp_path / "stage2_unet.pth"
    optimizer = {"state": {0: {"exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}, "optimizer": optimizer, "epoch": 99}, pth)
    return {"weights": weights, "pth": pth}


def test_moon_unet_has_exactly_the_published_keys_and_shapes():
    shapes = published_shapes()
    # The fixture against the facts (PUBLISHED_MODELS.md section 1), then the model against the fixture.
    assert len(shapes) == MOON_KEY_COUNT == 110
    assert sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(BUFFERS)) == MOON_PARAMETER_COUNT == 17_263_618
    convs = {  # block: (out, in) of double_conv.0 and double_conv.3
        "inc": ((64, 4), (64, 64)),
        "down1.maxpool_conv.1": ((128, 64), (128, 128)),
        "down2.maxpool_conv.1": ((256, 128), (256, 256)),
        "down3.maxpool_conv.1": ((512, 256), (512, 512)),
        "down4.maxpool_conv.1": ((512, 512), (512, 512)),
        "up1.conv": ((512, 1024), (256, 512)),
        "up2.conv": ((256, 512), (128, 256)),
        "up3.conv": ((128, 256), (64, 128)),
        "up4.conv": ((64, 128), (64, 64)),
    }
    for block, (first, second) in convs.items():
        assert shapes[f"{block}.double_conv.0.weight"] == (*first, 3, 3)
        assert shapes[f"{block}.double_conv.3.weight"] == (*second, 3, 3)
        assert f"{block}.double_conv.0.bias" not in shapes and f"{block}.double_conv.4.num_batches_tracked" in shapes
    assert (shapes["outc.conv.weight"], shapes["outc.conv.bias"]) == ((2, 64, 1, 1), (2,))
    state = MoonUNet().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert sum(p.numel() for p in MoonUNet().parameters()) == MOON_PARAMETER_COUNT


def test_the_output_is_the_wrinkle_logit_difference(model):
    x = project_input(2, 32, 48)
    with torch.no_grad():
        out, logits = model(x), model.class_logits(x)
    assert out.shape == (2, 1, 32, 48) and logits.shape == (2, 2, 32, 48)
    assert logits.std() > 0.1  # random weights give logits worth comparing, not all ~0
    assert torch.allclose(torch.sigmoid(out)[:, 0], torch.softmax(logits, dim=1)[:, 1], atol=1e-6, rtol=0)
    assert torch.equal((out[:, 0] > 0), logits.argmax(1) == 1)


def project_input(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """This project's input: uint8 RGB and texture map values / 255."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 4, height, width), generator=generator).float() / 255


def test_moon_unet_takes_any_size_and_scales_as_their_inference_does(model):
    x = project_input(2, 40, 56)
    x[1, 3] = 0  # a face without skin: an all-zero texture map, which their code leaves at 0
    with torch.no_grad():
        out = model(x)
        # Their input for the same images (inference.py): uint8 / 255 * 2 - 1 per array, unless the array's
        # max is <= 1; then padded to a size their U-Net takes with what masked-out pixels scale to (-1).
        uint8 = (x * 255).round()
        theirs = torch.stack([torch.cat([img[:3] / 255 * 2 - 1, img[3:] / 255 * 2 - 1 if img[3].max() > 1 else img[3:]]) for img in uint8])
        assert theirs[1, 3].eq(0).all() and theirs[0, 3].min() == -1
        padded = torch.nn.functional.pad(theirs, (0, 8, 0, 8), value=-1.0)
        padded[1, 3, 40:] = padded[1, 3, :, 56:] = 0  # ... the unscaled all-zero map pads with its own zeros
        reference = model.outc(_their_forward(model, padded))[..., :40, :56]
    assert out.shape == (2, 1, 40, 56) and torch.isfinite(out).all()
    assert torch.allclose(out[:, 0], reference[:, 1] - reference[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="N x 4 x H x W"):
        model(torch.rand(1, 3, 32, 32))


def test_the_zero_map_quirk_applies_in_eval_mode_only(monkeypatch):
    """A training patch without skin (an all-zero texture map) is scaled like the same pixels of a whole face."""
    import unet.moon_unet

    seen = []
    monkeypatch.setattr(unet.moon_unet, "moon_scaling", lambda x, zero_map_quirk: seen.append(zero_map_quirk) or x)
    model = MoonUNet()
    model(torch.zeros(2, 4, 32, 32))  # BatchNorm in training mode needs more than one value per channel
    model.eval()(torch.zeros(1, 4, 32, 32))
    assert seen == [False, True]


def _their_forward(model: MoonUNet, x: torch.Tensor) -> torch.Tensor:
    """milesial's UNet.forward up to outc, on input already scaled as Moon et al. scale it."""
    x1 = model.inc(x)
    x2 = model.down1(x1)
    x3 = model.down2(x2)
    x4 = model.down3(x3)
    x5 = model.down4(x4)
    return model.up4(model.up3(model.up2(model.up1(x5, x4), x3), x2), x1)


def test_the_published_container_strict_loads_and_warns_of_an_unknown_digest(published, caplog, capsys):
    source = published["pth"]
    state = iw.PUBLISHED["moon-unet"].read(source)  # `model` entry, `module.` stripped, optimizer ignored
    model = MoonUNet()
    iw.load_strictly(model, state, source, "moon-unet")
    assert all(torch.equal(v, published["weights"][k]) for k, v in model.state_dict().items())
    digest = iw.file_digest(source, "sha256")
    with caplog.at_level(logging.INFO, logger="unet.import_weights"):
        assert iw.import_weights("moon-unet", source, None) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and digest in warnings[0] and "not a known moon-unet release" in warnings[0]
    assert run_cli(iw.main, ["moon-unet", str(source), "--check-only"]) == 0
    assert "verified as moon-unet weights; nothing written" in capsys.readouterr().out
    # The whole object as the state dict (their loader's other case) loads too.
    bare = source.with_name("bare.pth")
    torch.save(published["weights"], bare)
    assert iw.import_weights("moon-unet", bare, None) is None
