"""BiSeNet face parsing: the published key names load, and a photo parses into a skin mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.image_io import read_rgb
from engine.errors import WrinkleError
from face.bisenet import BiSeNet, load_bisenet, parse_face, skin_mask
from unet.unet_model import WeightsError

# A sample of the key names in face-parsing.PyTorch's published 79999_iter.pth.
PUBLISHED_KEYS = [
    "cp.resnet.conv1.weight",
    "cp.resnet.bn1.running_var",
    "cp.resnet.layer1.0.conv1.weight",
    "cp.resnet.layer2.0.downsample.0.weight",
    "cp.resnet.layer4.1.bn2.bias",
    "cp.arm16.conv.conv.weight",
    "cp.arm16.conv_atten.weight",
    "cp.arm16.bn_atten.running_mean",
    "cp.arm32.conv.bn.weight",
    "cp.conv_head32.conv.weight",
    "cp.conv_head16.bn.bias",
    "cp.conv_avg.conv.weight",
    "ffm.convblk.conv.weight",
    "ffm.convblk.bn.running_mean",
    "ffm.conv1.weight",
    "ffm.conv2.weight",
    "conv_out.conv.conv.weight",
    "conv_out.conv_out.weight",
    "conv_out16.conv.bn.weight",
    "conv_out32.conv_out.weight",
]


def test_key_names_match_the_published_checkpoint():
    keys = set(BiSeNet().state_dict())
    assert set(PUBLISHED_KEYS) <= keys
    assert not any(k.startswith(("cp.resnet.fc", "sp.")) for k in keys)  # no classifier, no spatial path
    assert BiSeNet().conv_out.conv_out.weight.shape == (19, 256, 1, 1)


def test_a_saved_state_dict_loads_and_parses_a_photo(tmp_path, shared_data):
    torch.manual_seed(0)
    source = BiSeNet()
    # as published: a plain state dict, here with DataParallel's "module." prefix on some copies
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "79999_iter.pth")
    model = load_bisenet(tmp_path / "79999_iter.pth")
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    photo = read_rgb(shared_data / "photos" / "grace_hopper.jpg")  # 512 wide, 600 high
    labels = parse_face(model, photo)
    assert labels.shape == photo.shape[:2] and labels.dtype == np.uint8 and labels.max() < 19
    skin = skin_mask(labels, (1, 10))
    assert skin.shape == photo.shape[:2] and skin.dtype == bool
    assert np.array_equal(skin, (labels == 1) | (labels == 10))


def test_missing_or_foreign_weights_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="79999_iter.pth") as missing:
        load_bisenet(tmp_path / "nowhere.pth")
    assert isinstance(missing.value, WrinkleError)  # one line from the CLIs, not a traceback
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="other.pth: not a BiSeNet .*download 79999_iter.pth again"):
        load_bisenet(tmp_path / "other.pth")
    torch.save(BiSeNet(classes=5).state_dict(), tmp_path / "five_classes.pth")  # right keys, wrong shapes
    with pytest.raises(WeightsError, match="five_classes.pth: not a BiSeNet .*wrong shape"):
        load_bisenet(tmp_path / "five_classes.pth")


class _NotATensor:
    """A pickled object of a class weights_only loading refuses."""


@pytest.mark.parametrize("damage", ["empty", "truncated", "html", "object"])
def test_corrupt_weights_are_one_line_errors_naming_the_file(tmp_path, damage):
    """A broken download is a WeightsError naming the file and the way out, never torch's message
    (which, for a foreign pickle, advises loading it in a way that can run its code)."""
    torch.save(BiSeNet().state_dict(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    path = tmp_path / "79999_iter.pth"
    if damage == "object":
        torch.save({"cp.resnet.conv1.weight": _NotATensor()}, path)
    else:
        path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "html": b"<html>Quota exceeded</html>"}[damage])
    with pytest.raises(WeightsError) as info:
        load_bisenet(path)
    message = str(info.value)
    assert str(path) in message and "download 79999_iter.pth again" in message and "\n" not in message
    assert "weights_only" not in message and "Weights only" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's text not chained either
