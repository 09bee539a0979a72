"""Training throughput at 512 px: the real training loop vs a bare step, and channels-last vs NCHW.

    python bench/train_throughput.py [--batch-size 2 --steps 4]

In one process, on the seed's model (ResNet50 attention U-Net, encoder frozen but for its last two
stages) and synthetic 512 px faces: images/s of Trainer.train_one_epoch (disk-cached data loading,
augmentation, Dice + Focal, backward, clipping, AdamW, progress bar and step logging) and of a bare
forward + loss + backward + AdamW step on one fixed batch, the bare step in channels-last and default
(NCHW) layouts. The last line is one JSON object: loop_images_per_s, bare_images_per_s, loop_vs_bare,
channels_last_speedup, peak_mb. Targets: loop >= 0.8x bare; channels-last >= 1.3x NCHW on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def bare_step_rate(cfg, batch, channels_last: bool, steps: int) -> float:
    import torch

    from engine.inference import to_model_input
    from engine.trainer import build_optimizer
    from losses import DiceFocalLoss
    from unet import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = build_optimizer(model, cfg)
    loss_fn = DiceFocalLoss()
    x = to_model_input(batch["image"], torch.device("cpu"), channels_last)
    target, region = batch["mask"], batch["face_mask"]

    def step():
        loss = loss_fn(model(x).float(), target, region)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    from config import load_config
    from engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        n_train = args.batch_size * (args.steps + 1)
        cfg = load_config(
            None,
            [
                f"experiment.output_dir={tmp}/runs",
                "experiment.device=cpu",
                "logging.wandb=disabled",
                f"data.sources.0.root={tmp}/faces",
                f"data.sources.0.n_images={n_train + 4}",
                f"data.image_size={args.size}",
                f"data.cache_dir={tmp}/cache",
                "data.num_workers=0",
                "data.split.val_fraction=0.1",
                "data.split.test_fraction=0.1",
                "model.encoder_weights=null",
                f"train.batch_size={args.batch_size}",
                "train.channels_last=true",
            ],
        )
        trainer = Trainer(cfg)
        trainer.train_one_epoch()  # warm-up (first-touch allocations)
        start = time.perf_counter()
        trainer.train_one_epoch()
        loop_rate = len(trainer.train_loader) * args.batch_size / (time.perf_counter() - start)
        batch = next(iter(trainer.train_loader))
        bare_cl = bare_step_rate(cfg, batch, True, args.steps)
        bare_nchw = bare_step_rate(cfg, batch, False, args.steps)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.size} px, batch {args.batch_size}: loop {loop_rate:.3f} img/s, bare channels-last {bare_cl:.3f} img/s, bare NCHW {bare_nchw:.3f} img/s"
    )
    print(
        json.dumps(
            {
                "loop_images_per_s": round(loop_rate, 3),
                "bare_images_per_s": round(bare_cl, 3),
                "loop_vs_bare": round(loop_rate / bare_cl, 3),
                "channels_last_speedup": round(bare_cl / bare_nchw, 3),
                "nchw_images_per_s": round(bare_nchw, 3),
                "peak_mb": round(peak_mb, 1),
                "image_size": args.size,
                "batch_size": args.batch_size,
                "device": "cpu",
            }
        )
    )


if __name__ == "__main__":
    main()
