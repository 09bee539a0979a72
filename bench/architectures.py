"""The architectures side by side: parameters and forward time at 512 and 1024 px on this machine.

    python bench/architectures.py [--repeats 3]

In one process, for every `model.arch` (ResNet50 encoders, ResNeXt-50 for Kim et al.'s UNet++; Moon et
al.'s U-Net and Swin UNETR with their 4-channel input) and for
segmentation-models-pytorch's Unet-ResNet50 as the reference: the median eval-mode forward of one image
(batch 1, float32, NCHW, no gradient) after a warm-up, and its ratio to the reference's median measured
in the same process at the same size. One JSON line per architecture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from timing import median_forward_s

SIZES = (512, 1024)
ARCHS = {  # name -> dotted overrides (no download: random weights time the same)
    "smp_unet_resnet50 (reference)": ["model.arch=smp_unet", "model.encoder=resnet50"],
    "attention_unet": ["model.arch=attention_unet", "model.encoder=resnet50"],
    "unetplusplus_resnext50": ["model.arch=unetplusplus", "model.encoder=resnext50_32x4d"],
    "seed_unet": ["model.arch=seed_unet", "model.encoder=resnet50"],
    # Moon et al.'s: 4 channels (RGB + texture map); Swin UNETR pads every input to a multiple of 1024.
    "moon_unet": ["model.arch=moon_unet", "model.input=rgb_texture"],
    "swin_unetr": ["model.arch=swin_unetr", "model.input=rgb_texture"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    from config import load_config
    from unet import build_model

    reference: dict[int, float] = {}
    for name, overrides in ARCHS.items():
        torch.manual_seed(0)
        model = build_model(load_config(None, ["model.encoder_weights=null", "model.freeze_encoder=none", *overrides]).model).eval()
        row = {"arch": name, "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
        for size in SIZES:
            seconds = median_forward_s(model, size, args.repeats)
            reference.setdefault(size, seconds)  # the first entry is the reference
            row[f"forward_s_{size}"] = round(seconds, 3)
            row[f"vs_smp_unet_{size}"] = round(seconds / reference[size], 2)
        row["torch_threads"] = torch.get_num_threads()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
