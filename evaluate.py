"""Score a checkpoint on a data split.

    python evaluate.py --checkpoint runs/NAME/checkpoints/best.pt --output runs/NAME/eval
    python evaluate.py --checkpoint best.pt --output eval --config config.yaml --split test --threshold auto --tta hflip
    python evaluate.py --baseline ridge --config configs/quickstart.yaml --output eval_ridge
    python evaluate.py --checkpoint model_int8.onnx --output eval_int8      # an export.py file, in ONNX Runtime

Writes OUTPUT/metrics.json (every figure with its definition), OUTPUT/per_image.csv, roc.png, pr.png,
threshold.png and overlays/ of the best and worst images; with --save-probs also OUTPUT/probs/<id>.npz
(arrays prob, truth, region: the exact pixels scored, to recompute any figure, e.g. with scikit-learn). The data comes from the checkpoint's own
config unless --config or key=value overrides say otherwise; the model always comes from the checkpoint
(a model section in --config, or model.* overrides, are not used).
--baseline ridge scores a classical ridge filter under the same protocol instead, its threshold chosen
on the validation split. OUTPUT must be new or empty; --overwrite replaces an earlier evaluate.py run
there (never a file evaluate.py did not write). metrics.json is written last: a folder without it is
an evaluation that did not finish.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli import EXIT_OK, run_cli, setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a .pt written by train.py or a .onnx written by export.py (required unless --baseline)")
    parser.add_argument("--output", required=True, help="folder for metrics.json, per_image.csv and pictures")
    parser.add_argument("--config", help="YAML config for the data to score (default: the checkpoint's)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="default: test")
    parser.add_argument("--threshold", help="a probability, or 'auto' for the threshold chosen on validation (default: eval.threshold)")
    parser.add_argument("--tta", default="none", choices=["none", "hflip"], help="hflip: average with the mirrored prediction")
    parser.add_argument("--tile", type=int, help="read images larger than this in overlapping windows of this size (eval.tile)")
    parser.add_argument("--overlap", type=int, help="pixels shared by neighbouring windows (eval.overlap, default 64)")
    parser.add_argument(
        "--runtime", choices=["torch", "onnx"], help="PyTorch, or ONNX Runtime (a .pt is exported in memory first); default: by the file"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch and ONNX Runtime alike (default: PyTorch's, the cores)")
    parser.add_argument("--baseline", choices=["ridge"], help="score a classical baseline instead of a checkpoint")
    parser.add_argument(
        "--save-probs", action="store_true", help="also write OUTPUT/probs/<id>.npz: prob, truth and region of every scored image"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier evaluate.py run in --output (never other files)"
    )
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. eval.region=image")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.baseline:
        parser.error("--checkpoint is required (or --baseline ridge with --config)")
    if args.baseline:
        model_only = [f"--{key.replace('_', '-')}" for key in ("save_probs", "runtime", "threads") if getattr(args, key)]
        model_only += ["--tta"] if args.tta != "none" else []
        if model_only:
            parser.error(f"{', '.join(model_only)}: for a checkpoint's model, not --baseline")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from engine.scoring import evaluate_baseline, evaluate_checkpoint

    # The options are the config's eval.tile / eval.overlap, so they are checked (and recorded) with it.
    args.overrides += [f"eval.{key}={value}" for key in ("tile", "overlap") if (value := getattr(args, key)) is not None]
    if args.baseline:
        report = evaluate_baseline(args.output, args.config, args.overrides, args.split, args.checkpoint, args.overwrite)
    else:
        report = evaluate_checkpoint(
            args.checkpoint,
            args.output,
            args.config,
            args.overrides,
            args.split,
            args.threshold,
            args.tta,
            args.save_probs,
            args.overwrite,
            runtime=args.runtime,
            threads=args.threads,
        )
    headline = {k: round(report[k], 4) for k in ("iou", "dice", "precision", "recall", "auc", "tolerant_f1", "cldice", "per_image_iou")}
    print(json.dumps({"n_images": report["n_images"], "threshold": round(report["threshold"], 4), **headline}), file=sys.stderr)
    print(args.output)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
