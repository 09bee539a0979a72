"""Turn raw photos into square, skin-masked face crops for training or prediction.

    python face_parsing_extraction.py --input photos/ --output faces_out/ [--size 512]

Writes OUTPUT/faces/X.png (a size x size crop, non-skin pixels zeroed) and OUTPUT/face_masks/X.png
(0/255 skin mask) for every readable image, and OUTPUT/summary.csv with one status row per input file.

Backends (--backend):
  none     the centred square of the photo, scaled to --size; the whole crop counts as skin.
  bisenet  the same crop, parsed by BiSeNet (face-parsing.PyTorch's 79999_iter.pth, given with
           --weights) as the seed and the FFHQ-Wrinkle authors do; skin = --skin-classes (default
           1,10: skin and nose), everything else zeroed.
Both expect faces that are already centred (FFHQ-like). Landmark alignment with a face mesh, for
arbitrary photos, is the next backend to come; until then this tool does not detect faces.

Exit codes: 0 every image was processed; 3 some images could not be read; 1 nothing could be done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli import EXIT_OK, EXIT_PARTIAL, list_inputs, run_cli, setup_logging, write_summary

BACKENDS = ("none", "bisenet")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of photos")
    parser.add_argument("--output", required=True, help="folder for faces/, face_masks/ and summary.csv")
    parser.add_argument("--size", type=int, default=512, help="side of the output crops (default 512)")
    parser.add_argument("--backend", default="none", choices=BACKENDS)
    parser.add_argument("--weights", help="bisenet: path to 79999_iter.pth")
    parser.add_argument("--skin-classes", default="1,10", help="bisenet: classes that count as skin (default 1,10)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error("--size must be at least 32")
    if args.backend == "bisenet" and not args.weights:
        parser.error("--backend bisenet needs --weights PATH/79999_iter.pth")
    try:
        args.skin_classes = tuple(int(c) for c in args.skin_classes.split(","))
    except ValueError:
        parser.error(f"--skin-classes: expected comma-separated class numbers, got {args.skin_classes!r}")
    return args


def extract_folder(input_dir: Path, output_dir: Path, size: int, parser=None, skin_classes: tuple[int, ...] = (1, 10)) -> list[dict]:
    """Centre-crop, resize, skin-mask (with a BiSeNet `parser`) and write every image in `input_dir`;
    one status row per file."""
    import numpy as np

    from data.image_io import IMAGE_SUFFIXES, ImageReadError, read_rgb, resize_rgb, write_png
    from face.bisenet import parse_face, skin_mask

    rows = []
    for path in list_inputs(input_dir):
        row = {"file": path.name, "status": "ok", "message": ""}
        rows.append(row)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            row.update(status="skipped", message="not an image file")
            continue
        try:
            image = read_rgb(path)
        except ImageReadError as err:
            row.update(status="error", message=str(err))
            continue
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        face = resize_rgb(image[top : top + side, left : left + side], size, size)
        skin = skin_mask(parse_face(parser, face), skin_classes) if parser is not None else np.ones((size, size), bool)
        write_png(output_dir / "faces" / f"{path.stem}.png", face * skin[..., None])
        write_png(output_dir / "face_masks" / f"{path.stem}.png", skin)
    write_summary(output_dir / "summary.csv", rows, ["file", "status", "message"])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    parser = None
    if args.backend == "bisenet":
        from face.bisenet import load_bisenet
        from inference import resolve_device

        parser = load_bisenet(args.weights, resolve_device(args.device))
    rows = extract_folder(Path(args.input), Path(args.output), args.size, parser, args.skin_classes)
    print(args.output)
    return EXIT_PARTIAL if any(r["status"] == "error" for r in rows) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
