"""Import published wrinkle-model weights as a checkpoint of this project.

    python -m unet.import_weights seed-unet best_checkpoint_iou032.pth --output models/seed_unet.pt
    python -m unet.import_weights seed-unet wrinkle_model.safetensors --output models/seed_unet.pt
    python -m unet.import_weights moon-unet stage2_unet.pth --output models/moon_unet.pt
    python -m unet.import_weights moon-swinunetr stage2_swinunetr.pth --output models/moon_swinunetr.pt

The file is read safely (torch.load with weights_only=True, or safetensors), its SHA-256 compared with
the known releases (an unknown one is a warning, not an error: some releases publish none), and its
weights loaded strictly into the model they were trained as. The output is a checkpoint that
evaluate.py and predict.py take like one of train.py's, with the config the weights were trained
under (input size, face alignment, skin masking, threshold).

Models:
  seed-unet  github.com/rmsandu/FFHQ-detect-face-wrinkles: the ResNet50 U-Net without attention
             (390 keys, 72,293,185 parameters): its .pth (best_checkpoint_iou032.pth, with
             model_state_dict) or the Hugging Face rmsandu/ffhq-wrinkle-unet wrinkle_model.safetensors.
  moon-unet  github.com/labhai/ffhq-wrinkle-dataset (Moon et al.): the stage-2 U-Net, RGB + texture input
             (110 keys, 17,263,618 parameters): stage2_unet.pth (its `model` entry or the whole object).
  moon-swinunetr  the same release's stage-2 Swin UNETR (159 keys, 25,241,228 parameters):
             stage2_swinunetr.pth. Inputs are padded to a multiple of 1024 inside the model.
  Both Moon et al. models see 1024 px FFHQ-aligned faces, skin-masked with BiSeNet classes 1 (skin) and 10
  (nose), with the texture map as a 4th channel (model.input=rgb_texture), and threshold at 0.5.

--check-only verifies a file (digest, strict load, finite weights) and writes nothing.

Exit codes: 0 written (its path is printed) or verified (--check-only); 1 nothing written (unreadable or
foreign file, --output exists).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from config import config_to_dict, load_config
from engine.checkpoint import model_state, non_finite_tensors, save_checkpoint, state_mismatch
from engine.cli import EXIT_OK, run_cli, setup_logging
from engine.errors import OutputError, UnknownNameError
from engine.fileio import file_digest
from unet.unet_model import WeightsError, WeightsNotFound, load_weights_file

log = logging.getLogger(__name__)

WAY_OUT = "pass the published weights file of this model (.pth or .safetensors)"
# Entries of a training container that may hold the model's state dict, in order of preference.
STATE_ENTRIES = ("model_state_dict", "model", "state_dict")


@dataclass(frozen=True)
class PublishedModel:
    """A published model: how to build it, read its files, which files are known, and its training config."""

    build: Callable[[], nn.Module]
    read: Callable[[Path], dict[str, torch.Tensor]]
    known_sha256: frozenset[str]
    overrides: tuple[str, ...]  # config key=value lines that describe how the weights were trained
    threshold: float  # the probability threshold the publisher used


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file; an unreadable one is a one-line WeightsError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, ValueError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"{path}: unreadable safetensors file ({first_line}); {WAY_OUT}") from None


def read_container(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a published weights file: a .safetensors file, or a PyTorch file holding a training
    container (its `model_state_dict`, `model` or `state_dict` entry; the rest, such as optimizer state,
    is ignored) or a bare state dict. A DataParallel `module.` prefix is removed."""
    if path.suffix.lower() == ".safetensors":
        state: Mapping = read_safetensors(path)
    else:
        state = load_weights_file(path, WAY_OUT)
        entry = next((k for k in STATE_ENTRIES if isinstance(state.get(k), Mapping)), None)
        if entry is not None:
            state = state[entry]
        elif not all(isinstance(v, torch.Tensor) for v in state.values()):
            entries = ", ".join(map(str, list(state)[:6]))
            raise WeightsError(f"{path}: holds no state dict (its entries: {entries}; expected {', '.join(STATE_ENTRIES)}); {WAY_OUT}")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(f"{path}: {len(not_tensors)} state-dict entries are not tensors (e.g. {not_tensors[0]}); {WAY_OUT}")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_strictly(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, name: str) -> None:
    """Load `state` into `model` with every key present, known and of the right shape; otherwise a
    one-line WeightsError naming `path` and the first differing keys."""
    mismatch = state_mismatch(model, state)
    if mismatch:
        raise WeightsError(f"{path}: not the {name} weights: {mismatch}; {WAY_OUT}")
    bad = non_finite_tensors(dict(state))
    if bad:
        raise WeightsError(f"{path}: {len(bad)} weight tensors hold NaN or infinity (e.g. {bad[0]}); {WAY_OUT}")
    model.load_state_dict(state, strict=True)


def _seed_unet() -> nn.Module:
    """The seed's ResNet50 U-Net, randomly initialized (its weights are about to be loaded: nothing is downloaded)."""
    from unet.seed_unet import SeedUNet

    return SeedUNet(pretrained_encoder=False)


def _read_seed(path: Path) -> dict[str, torch.Tensor]:
    """The seed's .pth training container or its Hugging Face .safetensors."""
    return read_container(path)


def _moon_unet() -> nn.Module:
    """Moon et al.'s stage-2 U-Net (4 input channels, 2 classes), randomly initialized."""
    from unet.moon_unet import MoonUNet

    return MoonUNet()


def _moon_swinunetr() -> nn.Module:
    """Moon et al.'s stage-2 Swin UNETR (4 input channels, 2 classes), randomly initialized."""
    from unet.swin_unetr import SwinUNETR

    return SwinUNETR()


def _moon_overrides(arch: str) -> tuple[str, ...]:
    """How Moon et al.'s stage-2 models see faces (labhai/ffhq-wrinkle-dataset inference.py and README)."""
    return (
        f"model.arch={arch}",
        "model.input=rgb_texture",  # RGB + the texture map (their weak_wrinkle_masks) as the 4th channel
        "model.encoder_weights=null",
        "model.freeze_encoder=none",
        "data.image_size=1024",  # FFHQ's 1024 px faces, fed as they are
        "data.zero_non_skin=true",  # masked_face_images: everything but BiSeNet skin and nose is black
        "face.align=ffhq",
        "face.skin=bisenet",
        "face.skin_classes=[1, 10]",
        "eval.threshold=0.5",  # argmax over their two classes is softmax p1 > 0.5
    )


PUBLISHED: dict[str, PublishedModel] = {
    "seed-unet": PublishedModel(
        build=_seed_unet,
        read=_read_seed,
        # No digest is published for the seed's .pth (Dropbox, Google Drive) or its .safetensors (the
        # Hugging Face card lists none): every file gets the unknown-digest warning until one is recorded.
        known_sha256=frozenset(),
        overrides=(
            "model.arch=seed_unet",
            "model.encoder=resnet50",
            "model.encoder_weights=null",  # the checkpoint holds the whole network: nothing to download
            "model.freeze_encoder=none",
            "data.image_size=512",  # the seed trained and predicts on 512 x 512 face crops
            "data.zero_non_skin=true",  # ... with non-skin pixels blacked out by BiSeNet face parsing
            "face.align=ffhq",
            "face.skin=bisenet",
            "face.skin_classes=[1, 10]",
            "eval.threshold=0.5",  # the seed's app.py and evaluate.py threshold the sigmoid at 0.5
        ),
        threshold=0.5,
    ),
    "moon-unet": PublishedModel(
        build=_moon_unet,
        # inference.py takes ckpt["model"] if present, else the whole object, and strips `module.`; the
        # optimizer state the .pth almost certainly also holds is ignored (read_container does all that).
        read=read_container,
        known_sha256=frozenset({"883034b3e0726dcdae946c312106dfde1d354ea5455fa21cba045a73058f4a25"}),  # stage2_unet.pth
        overrides=_moon_overrides("moon_unet"),
        threshold=0.5,
    ),
    "moon-swinunetr": PublishedModel(
        build=_moon_swinunetr,
        read=read_container,  # the same loader as their U-Net's
        known_sha256=frozenset({"b8f6a46c49d52f5725d0d79740d2c9508b4f8aa6400ea4fe0b27f7a6cd8bdd12"}),  # stage2_swinunetr.pth
        overrides=_moon_overrides("swin_unetr"),
        threshold=0.5,
    ),
}


def import_weights(name: str, source: str | Path, output: str | Path | None, overwrite: bool = False) -> Path | None:
    """Write `output`, a checkpoint of this project holding the published model `name`'s weights from `source`.
    With `output` None (--check-only), only verify `source` (digest, strict load) and write nothing."""
    if name not in PUBLISHED:
        raise UnknownNameError(f"unknown published model {name!r}; valid: {', '.join(PUBLISHED)}")
    spec = PUBLISHED[name]
    source, output = Path(source), None if output is None else Path(output)
    if not source.is_file():
        raise WeightsNotFound(f"{source}: no such file; {WAY_OUT}")
    if output is not None and output.exists():  # checked first: nothing is read for a run that cannot write
        if not overwrite:
            raise OutputError(f"--output {output} exists; pass --overwrite to replace it")
        if output.resolve() == source.resolve():
            raise OutputError(f"--output {output} is the weights file being imported; choose another path")
    digest = file_digest(source, "sha256")
    state = spec.read(source)
    model = spec.build()
    load_strictly(model, state, source, name)
    # Told after the checks, so a foreign file gets its one-line error and not a digest warning too.
    if digest in spec.known_sha256:
        log.info("%s: SHA-256 %s is a known %s release", source, digest, name)
    else:
        log.warning("%s: SHA-256 %s is not a known %s release; importing it anyway (check where the file came from)", source, digest, name)
    if output is None:
        log.info("%s: %d tensors of %s verified; nothing written (--check-only)", source, len(state), name)
        return None
    cfg = load_config(None, list(spec.overrides))
    save_checkpoint(
        output,
        {
            "format": 1,
            "model": model_state(model),
            "config": config_to_dict(cfg),
            "threshold": spec.threshold,
            "epoch": 0,
            "imported_from": {"file": source.name, "sha256": digest, "model": name},
        },
    )
    log.info("%s: %d tensors of %s imported", output, len(state), name)
    return output


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m unet.import_weights", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", choices=sorted(PUBLISHED), help="which published model the file holds")
    parser.add_argument("file", type=Path, help="the published weights file (.pth or .safetensors)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", type=Path, help="the checkpoint to write (.pt)")
    target.add_argument("--check-only", action="store_true", help="verify the file (digest, strict load) and write nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    written = import_weights(args.model, args.file, args.output, args.overwrite)
    print(written if written is not None else f"{args.file}: verified as {args.model} weights; nothing written")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
