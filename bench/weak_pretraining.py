"""Does texture pretraining help when labels are scarce? From scratch vs two stages, same budget.

    python bench/weak_pretraining.py [--faces 240 --labeled-fraction 0.1 --size 96 --budget 480]

On the built-in synthetic faces, at CPU scale, with the quickstart's network (ResNet18 encoder, no
pretrained weights): a pool of training faces of which only `--labeled-fraction` keep their wrinkle
masks, a fixed validation set and a fixed test set.
- scratch: segmentation (Dice + Focal) on the labeled faces only, for `--budget` training images;
- two_stage: train.task=texture on every pool face (their texture maps, no labels) for `--stage1-share`
  of the budget (half by default), then segmentation on the labeled faces from that checkpoint
  (model.init_from) for the rest.
Both select best.pt on validation IoU; the figures are the test split's pooled IoU of best.pt and the
validation IoU of the last epoch. One JSON line: both runs' figures and the gains (two_stage - scratch).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def lay_out(work: Path, faces: int, labeled_fraction: float, size: int) -> dict[str, int]:
    """synthetic/ (all faces), labeled/ (the labeled pool faces + val + test, with masks) and weak/ (every
    pool face + val, images and skin only); val.txt and test.txt list the fixed splits."""
    from data.synthetic import write_synthetic_dataset

    synthetic = write_synthetic_dataset(work / "synthetic", faces, size, size, seed=77, workers=2)
    ids = sorted(p.stem for p in (synthetic / "images").glob("*.png"))
    n_val = n_test = max(len(ids) // 6, 2)
    val, test, pool = ids[:n_val], ids[n_val : n_val + n_test], ids[n_val + n_test :]
    labeled = pool[: max(round(len(pool) * labeled_fraction), 2)]
    for folder, chosen, parts in (
        ("labeled", labeled + val + test, ("images", "masks", "face_masks")),
        ("weak", pool + val, ("images", "face_masks")),
    ):
        for part in parts:
            (work / folder / part).mkdir(parents=True)
            for stem in chosen:
                shutil.copy(synthetic / part / f"{stem}.png", work / folder / part / f"{stem}.png")
    (work / "val.txt").write_text("\n".join(val) + "\n")
    (work / "test.txt").write_text("\n".join(test) + "\n")
    (work / "no_test.txt").write_text("")
    return {"pool": len(pool), "labeled": len(labeled), "val": len(val), "test": len(test)}


def common(work: Path, size: int, name: str) -> list[str]:
    return [
        f"experiment.name={name}",
        f"experiment.output_dir={work / 'runs'}",
        "experiment.deterministic=true",
        f"data.image_size={size}",
        f"data.cache_dir={work / 'cache'}",
        "data.cache=memory",
        "data.split.method=files",
        f"data.split.val_ids_file={work / 'val.txt'}",
        "logging.wandb=disabled",
        "train.batch_size=8",
        "eval.batch_size=16",
    ]


def segmentation(work: Path, size: int, name: str, epochs: int, init_from: Path | None = None) -> list[str]:
    return [
        *common(work, size, name),
        f"data.sources=[{{kind: folder, root: {work / 'labeled'}}}]",
        f"data.split.test_ids_file={work / 'test.txt'}",
        f"train.epochs={epochs}",
        "train.select_metric=val_iou",
        *([f"model.init_from={init_from}"] if init_from else []),
    ]


def texture(work: Path, size: int, epochs: int) -> list[str]:
    return [
        *common(work, size, "stage1"),
        f"data.sources=[{{kind: weak, root: {work / 'weak'}}}]",
        f"data.split.test_ids_file={work / 'no_test.txt'}",
        f"train.epochs={epochs}",
        "train.task=texture",
        "train.select_metric=val_loss",
    ]


def run(overrides: list[str]) -> Path:
    from config import load_config
    from engine.trainer import fit

    return fit(load_config(QUICKSTART, overrides))


def figures(run_dir: Path, work: Path) -> dict[str, float]:
    """The last epoch's validation IoU and best.pt's test IoU."""
    import csv

    from engine.scoring import evaluate_checkpoint

    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    report = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", work / f"eval-{run_dir.name}", split="test")
    return {"val_iou_last": round(float(rows[-1]["val_iou"]), 4), "test_iou_best": round(report["iou"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=240)
    parser.add_argument("--labeled-fraction", type=float, default=0.1)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--budget", type=int, default=640, help="training images seen by each arm (stage 1 + stage 2 for two_stage)")
    parser.add_argument("--stage1-share", type=float, default=0.5, help="the share of two_stage's budget spent on stage 1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        counts = lay_out(work, args.faces, args.labeled_fraction, args.size)
        scratch_epochs = max(args.budget // counts["labeled"], 1)
        stage1_epochs = max(round(args.budget * args.stage1_share) // counts["pool"], 1)
        stage2_epochs = max((args.budget - stage1_epochs * counts["pool"]) // counts["labeled"], 1)
        started = time.perf_counter()
        scratch = figures(run(segmentation(work, args.size, "scratch", scratch_epochs)), work)
        stage1 = run(texture(work, args.size, stage1_epochs))
        two_stage = figures(run(segmentation(work, args.size, "stage2", stage2_epochs, stage1 / "checkpoints" / "best.pt")), work)
        print(
            json.dumps(
                {
                    **counts,
                    "size": args.size,
                    "budget_images": args.budget,
                    "stage1_share": args.stage1_share,
                    "scratch_epochs": scratch_epochs,
                    "stage1_epochs": stage1_epochs,
                    "stage2_epochs": stage2_epochs,
                    "scratch": scratch,
                    "two_stage": two_stage,
                    "gain_test_iou": round(two_stage["test_iou_best"] - scratch["test_iou_best"], 4),
                    "gain_val_iou_last": round(two_stage["val_iou_last"] - scratch["val_iou_last"], 4),
                    "seconds": round(time.perf_counter() - started, 1),
                    "torch_threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
