"""Evaluation speed at 512 px and peak memory for 50 vs 400 images (the metric state must not grow).

    python bench/eval_throughput.py [--small 50 --large 400]

Runs the evaluation loop that evaluate.py and validation use (disk-cached samples, ResNet50 attention
U-Net forward, loss-free scoring with strict, tolerant and clDice metrics and the ROC/PR histogram) on
synthetic 512 px faces, each size in a fresh process so each peak resident memory is its own. The last
line is one JSON object: images_per_s, peak_mb_50, peak_mb_400, memory_ratio. Target: 400 within 10 %
of 50.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

N_FILES = 8  # distinct synthetic faces, repeated under distinct ids to reach the image counts


def dataset_for(root: Path, cache: Path, count: int):
    from data.dataset import WrinkleDataset
    from data.sources import folder_samples

    files = folder_samples(root)
    samples = [replace(files[i % len(files)], id=f"{files[i % len(files)].id}-{i}") for i in range(count)]
    return WrinkleDataset(samples, 512, cache="disk", cache_dir=cache)


def run_one(root: Path, cache: Path, count: int, batch_size: int) -> dict:
    import torch

    from config import load_config
    from data.dataset import make_loader
    from engine.inference import model_predictor, score_loader
    from unet import build_model

    cfg = load_config(None, ["model.encoder_weights=null", f"eval.batch_size={batch_size}"])
    model = build_model(cfg.model).to(memory_format=torch.channels_last)
    loader = make_loader(dataset_for(root, cache, count), batch_size, False, 0, 0)
    predictor = model_predictor(model, torch.device("cpu"), "off", channels_last=True)
    start = time.perf_counter()
    results, _, _ = score_loader(predictor, loader, torch.device("cpu"), cfg, desc=f"{count} images")
    elapsed = time.perf_counter() - start
    assert results["n_images"] == count
    return {"count": count, "images_per_s": count / elapsed, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "CACHE", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, cache, count = args.child
        print(json.dumps(run_one(Path(root), Path(cache), int(count), args.batch_size)))
        return

    from data.synthetic import write_synthetic_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "faces", Path(tmp) / "cache"
        write_synthetic_dataset(root, N_FILES, 512, 512, seed=5, workers=2)
        dataset_for(root, cache, N_FILES)  # build the disk cache once, outside the timed runs
        results = {}
        for count in (args.small, args.large):
            out = subprocess.run(
                [sys.executable, __file__, "--batch-size", str(args.batch_size), "--child", str(root), str(cache), str(count)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[count] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{count} images: {results[count]['images_per_s']:.2f} images/s, peak {results[count]['peak_mb']:.0f} MB", flush=True)
    small, large = results[args.small], results[args.large]
    print(
        json.dumps(
            {
                "images_per_s": round(large["images_per_s"], 3),
                f"peak_mb_{args.small}": round(small["peak_mb"], 1),
                f"peak_mb_{args.large}": round(large["peak_mb"], 1),
                "memory_ratio": round(large["peak_mb"] / small["peak_mb"], 3),
                "image_size": 512,
                "model": "AttentionUNet ResNet50, fp32, channels-last, CPU",
            }
        )
    )


if __name__ == "__main__":
    main()
