"""Turn raw photos into square, skin-masked face crops for training or prediction.

    python face_parsing_extraction.py --input photos/ --output faces_out/ [--size 512]

Writes OUTPUT/faces/X.png (a size x size crop, non-skin pixels zeroed) and OUTPUT/face_masks/X.png
(0/255 skin mask) for every readable image, and OUTPUT/summary.csv with one status row per input file.

Backends (--backend):
  none   the centred square of the photo, scaled to --size; the whole crop counts as skin.
         For photos that are already aligned faces (e.g. FFHQ) or when no face model is wanted.
Landmark alignment with a face mesh and BiSeNet face parsing are the next backends to come; until
then this tool does not detect faces.

Exit codes: 0 every image was processed; 3 some images could not be read; 1 nothing could be done.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from cli import EXIT_OK, EXIT_PARTIAL, run_cli, setup_logging

BACKENDS = ("none",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of photos")
    parser.add_argument("--output", required=True, help="folder for faces/, face_masks/ and summary.csv")
    parser.add_argument("--size", type=int, default=512, help="side of the output crops (default 512)")
    parser.add_argument("--backend", default="none", choices=BACKENDS)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error("--size must be at least 32")
    return args


def extract_folder(input_dir: Path, output_dir: Path, size: int) -> list[dict]:
    """Centre-crop, resize and write every image in `input_dir`; one status row per file."""
    import numpy as np

    from data.image_io import IMAGE_SUFFIXES, ImageReadError, read_rgb, resize_rgb, write_png

    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input: not a folder: {input_dir}")
    rows = []
    for path in sorted(p for p in input_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
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
        write_png(output_dir / "faces" / f"{path.stem}.png", face)
        write_png(output_dir / "face_masks" / f"{path.stem}.png", np.full((size, size), 255, np.uint8))
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f".summary.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "status", "message"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, output_dir / "summary.csv")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    rows = extract_folder(Path(args.input), Path(args.output), args.size)
    print(args.output)
    return EXIT_PARTIAL if any(r["status"] == "error" for r in rows) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
