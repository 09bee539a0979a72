"""AttentionUNet: an encoder from segmentation-models-pytorch's registry, an attention-gated decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unet.unet_parts import DecoderBlock, FullResolutionStem, OutputHead

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FREEZE_POLICIES = ("none", "all", "partial")


class WeightsError(ValueError):
    """Encoder weights that do not fit the encoder; the message names the file."""


def encoder_names() -> list[str]:
    """Names accepted as `model.encoder` (smp's registry; `tu-*` timm encoders are accepted too)."""
    from segmentation_models_pytorch.encoders import encoders

    return sorted(encoders)


def _load_encoder_file(encoder: nn.Module, path: Path) -> None:
    """Load encoder weights from a local file (a plain state dict, smp- or torchvision-style keys)."""
    if not path.is_file():
        raise FileNotFoundError(f"model.encoder_weights: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "head."))}
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and state[k].shape != own[k].shape]
    for problem, keys in (("lack", missing), ("have unknown", unexpected), ("have wrongly shaped", reshaped)):
        if keys:
            raise WeightsError(f"{path}: encoder weights {problem} keys ({len(keys)}, e.g. {', '.join(keys[:3])})")
    nn.Module.load_state_dict(encoder, state)  # not smp's override, which hides the result


def build_encoder(name: str, weights: str | None, in_channels: int = 3, depth: int = 5) -> nn.Module:
    """An smp encoder by name; `weights` is None, "imagenet" (downloaded by smp) or a local file path."""
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    if name not in encoders and not name.startswith("tu-"):
        raise KeyError(f"model.encoder: unknown encoder {name!r}; valid: {', '.join(sorted(encoders))}")
    if weights is None or weights == "imagenet":
        return get_encoder(name, in_channels=in_channels, depth=depth, weights=weights)
    encoder = get_encoder(name, in_channels=in_channels, depth=depth, weights=None)
    _load_encoder_file(encoder, Path(weights))
    return encoder


class AttentionUNet(nn.Module):
    """U-Net with an smp encoder, attention-gated skips, transposed-conv decoder and full-resolution logits.

    Input: float RGB in [0, 1], N x 3 x H x W, any H and W (padded internally to a multiple of 32).
    ImageNet normalization happens inside the model, so training and inference cannot disagree on it.
    Output: N x classes x H x W logits.
    """

    def __init__(
        self,
        encoder_name: str = "resnet50",
        encoder_weights: str | None = "imagenet",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        attention: bool = True,
        dropout: float = 0.2,
        full_res_skip_channels: int = 16,
        classes: int = 1,
    ):
        super().__init__()
        depth = len(decoder_channels)
        self.encoder = build_encoder(encoder_name, encoder_weights, in_channels=3, depth=depth)
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stride = 2**depth

        encoder_channels = list(self.encoder.out_channels)  # [input, stride 2, 4, ..., 2**depth]
        skip_channels = encoder_channels[-2:0:-1] + [full_res_skip_channels]
        in_channels = [encoder_channels[-1]] + list(decoder_channels[:-1])
        self.stem = FullResolutionStem(3, full_res_skip_channels) if full_res_skip_channels > 0 else None
        self.decoder = nn.ModuleList(
            DecoderBlock(c_in, c_skip, c_out, attention, dropout)
            for c_in, c_skip, c_out in zip(in_channels, skip_channels, decoder_channels)
        )
        # The head keeps PyTorch's default init: a RetinaNet-style rare-class prior bias (p = 0.01) was
        # tried and slowed early learning under Dice + Focal (validation IoU 0.01 vs 0.35 after 2 epochs).
        self.head = OutputHead(decoder_channels[-1], classes)
        # Names, not modules: nn.SyncBatchNorm.convert_sync_batchnorm replaces the modules (keeping
        # their parameters), and the replacements must stay frozen too.
        self._frozen_bn: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = (x - self.input_mean) / self.input_std
        pad_h, pad_w = -height % self.stride, -width % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        features = self.encoder(x)
        skips = features[-2:0:-1] + [self.stem(x) if self.stem is not None else None]
        y = features[-1]
        for block, skip in zip(self.decoder, skips):
            y = block(y, skip)
        return self.head(y)[..., :height, :width]

    def train(self, mode: bool = True) -> "AttentionUNet":
        """Like nn.Module.train, but frozen encoder BatchNorm layers keep their running statistics."""
        super().train(mode)
        for name in self._frozen_bn:
            self.get_submodule(name).eval()
        return self

    def encoder_stages(self) -> list[list[nn.Module]]:
        """The encoder's top-level modules grouped by output stride, shallowest stage first."""
        root: nn.Module = self.encoder
        while len(list(root.children())) == 1:  # descend through wrappers such as timm's `model`
            root = next(root.children())
        strides: dict[nn.Module, int] = {}
        hooks = [
            child.register_forward_hook(lambda mod, _inp, out: strides.setdefault(mod, out))
            for child in root.children()
        ]
        probe = torch.zeros(1, 3, 2 * self.stride, 2 * self.stride, device=self.input_mean.device)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self.encoder(probe)
        finally:
            for hook in hooks:
                hook.remove()
            self.train(was_training)
        by_stride: dict[int, list[nn.Module]] = {}
        for module, out in strides.items():
            out = out[-1] if isinstance(out, (list, tuple)) else out
            by_stride.setdefault(probe.shape[-1] // out.shape[-1], []).append(module)
        return [by_stride[s] for s in sorted(by_stride)]

    def freeze_encoder(self, policy: str, unfrozen_stages: int = 0) -> None:
        """Freeze encoder weights: "none", "all", or "partial" (all but the last `unfrozen_stages` stages).

        Frozen BatchNorm layers are kept in eval mode so their statistics do not drift.
        """
        if policy not in FREEZE_POLICIES:
            raise KeyError(f"model.freeze_encoder: unknown policy {policy!r}; valid: {', '.join(FREEZE_POLICIES)}")
        for param in self.encoder.parameters():
            param.requires_grad_(True)
        self._frozen_bn = []
        if policy == "none":
            return
        stages = self.encoder_stages()
        frozen = stages if policy == "all" else stages[: max(len(stages) - unfrozen_stages, 0)]
        frozen_modules = {module for stage in frozen for module in stage}
        for module in frozen_modules:
            for param in module.parameters():
                param.requires_grad_(False)
        if policy == "all":  # parameters outside any stage (rare) are frozen too
            for param in self.encoder.parameters():
                param.requires_grad_(False)
            frozen_modules = {self.encoder}
        inside = {m for root in frozen_modules for m in root.modules()}
        self._frozen_bn = [name for name, m in self.named_modules() if m in inside and isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.train(self.training)
