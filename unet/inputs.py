"""The one input convention of every network, and how each family turns it into what its weights expect.

Every model takes float N x C x H x W in [0, 1]: C = 3 is RGB (`model.input=rgb`); C = 4 is RGB, then
the texture map / 255 (`model.input=rgb_texture`; data/texture.py computes the map). Conversion to a
network's own scaling happens inside the model, so the data pipeline, evaluation and prediction never
need to know which network they feed.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_CHANNELS = {"rgb": 3, "rgb_texture": 4}
# Moon et al. leave a texture map whose uint8 maximum is <= 1 unscaled; in [0, 1] units the cut is
# between 1/255 and 2/255 (1.5/255, so float rounding of k/255 cannot move a map across it).
_MOON_UNSCALED_MAX = 1.5 / 255


def check_channels(x: torch.Tensor, in_channels: int, model: str) -> None:
    """ValueError unless `x` is N x in_channels x H x W (a caller that feeds RGB to an RGB + texture model)."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        what = "RGB + texture map" if in_channels == 4 else "RGB"
        raise ValueError(f"{model} takes N x {in_channels} x H x W input ({what} in [0, 1]), not {tuple(x.shape)}")


class Normalize(nn.Module):
    """(x - mean) / std per channel, for networks with ImageNet-pretrained encoders: ImageNet statistics
    for RGB, mean 0.5 and std 0.5 (so 2t - 1, Moon et al.'s range) for the texture channel. The buffers
    are not persistent: no state-dict keys, so checkpoints stay loadable whatever the statistics."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        if in_channels not in INPUT_CHANNELS.values():
            raise ValueError(f"in_channels must be 3 (RGB) or 4 (RGB + texture), got {in_channels}")
        mean, std = IMAGENET_MEAN + (0.5,), IMAGENET_STD + (0.5,)
        self.in_channels = in_channels
        self.register_buffer("mean", torch.tensor(mean[:in_channels]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std[:in_channels]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.in_channels, "this model")
        return (x - self.mean) / self.std


def moon_scaling(x: torch.Tensor, zero_map_quirk: bool = True) -> torch.Tensor:
    """Moon et al.'s input from this project's N x 4 x H x W: every channel x / 255 * 2 - 1 as their
    inference.py does. With `zero_map_quirk`, a texture map whose uint8 maximum is <= 1 (in practice:
    all zero, a face without skin) is left unscaled as their code leaves it (0 stays 0, not -1), per
    image: how the released weights were scored. Models apply it in eval mode only, so that a training
    patch without skin is not fed differently from the same pixels of a whole face. Their RGB has the
    same rule, but a skin-masked face is never that dark, so RGB is always scaled here."""
    check_channels(x, 4, "this model")
    rgb, texture = x[:, :3], x[:, 3:]
    if zero_map_quirk:
        unscaled = texture.amax(dim=(1, 2, 3), keepdim=True) <= _MOON_UNSCALED_MAX
        texture = torch.where(unscaled, texture * 255, texture * 2 - 1)
    else:
        texture = texture * 2 - 1
    return torch.cat([rgb * 2 - 1, texture], dim=1)


def expand_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of an RGB `conv` taking `in_channels` inputs whose extra channels start from the pretrained
    RGB filters, as segmentation-models-pytorch does for in_channels > 3: channel i takes the weights of
    channel i % 3, and all are scaled by 3 / in_channels so the activation's scale stays what the
    pretrained layers after it expect."""
    if conv.in_channels != 3 or in_channels <= 3:
        raise ValueError(f"expand_first_conv widens a 3-channel conv, got {conv.in_channels} -> {in_channels}")
    wider = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        index = torch.arange(in_channels, device=conv.weight.device) % 3
        wider.weight.copy_(conv.weight[:, index] * (3 / in_channels))
        if conv.bias is not None:
            wider.bias.copy_(conv.bias)
    return wider


def widen_input(network: nn.Module, in_channels: int) -> None:
    """Replace the first 3-input convolution of `network` (an encoder, after its pretrained weights are
    loaded) by `expand_first_conv`'s wider copy; a no-op for in_channels == 3."""
    if in_channels == 3:
        return
    name = next((n for n, m in network.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)
    if name is None:
        raise ValueError(f"{type(network).__name__} has no 3-channel convolution to widen to {in_channels} input channels")
    network.set_submodule(name, expand_first_conv(network.get_submodule(name), in_channels))
