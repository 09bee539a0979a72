"""Segment wrinkles in a folder of face images.

    python predict.py --checkpoint runs/NAME/checkpoints/best.pt --input photos/ --output predictions/

For every readable image X.* in the input folder: OUTPUT/masks/X.png (0/255, the input's size) and
OUTPUT/overlays/X.png (prediction in red), optionally OUTPUT/probs/X.png; OUTPUT/summary.csv has one
row per input file with its status ("ok", "skipped" for non-image files, "error" for unreadable ones)
and the wrinkle area as a percentage of skin. Photos are zero-padded to a square and resized to the
checkpoint's training resolution, so nothing is distorted. The threshold defaults to the one chosen
on validation. Models trained on skin-masked faces (the default) expect --face-masks: skin masks
named like the images, as face_parsing_extraction.py writes them; without it the whole image is skin.

Exit codes: 0 every image was segmented; 3 some images could not be read (see summary.csv);
1 nothing could be done (bad checkpoint, missing folder).
"""

from __future__ import annotations

import argparse

from cli import EXIT_OK, EXIT_PARTIAL, run_cli, setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .pt written by train.py")
    parser.add_argument("--input", required=True, help="folder of face images")
    parser.add_argument("--output", required=True, help="folder for masks/, overlays/ and summary.csv")
    parser.add_argument("--threshold", default="auto", help="a probability, or 'auto' (the validation-chosen one; default)")
    parser.add_argument("--face-masks", help="folder of skin masks named like the images (e.g. face_parsing_extraction.py's face_masks/)")
    parser.add_argument("--save-probs", action="store_true", help="also write probability maps (0-255) to probs/")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from prediction import predict_folder

    rows = predict_folder(args.checkpoint, args.input, args.output, args.threshold, args.save_probs, args.batch_size, args.face_masks)
    print(args.output)
    return EXIT_PARTIAL if any(r["status"] == "error" for r in rows) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
