"""Measure the FFHQ crop scale that reproduces a folder of FFHQ-aligned training faces.

    python -m face.calibrate DIR [--mesh-models FOLDER]

FFHQ's crops were made from dlib's landmarks; the face mesh's eye centres and mouth corners give a
crop of a somewhat different size on many faces. For each image in DIR (FFHQ-aligned, any size) this
re-aligns the face from its mesh and reports the zoom that re-alignment applies; the median is the
`face.crop_scale` under which photos are cropped like the training faces. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np


def realignment_scales(paths: list[Path], mesh) -> dict[str, float]:
    """Zoom of the mesh-based FFHQ re-alignment of each FFHQ-aligned image (1.0: the crop is
    reproduced); images without exactly one usable face are left out."""
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
        if len(faces) != 1:
            print(f"skipped: {path.name}: {len(faces)} faces", file=sys.stderr)
            continue
        matrix = ffhq_affine(faces[0].landmarks, image.shape[1])
        scales[path.name] = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    return scales


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="FFHQ-aligned faces (e.g. the training images)")
    parser.add_argument("--mesh-models", default=None, help="folder of the face-mesh .tflite files")
    args = parser.parse_args(argv)
    from data.image_io import list_images
    from face.mesh import FaceMesh

    scales = realignment_scales(list_images(args.folder), FaceMesh(args.mesh_models))
    if not scales:
        print(f"error: no usable faces in {args.folder}", file=sys.stderr)
        return 1
    for name, scale in scales.items():
        print(f"{name}\t{scale:.4f}", file=sys.stderr)
    values = list(scales.values())
    print(json.dumps({"images": len(values), "crop_scale": round(statistics.median(values), 3),
                      "quartiles": [round(q, 3) for q in statistics.quantiles(values, n=4)] if len(values) > 1 else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
