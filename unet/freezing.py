"""Freezing an encoder by stages, for every architecture whose encoder is one module (`self.encoder`)."""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import UnknownNameError

FREEZE_POLICIES = ("none", "all", "partial")


class EncoderFreezing(nn.Module):
    """`freeze_encoder(policy, unfrozen_stages)` for a model with an `encoder` module and an input
    `stride` (a multiple its input must have); frozen BatchNorm layers keep their running statistics.
    A model whose encoder is several modules overrides `encoder_stages` and `encoder_modules`."""

    stride: int
    in_channels: int = 3  # input channels: 3 (RGB) or 4 (RGB + texture map)
    # Names, not modules: nn.SyncBatchNorm.convert_sync_batchnorm replaces the modules (keeping their
    # parameters), and the replacements must stay frozen too.
    _frozen_bn: list[str]

    def train(self, mode: bool = True) -> EncoderFreezing:
        """Like nn.Module.train, but frozen encoder BatchNorm layers keep their running statistics."""
        super().train(mode)
        for name in self._frozen_bn:
            self.get_submodule(name).eval()
        return self

    def encoder_modules(self) -> list[nn.Module]:
        """The modules that make the encoder."""
        return [self.encoder]

    def encoder_stages(self) -> list[list[nn.Module]]:
        """The encoder's top-level modules grouped by output stride, shallowest stage first."""
        root: nn.Module = self.encoder
        while len(list(root.children())) == 1:  # descend through wrappers such as timm's `model`
            root = next(root.children())
        strides: dict[nn.Module, int] = {}
        hooks = [child.register_forward_hook(lambda mod, _inp, out: strides.setdefault(mod, out)) for child in root.children()]
        probe = torch.zeros(1, self.in_channels, 2 * self.stride, 2 * self.stride, device=next(self.parameters()).device)
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
            raise UnknownNameError(f"model.freeze_encoder: unknown policy {policy!r}; valid: {', '.join(FREEZE_POLICIES)}")
        for module in self.encoder_modules():
            module.requires_grad_(True)
        self._frozen_bn = []
        if policy == "none":
            self.train(self.training)  # BatchNorm layers an earlier policy froze train again
            return
        stages = self.encoder_stages()
        frozen = stages if policy == "all" else stages[: max(len(stages) - unfrozen_stages, 0)]
        frozen_modules = {module for stage in frozen for module in stage}
        for module in frozen_modules:
            for param in module.parameters():
                param.requires_grad_(False)
        if policy == "all":  # parameters outside any stage (rare) are frozen too
            frozen_modules = set(self.encoder_modules())
            for module in frozen_modules:
                module.requires_grad_(False)
        inside = {m for root in frozen_modules for m in root.modules()}
        self._frozen_bn = [name for name, m in self.named_modules() if m in inside and isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.train(self.training)
