"""Augmented training samples per second per worker at 512 px: from the disk cache vs from 1024 PNGs.

    python bench/data_throughput.py [--samples 60]

Uses the real 1024x1024 FFHQ faces in ../shared/data when present (synthetic 1024 faces otherwise),
with the seed's full augmentation list, in one process (one worker's work). The last line is one JSON
object: cached_samples_per_s, png_samples_per_s, speedup. Targets: cached >= 4x PNG, >= 40/s per worker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import torch

from config import load_config
from data.dataset import WrinkleDataset
from data.image_io import write_png
from data.sources import folder_samples
from data.synthetic import render_face
from data.transforms import build_train_transform

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ffhq-faces" / "images1024"


def make_source(root: Path, n: int) -> str:
    """A folder-layout source of 1024 px PNG faces with thin-line masks and skin masks."""
    real = sorted(SHARED_FACES.glob("*.png")) if SHARED_FACES.is_dir() else []
    for i in range(n):
        if real:
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "images" / f"f{i:03d}.png").write_bytes(real[i % len(real)].read_bytes())
            face = render_face(i, 1024, 1024, i)
        else:
            face = render_face(i, 1024, 1024, i)
            write_png(root / "images" / f"f{i:03d}.png", face.image)
        write_png(root / "masks" / f"f{i:03d}.png", face.wrinkle_mask)
        write_png(root / "face_masks" / f"f{i:03d}.png", face.skin_mask)
    return "real FFHQ 1024 px PNGs" if real else "synthetic 1024 px PNGs"


def samples_per_second(dataset: WrinkleDataset, n: int) -> float:
    dataset.reseed(0)
    dataset[0]  # warm-up
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one DataLoader worker's share: torch already runs workers single-threaded
    torch.set_num_threads(1)
    cfg = load_config(None)  # the seed's augmentation list and 512 px
    size = cfg.data.image_size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        origin = make_source(root, args.images)
        samples = folder_samples(root)
        common = {"zero_non_skin": True, "mask_dilation": cfg.data.train_mask_dilation}
        cached = WrinkleDataset(
            samples, size, build_train_transform(cfg.data.augment, seed=0), cache="disk", cache_dir=Path(tmp) / "cache", **common
        )
        png = WrinkleDataset(samples, size, build_train_transform(cfg.data.augment, seed=0), cache="none", **common)
        cached_rate = samples_per_second(cached, args.samples)
        png_rate = samples_per_second(png, args.samples)
    print(f"{origin}, {size} px, seed augmentation list, 1 worker: cache {cached_rate:.1f}/s, PNG {png_rate:.1f}/s")
    print(
        json.dumps(
            {
                "cached_samples_per_s": round(cached_rate, 1),
                "png_samples_per_s": round(png_rate, 1),
                "speedup": round(cached_rate / png_rate, 2),
                "image_size": size,
                "source": origin,
            }
        )
    )


if __name__ == "__main__":
    main()
