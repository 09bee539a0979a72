"""Moon et al.'s stage-2 Swin UNETR: its exact published key set, MONAI's forward with the same weights,
padding, the output convention and encoder freezing.

A forward pass at 1024 x 1024 (the smallest size the network takes) costs seconds on a CPU, so the module
shares three: ours and MONAI's on one 1024-px image, and ours on a 1000-px image that pads to the same
network input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import fixture_shapes, random_weights
from unet.inputs import moon_scaling
from unet.swin_unetr import SWIN_KEY_COUNT, SWIN_PARAMETER_COUNT, SwinUNETR

INDEX = "relative_position_index"  # int64 buffers: state-dict keys, not parameters
STAGES = {"layers1": (48, 3), "layers2": (96, 6), "layers3": (192, 12), "layers4": (384, 24)}  # C, heads


def published_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every key of the released state dict, from the fixture."""
    return fixture_shapes("swin_unetr_keys.txt")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    """Random values under the published names, large enough that the logits are not all ~0; the index
    buffers are the computed ones (random integers would be a different network, not different weights)."""
    state = random_weights(published_shapes(), seed=0, scale=0.1)
    state.update({k: v for k, v in SwinUNETR().state_dict().items() if k.endswith(INDEX)})
    return state


@pytest.fixture(scope="module")
def ours(weights) -> SwinUNETR:
    model = SwinUNETR().eval()
    model.load_state_dict(weights, strict=True)
    return model


@pytest.fixture(scope="module")
def monai_reference(weights) -> dict:
    """MONAI's 2-D SwinUNETR with Moon et al.'s settings and decoder1 (4x4, stride 4), the same weights loaded;
    also its own freshly computed index buffers, taken before loading overwrites them."""
    pytest.importorskip("monai", reason="MONAI (a dev extra) is only needed to check the model against MONAI's")
    from monai.networks.blocks import UnetrUpBlock
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    model = MonaiSwinUNETR(in_channels=4, out_channels=2, patch_size=4, window_size=16, feature_size=48, spatial_dims=2)
    model.decoder1 = UnetrUpBlock(
        spatial_dims=2, in_channels=48, out_channels=48, kernel_size=3, upsample_kernel_size=4, norm_name="instance", res_block=True
    )
    index = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(INDEX)}
    model.load_state_dict(weights, strict=True)
    return {"model": model.eval(), "index": index}


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    """A 1000 x 1024 input, and the 1024 x 1024 one that is it padded with zeros (black, no texture: -1 after
    moon_scaling), which is what this model should feed its network for the first: one MONAI run serves both."""
    gen = torch.Generator().manual_seed(1)
    small = torch.rand(1, 4, 1000, 1024, generator=gen)
    return {"small": small, "full": F.pad(small, (0, 0, 0, 24), value=0.0)}


@pytest.fixture(scope="module")
def logits(ours, monai_reference, images) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            "theirs": monai_reference["model"](moon_scaling(images["full"])),
            "ours": ours.class_logits(images["full"]),
            "small": ours(images["small"]),
        }


def test_swin_unetr_has_exactly_the_published_keys_and_shapes():
    shapes = published_shapes()
    # The fixture against the facts (PUBLISHED_MODELS.md section 1), then the model against the fixture.
    assert len(shapes) == SWIN_KEY_COUNT == 159
    assert sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(INDEX)) == SWIN_PARAMETER_COUNT == 25_241_228
    assert shapes["swinViT.patch_embed.proj.weight"] == (48, 4, 4, 4)
    for stage, (c, heads) in STAGES.items():
        for block in (0, 1):
            prefix = f"swinViT.{stage}.0.blocks.{block}."
            assert shapes[prefix + "attn.relative_position_bias_table"] == (961, heads)
            assert shapes[prefix + "attn.relative_position_index"] == (256, 256)
            assert shapes[prefix + "attn.qkv.weight"] == (3 * c, c) and shapes[prefix + "mlp.linear1.weight"] == (4 * c, c)
        assert shapes[f"swinViT.{stage}.0.downsample.reduction.weight"] == (2 * c, 4 * c)
        assert f"swinViT.{stage}.0.downsample.reduction.bias" not in shapes
    assert shapes["swinViT.layers4.0.downsample.reduction.weight"] == (768, 1536)
    assert shapes["encoder1.layer.conv3.conv.weight"] == (48, 4, 1, 1) and "encoder2.layer.conv3.conv.weight" not in shapes
    assert shapes["decoder5.transp_conv.conv.weight"] == (768, 384, 2, 2)
    assert shapes["decoder1.transp_conv.conv.weight"] == (48, 48, 4, 4)  # their change to MONAI's 2x2
    assert (shapes["out.conv.conv.weight"], shapes["out.conv.conv.bias"]) == ((2, 48, 1, 1), (2,))
    assert not [k for k in shapes if "norm" in k and not k.startswith("swinViT.")]  # instance norm without affine
    model = SwinUNETR()
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert {v.dtype for k, v in state.items() if k.endswith(INDEX)} == {torch.int64}
    assert sum(p.numel() for p in model.parameters()) == SWIN_PARAMETER_COUNT


def test_the_index_buffers_are_monais(ours, monai_reference):
    index = monai_reference["index"]
    assert len(index) == 8
    assert all(torch.equal(ours.state_dict()[k], v) and v.dtype == torch.int64 for k, v in index.items())


def test_swin_unetr_matches_monai_with_the_same_weights(logits, capsys):
    theirs, ours = logits["theirs"], logits["ours"]
    assert ours.shape == theirs.shape == (1, 2, 1024, 1024)
    assert theirs.std() > 0.1  # random weights give logits worth comparing, not all ~0
    assert (ours - theirs).abs().max() <= 1e-5
    assert capsys.readouterr() == ("", "")


def test_any_size_is_padded_as_masked_out_pixels_and_cropped(ours, images, logits):
    # The 1000-px image's output is MONAI's for the zero-padded 1024-px image, cropped (padding with
    # anything else, e.g. 0 after scaling, changes every logit); and it is logit1 - logit0.
    out, theirs = logits["small"], logits["theirs"][..., :1000, :]
    assert out.shape == (1, 1, 1000, 1024)
    assert torch.allclose(out[:, 0], theirs[:, 1] - theirs[:, 0], atol=2e-5, rtol=0)
    assert torch.allclose(out[:, 0], logits["ours"][:, 1, :1000] - logits["ours"][:, 0, :1000], atol=1e-6, rtol=0)
    assert torch.allclose(torch.sigmoid(out)[:, 0], torch.softmax(theirs, dim=1)[:, 1], atol=1e-5, rtol=0)
    assert torch.equal(out[:, 0] > 0, logits["ours"][:, :, :1000].argmax(1) == 1)
    with pytest.raises(ValueError, match="N x 4 x H x W"):
        ours(torch.rand(1, 3, 32, 32))


def test_freeze_encoder_by_swin_stage():
    model = SwinUNETR()
    vit = model.swinViT

    def trainable(module: torch.nn.Module) -> set[bool]:
        return {p.requires_grad for p in module.parameters()}

    model.freeze_encoder("partial", 2)
    assert [trainable(m) for m in (vit.patch_embed, vit.layers1, vit.layers2, vit.layers3, vit.layers4)] == [{False}] * 3 + [{True}] * 2
    assert trainable(model.encoder1) == trainable(model.decoder1) == {True}  # UNETR's conv blocks always train
    model.freeze_encoder("all")
    assert trainable(vit) == {False} and trainable(model.out) == {True}
    model.freeze_encoder("none")
    assert trainable(model) == {True}


def test_a_small_configuration_matches_native_monai_and_trains():
    # Patch 2 and window 2 (MONAI's native decoder1 then fits): the same code paths, shifted windows and
    # per-image masks in a batch of two included, in milliseconds; 64 px keeps every stage larger than a
    # window (MONAI shrinks windows and drops the shift on maps no larger than one, which this model refuses).
    monai = pytest.importorskip("monai", reason="MONAI (a dev extra) is only needed to check the model against MONAI's")
    settings = {"feature_size": 12, "patch_size": 2, "window_size": 2}
    model = SwinUNETR(**settings)
    reference = monai.networks.nets.SwinUNETR(in_channels=4, out_channels=2, spatial_dims=2, **settings)
    weights = random_weights({k: tuple(v.shape) for k, v in reference.state_dict().items()}, seed=2, scale=0.3)
    weights.update({k: v for k, v in model.state_dict().items() if k.endswith(INDEX)})
    model.load_state_dict(weights, strict=True)
    reference.load_state_dict(weights, strict=True)
    x = torch.rand(2, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    logits = model.class_logits(x)
    with torch.no_grad():
        theirs = reference(moon_scaling(x))
    assert theirs.std() > 0.1 and (logits.detach() - theirs).abs().max() <= 1e-5
    (logits[:, 1] - logits[:, 0]).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
