"""AttentionUNet: an encoder from segmentation-models-pytorch's registry, an attention-gated decoder."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from engine.errors import UnknownNameError, WrinkleError
from unet.freezing import EncoderFreezing
from unet.inputs import Normalize, widen_input
from unet.unet_parts import DecoderBlock, FullResolutionStem, OutputHead, pad_to_multiple

HUB_CHECK_TIMEOUT_S = 5.0  # one request to the Hugging Face hub; huggingface_hub's own retries take ~27 s offline


class WeightsError(WrinkleError, ValueError):
    """Weights that cannot be had or do not fit the network; the message names the file or option."""


class WeightsNotFound(WeightsError, FileNotFoundError):
    """A weights file that is not there (also a FileNotFoundError, for callers that catch that)."""


def load_weights_file(path: Path, way_out: str, label: str | None = None) -> Mapping[str, torch.Tensor]:
    """The state dict in a PyTorch weights file, loaded with weights_only=True; a missing, empty,
    truncated or foreign file is a one-line `WeightsError` that starts with `label` (default: the
    path) and ends with `way_out`."""
    from engine.checkpoint import load_torch_file

    label = label or str(path)
    if not path.is_file():
        raise WeightsNotFound(f"{label}: no such file; {way_out}")
    state = load_torch_file(path, WeightsError, "unreadable weights file", way_out, label)
    if not isinstance(state, Mapping):
        raise WeightsError(f"{label}: holds a {type(state).__name__}, not a state dict of named tensors; {way_out}")
    return state


def encoder_names() -> list[str]:
    """Names accepted as `model.encoder` (smp's registry; `tu-*` timm encoders are accepted too)."""
    from segmentation_models_pytorch.encoders import encoders

    return sorted(encoders)


def _load_encoder_file(encoder: nn.Module, path: Path) -> None:
    """Load encoder weights from a local file (a plain state dict, smp- or torchvision-style keys)."""
    way_out = "set model.encoder_weights to an encoder state dict (.pt, .pth or .safetensors), imagenet or null"
    if not path.is_file():
        raise WeightsNotFound(f"model.encoder_weights: no such file {path}; {way_out}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as err:
            raise WeightsError(f"model.encoder_weights={path}: unreadable safetensors file ({err}); {way_out}") from None
    else:
        state = load_weights_file(path, way_out, label=f"model.encoder_weights={path}")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "head."))}
    from engine.checkpoint import state_mismatch

    mismatch = state_mismatch(encoder, state)
    if mismatch:
        raise WeightsError(f"{path}: encoder weights that do not fit the encoder: {mismatch}; {way_out}")
    nn.Module.load_state_dict(encoder, state)  # not smp's override, which hides the result


def _hub_unreachable(endpoint: str, timeout: float = HUB_CHECK_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub at `endpoint` cannot be reached (None when it answers): one HEAD
    request with a short timeout and no retries. urllib honours the same *_proxy variables as
    huggingface_hub's client, so a proxied machine is not taken for an offline one."""
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered, if only with an error status: the download will say more
    except OSError as err:  # URLError (DNS, refused, TLS), timeouts
        reason = getattr(err, "reason", None) or err
        return str(reason) or type(reason).__name__


def _imagenet_encoder(name: str, in_channels: int, depth: int) -> nn.Module:
    """smp's encoder with its ImageNet weights (hf_hub_download into the Hugging Face cache).

    smp pins each weights file to a commit, so a cached copy loads with no network at all; a missing
    one offline would cost huggingface_hub's retries (~27 s) and end in an error that does not name
    the option. So the cache is looked at first, then the hub is asked once, briefly."""
    import huggingface_hub
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from segmentation_models_pytorch import encoders as smp_encoders

    what = f"model.encoder_weights=imagenet (encoder {name})"
    way_out = "connect to the internet once so the weights are cached, set model.encoder_weights to a local weights file, or to null"
    timm_routed = name.startswith("tu-") or getattr(smp_encoders, "is_equivalent_to_timm_universal", lambda _: False)(name)
    if not timm_routed:  # `tu-` encoders get their weights through timm, which is not checked here
        settings = smp_encoders.encoders[name]["pretrained_settings"].get("imagenet")
        if settings is None:
            raise WeightsError(
                f"{what}: smp has no ImageNet weights for this encoder; set model.encoder_weights to a local weights file or null"
            )
        if "repo_id" in settings:
            cached = all(
                isinstance(huggingface_hub.try_to_load_from_cache(settings["repo_id"], filename, revision=settings.get("revision")), str)
                for filename in ("config.json", "model.safetensors")  # the two files smp's get_encoder fetches
            )
            if not cached:
                where = f"not in the Hugging Face cache ({hub_constants.HF_HUB_CACHE})"
                if hub_constants.HF_HUB_OFFLINE:
                    raise WeightsError(f"{what}: the weights are {where} and HF_HUB_OFFLINE is set; {way_out}")
                problem = _hub_unreachable(hub_constants.ENDPOINT)
                if problem is not None:
                    raise WeightsError(
                        f"{what}: the weights are {where} and {hub_constants.ENDPOINT} cannot be reached ({problem}); {way_out}"
                    )
    try:
        return smp_encoders.get_encoder(name, in_channels=in_channels, depth=depth, weights="imagenet")
    except (LocalEntryNotFoundError, HfHubHTTPError) as err:  # the hub answered the check, then failed (or timm's download)
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"{what}: the download from the Hugging Face hub failed ({first_line}); {way_out}") from None


def build_encoder(name: str, weights: str | None, in_channels: int = 3, depth: int = 5) -> nn.Module:
    """An smp encoder by name; `weights` is None, "imagenet" (downloaded by smp) or a local file path."""
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    if name not in encoders and not name.startswith("tu-"):
        raise UnknownNameError(f"model.encoder: unknown encoder {name!r}; valid: {', '.join(sorted(encoders))}")
    if weights is None:
        return get_encoder(name, in_channels=in_channels, depth=depth, weights=None)
    if weights == "imagenet":
        return _imagenet_encoder(name, in_channels, depth)
    encoder = get_encoder(name, in_channels=in_channels, depth=depth, weights=None)
    _load_encoder_file(encoder, Path(weights))
    return encoder


class AttentionUNet(EncoderFreezing):
    """U-Net with an smp encoder, attention-gated skips, transposed-conv decoder and full-resolution logits.

    Input: float N x in_channels x H x W in [0, 1] (RGB, or RGB + texture map: unet/inputs.py), any H and
    W (padded internally to a multiple of 32). Normalization happens inside the model, so training and
    inference cannot disagree on it. A texture channel's first-conv filters start from the pretrained RGB
    ones (`widen_input`). Output: N x classes x H x W logits.
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
        in_channels: int = 3,
    ):
        super().__init__()
        depth = len(decoder_channels)
        self.in_channels = in_channels
        self.encoder = build_encoder(encoder_name, encoder_weights, in_channels=3, depth=depth)
        widen_input(self.encoder, in_channels)
        self.normalize = Normalize(in_channels)
        self.stride = 2**depth

        encoder_channels = list(self.encoder.out_channels)  # [input, stride 2, 4, ..., 2**depth]
        skip_channels = encoder_channels[-2:0:-1] + [full_res_skip_channels]
        in_channels = [encoder_channels[-1]] + list(decoder_channels[:-1])
        self.stem = FullResolutionStem(self.in_channels, full_res_skip_channels) if full_res_skip_channels > 0 else None
        self.decoder = nn.ModuleList(
            DecoderBlock(c_in, c_skip, c_out, attention, dropout)
            for c_in, c_skip, c_out in zip(in_channels, skip_channels, decoder_channels)
        )
        # The head keeps PyTorch's default init: a RetinaNet-style rare-class prior bias (p = 0.01) was
        # tried and slowed early learning under Dice + Focal (validation IoU 0.01 vs 0.35 after 2 epochs).
        self.head = OutputHead(decoder_channels[-1], classes)
        self._frozen_bn: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(self.normalize(x), self.stride)
        features = self.encoder(x)
        skips = features[-2:0:-1] + [self.stem(x) if self.stem is not None else None]
        y = features[-1]
        for block, skip in zip(self.decoder, skips):
            y = block(y, skip)
        return self.head(y)[..., :height, :width]
