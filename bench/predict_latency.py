"""Seconds per photo of predict.py's whole path against the bare model forward at 512, in one process.

    python bench/predict_latency.py [--repeat 2] [--rounds 2] [--channels-last]

predict.py's path per photo: decode, face detection and 468-point mesh, FFHQ alignment, skin mask,
ResNet50 attention U-Net at 512 px (randomly initialized: speed does not depend on the weights),
mapping back onto the photo, per-region percentages, and writing mask and overlay PNGs. Photos: the
real ones in ../shared/data (2 portraits, 9 FFHQ 1024 px faces), else matplotlib's copy of the Grace
Hopper portrait. predict_folder runs once over the photos and once over 1 + repeat copies of them;
the difference is the per-photo cost without one-time start-up (checkpoint, model files, warm-up).
The bare forward is the same model on one 512 px image under no_grad, back to back, timed before
and after every run (the host's speed drifts; means are used).
The last line is one JSON object with predict_s_per_photo, bare_forward_s and their ratio (target:
at most 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from timing import median_forward_s  # noqa: E402 -- bench/ is on the path when a benchmark runs as a script


def photo_paths() -> list[Path]:
    shared = PROJECT_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        return sorted((shared / "photos").iterdir()) + sorted((shared / "ffhq-faces" / "images1024").glob("*.png"))
    import matplotlib.cbook

    return [Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="passes over the photos (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both runs (default 2); the host's speed drifts")
    parser.add_argument("--channels-last", action="store_true", help="run the model channels-last (slower on AVX2-only CPUs)")
    args = parser.parse_args()

    import torch

    from config import config_to_dict, load_config
    from engine.checkpoint import model_state, save_checkpoint
    from engine.cli import setup_logging
    from engine.inference import load_model
    from engine.segment_photos import predict_folder
    from unet import build_model

    setup_logging(quiet=True)
    cfg = load_config(
        None, ["model.encoder_weights=null", "face.align=ffhq", "face.skin=mesh", f"train.channels_last={args.channels_last}"]
    )
    photos = photo_paths()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = tmp / "model.pt"
        torch.manual_seed(0)
        save_checkpoint(
            checkpoint,
            {"model": model_state(build_model(cfg.model, encoder_weights=False)), "config": config_to_dict(cfg), "threshold": 0.5},
        )
        folders = {}
        for passes in (1, 1 + args.repeat):
            folders[passes] = tmp / f"photos_x{passes}"
            folders[passes].mkdir()
            for k in range(passes):
                for path in photos:
                    shutil.copy(path, folders[passes] / f"{k}_{path.name}")
        model, _, _ = load_model(checkpoint, torch.device("cpu"))
        bare, per_photo, startup = [median_forward_s(model, 512, 5, args.channels_last)], [], []
        for round_ in range(args.rounds):
            totals = {}
            for passes, folder in folders.items():
                start = time.perf_counter()
                rows = predict_folder(checkpoint, folder, tmp / f"out_{round_}_x{passes}", batch_size=1)
                totals[passes] = time.perf_counter() - start
                assert all(r["status"] == "ok" for r in rows), rows
                bare.append(median_forward_s(model, 512, 5, args.channels_last))
            # The difference between a run over 1 + repeat passes and a run over 1 pass is `repeat`
            # passes of photos, free of every one-time cost (checkpoint, model files, warm-up).
            per_photo.append((totals[1 + args.repeat] - totals[1]) / (len(photos) * args.repeat))
            startup.append(totals[1] - per_photo[-1] * len(photos))
            print(
                f"round {round_ + 1}: {len(photos)} photos {totals[1]:.1f} s, x{1 + args.repeat} {totals[1 + args.repeat]:.1f} s",
                file=sys.stderr,
            )

    per_photo_s, bare_s, startup_s = statistics.mean(per_photo), statistics.mean(bare), statistics.mean(startup)
    extra = len(photos) * args.repeat * args.rounds
    print(f"per photo {', '.join(f'{p:.3f}' for p in per_photo)} s; bare forward {', '.join(f'{b:.3f}' for b in bare)} s", file=sys.stderr)
    print(
        json.dumps(
            {
                "predict_s_per_photo": round(per_photo_s, 4),
                "bare_forward_s": round(bare_s, 4),
                "ratio": round(per_photo_s / bare_s, 3),
                "startup_s": round(startup_s, 3),
                "photos_timed": extra,
                "channels_last": args.channels_last,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
