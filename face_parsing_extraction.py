"""Turn raw photos into aligned, skin-masked face crops, as the training faces are.

    python face_parsing_extraction.py --input photos/ --output faces_out/ [--size 512]

For every photo X.* with a usable face: OUTPUT/faces/X.png (size x size crop, non-skin pixels
zeroed) and OUTPUT/face_masks/X.png (0/255 skin mask); OUTPUT/summary.csv has one row per input
file: status (ok; skipped: not an image; error: unreadable, too large, unsupported format or broken
link; no_face; multiple_faces; name_clash), the number of
faces, and `matrix`, the six numbers of the 2x3 affine from photo pixels to crop pixels (pixel
centres at integer coordinates), so any output can be mapped back onto the photo with its inverse
(cv2.warpAffine(..., flags=cv2.WARP_INVERSE_MAP)).

Alignment (--align):
  ffhq     (default) FFHQ's crop from the eye centres and mouth corners of the 468-point face
           mesh (BlazeFace detector + face landmark model, run offline with LiteRT); --crop-scale
           enlarges it (python -m face.calibrate measures the value that matches training faces).
  none     the whole photo, zero-padded to a square and scaled; no crop.
Skin (--backend):
  mesh     (default) the face oval minus eyes, eyebrows and lips, from the same face mesh.
  bisenet  BiSeNet face parsing (face-parsing.PyTorch's 79999_iter.pth, given with --weights), as
           the seed and the FFHQ-Wrinkle authors use it; skin = --skin-classes (default 1,10).
  none     every pixel of the photo is skin.
Several faces: the largest is used (--multiple largest) or the photo is skipped (skip).

OUTPUT must be new or empty; --overwrite replaces the files of an earlier run there, never a file this
command did not write. --recursive also reads sub-folders.

Exit codes: 0 every image gave a face; 3 some did not (see summary.csv); 1 nothing could be done.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.cli import EXIT_OK, EXIT_PARTIAL, input_status, list_inputs, run_cli, setup_logging, write_batch, write_summary
from engine.errors import OutputError

log = logging.getLogger(__name__)

BACKENDS = ("mesh", "bisenet", "none")
SUMMARY_COLUMNS = ["file", "status", "n_faces", "width", "height", "matrix", "message"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from config import FaceConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of photos")
    parser.add_argument("--output", required=True, help="folder for faces/, face_masks/ and summary.csv")
    parser.add_argument("--size", type=int, default=512, help="side of the output crops (default 512)")
    parser.add_argument("--align", default="ffhq", choices=["ffhq", "none"])
    parser.add_argument(
        "--crop-scale",
        type=float,
        default=FaceConfig().crop_scale,
        help="enlarge FFHQ's crop by this (default %(default)s, face.crop_scale's; python -m face.calibrate measures it)",
    )
    parser.add_argument("--backend", default="mesh", choices=BACKENDS, help="where the skin mask comes from")
    parser.add_argument("--multiple", default="largest", choices=["largest", "skip"], help="photos with several faces")
    parser.add_argument("--min-score", type=float, default=0.5, help="detection and face-presence scores below this are not faces")
    parser.add_argument("--mesh-models", default="", help="folder of the face-mesh .tflite files (default models/face_mesh)")
    parser.add_argument("--weights", help="bisenet: path to 79999_iter.pth")
    parser.add_argument("--skin-classes", default="1,10", help="bisenet: classes that count as skin (default 1,10)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--recursive", action="store_true", help="also read the photos in sub-folders (outputs repeat their layout)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output (never other files)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error("--size must be at least 32")
    if not 0.5 <= args.crop_scale <= 2:
        parser.error("--crop-scale must be in [0.5, 2]")
    if not 0 < args.min_score < 1:
        parser.error("--min-score must be in (0, 1)")
    if args.backend == "bisenet" and not args.weights:
        parser.error("--backend bisenet needs --weights PATH/79999_iter.pth")
    try:
        args.skin_classes = [int(c) for c in args.skin_classes.split(",")]
    except ValueError:
        parser.error(f"--skin-classes: expected comma-separated class numbers, got {args.skin_classes!r}")
    return args


def extract_folder(input_dir: Path, output_dir: Path, cropper, overwrite: bool = False, recursive: bool = False) -> list[dict]:
    """Crop, skin-mask and write the face of every photo in `input_dir` with a `FaceCropper`; one
    status row per file. `output_dir` follows `OutputFolder`'s rules; after each photo summary.csv
    lists exactly the photos whose files are written."""
    from data.image_io import ImageReadError, read_rgb
    from engine.output_folder import OutputFolder
    from face.crop import FaceNotUsable

    files = list_inputs(input_dir, recursive)
    output = OutputFolder(output_dir, "face_parsing_extraction.py", overwrite=overwrite, inputs=[input_dir])
    rows: list[dict] = []
    names: dict[str, Path] = {}
    for path in files:
        row = {"file": path.relative_to(input_dir).as_posix(), "status": "ok", "message": ""}
        rows.append(row)
        name, problem = input_status(path, input_dir, names)
        if problem is not None:
            row.update(status=problem[0], message=problem[1])
            continue
        try:
            image = read_rgb(path)
            crop = cropper(image)
        except ImageReadError as err:
            row.update(status="error", message=str(err))
            continue
        except FaceNotUsable as err:
            row.update(status=err.status, n_faces=err.n_faces, message=str(err))
            continue
        names[name] = path
        row.update(
            n_faces=crop.n_faces if cropper.mesh is not None else "",
            height=image.shape[0],
            width=image.shape[1],
            matrix=" ".join(f"{v:.6g}" for v in crop.matrix.ravel()),
        )
        images = {f"faces/{name}.png": crop.image * crop.skin[..., None], f"face_masks/{name}.png": crop.skin}
        try:
            write_batch(output, images, rows, SUMMARY_COLUMNS)
        except OutputError:
            rows.pop()
            log.error("stopped: summary.csv in %s lists the %d files handled before %s", output_dir, len(rows), row["file"])
            raise
    write_summary(output.path("summary.csv"), rows, SUMMARY_COLUMNS)
    output.finish()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from config import FaceConfig
    from engine.inference import resolve_device
    from face.crop import FaceCropper

    face = FaceConfig(
        align=args.align,
        skin=args.backend,
        crop_scale=args.crop_scale,
        multiple_faces=args.multiple,
        min_score=args.min_score,
        mesh_models=args.mesh_models,
        bisenet_weights=args.weights or "",
        skin_classes=args.skin_classes,
    )
    cropper = FaceCropper(face, args.size, str(resolve_device(args.device)))
    rows = extract_folder(Path(args.input), Path(args.output), cropper, args.overwrite, args.recursive)
    print(args.output)
    return EXIT_PARTIAL if any(r["status"] not in ("ok", "skipped") for r in rows) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
