"""Measure the FFHQ crop scale that reproduces a folder of FFHQ-aligned training faces.

    python -m face.calibrate DIR [DIR ...] [--mesh-models FOLDER]

FFHQ's crops were made from dlib's landmarks, these from the face mesh's eye centres and mouth
corners. For each image under the DIRs (searched recursively, so FFHQ's nested
images1024x1024/NNN00/ layout works; FFHQ-aligned, any size) this re-aligns the face from its mesh
and reports the zoom that re-alignment applies (1.0: the face's own framing is reproduced; photos
with several faces use the largest, as face.multiple_faces: largest does). The median is the
`face.crop_scale` under which photos are cropped like the training faces. Per-image scales and
per-folder medians go to stderr; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np


def find_images(folders: list[Path]) -> list[Path]:
    """Image files under each folder, recursively, sorted; hidden files and folders are ignored."""
    from data.image_io import IMAGE_SUFFIXES

    found = []
    for folder in folders:
        folder = Path(folder)
        found += sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
    return found


def realignment_scales(paths: list[Path], mesh) -> dict[Path, float]:
    """Zoom of the mesh-based FFHQ re-alignment of each FFHQ-aligned image, by path (1.0: the crop
    is reproduced); several faces: the largest; unreadable images and images without a face are
    left out."""
    from data.image_io import ImageReadError, read_rgb
    from face.align import ffhq_affine

    scales = {}
    for path in paths:
        try:
            image = read_rgb(path)
        except ImageReadError as err:
            print(f"skipped: {err}", file=sys.stderr)
            continue
        faces = mesh(image)
        if not faces:
            print(f"skipped: {path}: no face", file=sys.stderr)
            continue
        if len(faces) > 1:
            print(f"{path}: {len(faces)} faces, the largest used", file=sys.stderr)
        matrix = ffhq_affine(faces[0].landmarks, image.shape[1])  # largest first
        scales[path] = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    return scales


def summary(values: list[float]) -> dict:
    """Count, median and quartiles (None for a single value), rounded to 3 decimals."""
    quartiles = [round(q, 3) for q in statistics.quantiles(values, n=4)] if len(values) > 1 else None
    return {"images": len(values), "median": round(statistics.median(values), 3), "quartiles": quartiles}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="folders of FFHQ-aligned faces (e.g. training images), searched recursively")
    parser.add_argument("--mesh-models", default=None, help="folder of the face-mesh .tflite files")
    args = parser.parse_args(argv)
    from face.mesh import FaceMesh

    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    scales = realignment_scales(find_images(args.folders), FaceMesh(args.mesh_models))
    if not scales:
        print(f"error: no usable faces in {', '.join(str(f) for f in args.folders)}", file=sys.stderr)
        return 1
    by_folder: dict[str, list[float]] = {}
    for path, scale in scales.items():
        print(f"{path}\t{scale:.4f}", file=sys.stderr)
        by_folder.setdefault(str(path.parent), []).append(scale)
    folders = {folder: summary(values) for folder, values in by_folder.items()}
    for folder, stats in folders.items():
        print(f"{folder}: {stats['images']} images, median {stats['median']}, quartiles {stats['quartiles']}", file=sys.stderr)
    overall = summary(list(scales.values()))
    print(json.dumps({"images": overall["images"], "crop_scale": overall["median"], "quartiles": overall["quartiles"], "folders": folders}))
    return 0


if __name__ == "__main__":
    from engine.cli import run_cli

    raise SystemExit(run_cli(main))
