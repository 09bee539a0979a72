"""AttentionUNet: shapes, encoders by name, freezing, local encoder weights."""

from __future__ import annotations

import pytest
import torch

from config import load_config
from unet import AttentionUNet, build_model
from unet.unet_model import WeightsError
from unet.unet_parts import AttentionGate, DecoderBlock


def small(**kwargs) -> AttentionUNet:
    return AttentionUNet(
        encoder_name=kwargs.pop("encoder_name", "resnet18"), encoder_weights=None, decoder_channels=(32, 16, 16, 8, 8), **kwargs
    )


@pytest.mark.parametrize("height, width", [(64, 96), (70, 50)])
def test_full_resolution_logits_for_non_square_inputs(height, width):
    model = small().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out.shape == (2, 1, height, width) and torch.isfinite(out).all()


def test_channels_last_gives_the_same_output():
    model = small(dropout=0.0).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4)


def test_every_skip_is_attention_gated_and_can_be_turned_off():
    model = small()
    assert all(isinstance(block, DecoderBlock) for block in model.decoder)
    assert all(isinstance(block.gate, AttentionGate) for block in model.decoder)
    assert all(block.gate is None for block in small(attention=False).decoder)
    assert model.stem is not None and small(full_res_skip_channels=0).stem is None


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(KeyError, match="resnet50"):
        AttentionUNet(encoder_name="resnet51", encoder_weights=None)


def test_resnet50_default_is_lean():
    model = AttentionUNet(encoder_name="resnet50", encoder_weights=None)
    n_params = sum(p.numel() for p in model.parameters())
    assert 28e6 < n_params < 34e6  # smp's Unet-ResNet50 has 32.5 M; the seed's wide decoder had 72-74 M


def test_freeze_policies():
    model = small()
    trainable = lambda m: {n for n, p in m.encoder.named_parameters() if p.requires_grad}  # noqa: E731
    model.freeze_encoder("all")
    assert trainable(model) == set()
    assert all(p.requires_grad for p in model.decoder.parameters())
    model.freeze_encoder("partial", 2)
    names = trainable(model)
    assert names and all(n.startswith(("layer3.", "layer4.")) for n in names)
    assert any(n.startswith("layer3.") for n in names) and any(n.startswith("layer4.") for n in names)
    model.freeze_encoder("none")
    assert trainable(model) == {n for n, _ in model.encoder.named_parameters()}
    with pytest.raises(KeyError, match="none, all, partial"):
        model.freeze_encoder("most")


def test_frozen_batchnorm_keeps_its_statistics():
    model = small()
    model.freeze_encoder("partial", 1)
    model.train()
    before = model.encoder.bn1.running_mean.clone()
    model(torch.rand(2, 3, 64, 64) * 3)
    assert torch.equal(before, model.encoder.bn1.running_mean)  # frozen stage: untouched
    assert not model.encoder.layer4[0].bn1.running_mean.eq(0).all()  # trained stage: updated


def test_encoder_weights_from_a_local_file(tmp_path):
    donor = small()
    torch.save({f"encoder.{k}": v for k, v in donor.encoder.state_dict().items()}, tmp_path / "enc.pt")
    cfg = load_config(
        None, ["model.encoder=resnet18", f"model.encoder_weights={tmp_path / 'enc.pt'}", "model.decoder_channels=[32, 16, 16, 8, 8]"]
    )
    model = build_model(cfg.model)
    for key, value in donor.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)
    # torchvision-style files (with an fc head) load too; a wrong file is a clear error
    torch.save({**donor.encoder.state_dict(), "fc.weight": torch.zeros(1000, 512)}, tmp_path / "tv.pt")
    build_model(load_config(None, ["model.encoder=resnet18", f"model.encoder_weights={tmp_path / 'tv.pt'}"]).model)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="bad.pt"):
        build_model(load_config(None, ["model.encoder=resnet18", f"model.encoder_weights={tmp_path / 'bad.pt'}"]).model)
    with pytest.raises(FileNotFoundError, match="encoder_weights"):
        build_model(load_config(None, ["model.encoder=resnet18", "model.encoder_weights=/nonexistent/w.pt"]).model)


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_corrupt_local_encoder_weights_are_one_line_errors(tmp_path, damage):
    torch.save(small().encoder.state_dict(), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "enc.pt").write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(WeightsError) as info:
        build_model(load_config(None, ["model.encoder=resnet18", f"model.encoder_weights={tmp_path / 'enc.pt'}"]).model)
    message = str(info.value)
    assert f"model.encoder_weights={tmp_path / 'enc.pt'}" in message and "\n" not in message and "weights_only" not in message


# ---------------------------------------------------------------------------------------------
# model.encoder_weights=imagenet without a network: the Hugging Face cache, then one quick check.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every connection attempt fails at once, as on a machine with no network (DNS fails); the
    attempted hosts are recorded."""
    import socket

    attempts: list = []

    def refuse(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    return attempts


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, online mode. huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE
    once, at import (and conftest sets HF_HUB_OFFLINE=1), so its constants are patched, not the env."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


def test_imagenet_weights_offline_fail_fast_naming_the_option(hub_cache, no_network):
    import time
    import urllib.parse

    from huggingface_hub import constants

    from unet.unet_model import build_encoder

    started = time.monotonic()
    with pytest.raises(WeightsError) as info:
        build_encoder("resnet18", "imagenet")
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert elapsed < 3, f"took {elapsed:.1f} s"  # huggingface_hub's own retries take ~27 s
    assert "model.encoder_weights=imagenet" in message and "resnet18" in message and "\n" not in message
    assert "cannot be reached" in message and str(hub_cache) in message
    assert "connect to the internet once" in message and "local weights file" in message and "null" in message
    assert no_network == [urllib.parse.urlparse(constants.ENDPOINT).hostname]  # one request, no retries


def test_imagenet_weights_with_hf_hub_offline_fail_at_once(hub_cache, no_network, monkeypatch):
    from huggingface_hub import constants

    from unet.unet_model import build_encoder

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match="model.encoder_weights=imagenet .*HF_HUB_OFFLINE is set"):
        build_encoder("resnet18", "imagenet")
    assert no_network == []


def test_cached_imagenet_weights_load_offline(hub_cache, no_network, monkeypatch):
    """Weights in the Hugging Face cache (as smp's download leaves them) load with no network, and
    without asking the hub (huggingface_hub itself may try a best-effort request, which fails quietly)."""
    import time

    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    from unet import unet_model
    from unet.unet_model import build_encoder

    monkeypatch.setattr(unet_model, "_hub_unreachable", lambda *_: pytest.fail("the hub was asked although the weights are cached"))

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = hub_cache / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    torch.manual_seed(0)
    donor = get_encoder("resnet18", weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in donor.items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text("{}")
    started = time.monotonic()
    encoder = build_encoder("resnet18", "imagenet")
    assert time.monotonic() - started < 3
    for key, value in donor.items():
        assert torch.equal(encoder.state_dict()[key], value)
