"""Train a wrinkle segmentation model from a YAML config.

    python train.py --config configs/quickstart.yaml
    python train.py --config config.yaml train.epochs=3 model.encoder=resnet18
    python train.py --resume runs/NAME/checkpoints/last.pt          # continue that run exactly
    python train.py --config config.yaml model.init_from=PRETRAINED.pt  # new run from those weights
    torchrun --nproc_per_node=4 train.py --config config.yaml           # DDP: NCCL on GPUs, Gloo on CPU

Prints the run folder (config.yaml, metrics.csv, checkpoints/best.pt and last.pt) on stdout.
"""

from __future__ import annotations

import argparse
import os

from engine.cli import EXIT_OK, run_cli, setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (defaults apply to anything it leaves out)")
    parser.add_argument("--resume", help="continue the run of this checkpoint (its own config is used)")
    parser.add_argument("--verbose", action="store_true", help="debug logging, with tracebacks on errors")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    if args.resume and args.config:
        parser.error("--resume uses the checkpoint's own config; drop --config")
    if not args.resume and not args.config:
        parser.error("--config is required (or --resume CHECKPOINT)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(args.verbose, quiet=rank != 0)  # under torchrun, rank 0 speaks for all
    from config import load_config
    from engine.trainer import fit, resume_config

    cfg = resume_config(args.resume, args.overrides) if args.resume else load_config(args.config, args.overrides)
    run_dir = fit(cfg, resume=args.resume)
    if rank == 0:
        print(run_dir)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
