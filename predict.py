"""Segment wrinkles on face photos: any size, any framing.

    python predict.py --checkpoint runs/NAME/checkpoints/best.pt --input photos/ --output predictions/

Each photo is prepared as the checkpoint's training faces were, per its config's `face` section:
the face is found (BlazeFace + 468-point face mesh, offline), cropped FFHQ-style from its eye and
mouth landmarks at the training resolution, and its skin masked (mesh: face oval minus eyes, brows
and lips; or BiSeNet). The model's output is mapped back onto the photo with the inverse transform.
The threshold defaults to the one chosen on validation. Several faces: the largest is used
(face.multiple_faces: largest) or the photo is skipped (skip).

Writes, for every photo X.*: OUTPUT/masks/X.png (0/255, the photo's size), OUTPUT/overlays/X.png
(wrinkles in red, the regions outlined), with --save-probs OUTPUT/probs/X.png (probability x 255); and OUTPUT/summary.csv,
one row per input file: status (ok; skipped: not an image; error: unreadable, too large, unsupported format or broken link; no_face;
multiple_faces; name_clash: another file has the same name before its suffix), number of faces,
skin and wrinkle pixels, wrinkle area as % of skin, and the same % per region (forehead, glabella =
between the brows, periorbital = around the eyes, cheeks = cheeks and nasolabial folds), each over
its own skin pixels; a region mostly beyond the photo's frame (under half of it inside) is left
empty. Nothing is written outside OUTPUT.

OUTPUT must be new or empty; --overwrite replaces the files of an earlier predict.py run there (and
removes those this run does not write again), never a file predict.py did not write. OUTPUT may not
be, contain or lie inside --input (unless --overwrite). Photos larger than 200 megapixels, unsupported
formats (GIF, HEIC, ...) and broken links get an error row; the others go on. --recursive also reads
sub-folders.

--checkpoint may be a .onnx from export.py (run by ONNX Runtime; the file holds the face settings and
threshold); --runtime onnx also runs a .pt in ONNX Runtime. --size 1024 --tile 512 crops faces at
1024 px and reads them in overlapping 512 px windows (for a model trained on 512 px patches or
faces), so memory stays bounded by the tile; --tta hflip averages with the mirrored prediction.

--face-masks DIR: images that are already face crops (face_parsing_extraction.py's faces/) with
their skin masks (its face_masks/): no detection, the image is padded to a square and scaled.
--align / --skin / --bisenet-weights / --mesh-models override the checkpoint's face settings (a
warning says so when alignment or skin differ from training).

Exit codes: 0 every image got a mask; 3 some image files got none (unreadable, no face; see
summary.csv; non-image files do not count); 1 nothing could be done (bad checkpoint, missing folder).
"""

from __future__ import annotations

import argparse

from engine.cli import EXIT_OK, EXIT_PARTIAL, run_cli, setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .pt written by train.py, or a .onnx written by export.py")
    parser.add_argument("--input", required=True, help="folder of photos")
    parser.add_argument("--output", required=True, help="folder for masks/, overlays/ and summary.csv")
    parser.add_argument("--threshold", default="auto", help="a probability, or 'auto' (the validation-chosen one; default)")
    parser.add_argument("--face-masks", help="folder of skin masks named like the images; the images are taken as already cropped")
    parser.add_argument("--align", choices=["ffhq", "none"], help="override the checkpoint's face.align")
    parser.add_argument("--skin", choices=["mesh", "bisenet", "none"], help="override the checkpoint's face.skin")
    parser.add_argument("--bisenet-weights", help="with skin bisenet: path to 79999_iter.pth")
    parser.add_argument(
        "--mesh-models", help="folder of the face-mesh .tflite files (default: the checkpoint's face.mesh_models, else models/face_mesh)"
    )
    parser.add_argument(
        "--runtime", choices=["torch", "onnx"], help="PyTorch, or ONNX Runtime (a .pt is exported in memory first); default: by the file"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch and ONNX Runtime alike (default: PyTorch's, the cores)")
    parser.add_argument("--tta", default="none", choices=["none", "hflip"], help="hflip: average with the mirrored prediction")
    parser.add_argument("--size", type=int, help="face crop resolution in px (default: the training resolution)")
    parser.add_argument("--tile", type=int, help="read face crops larger than this in overlapping windows of this size (eval.tile)")
    parser.add_argument("--overlap", type=int, help="pixels shared by neighbouring windows (eval.overlap, default 64)")
    parser.add_argument("--save-probs", action="store_true", help="also write probability maps (0-255) to probs/")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--recursive", action="store_true", help="also read the photos in sub-folders (outputs repeat their layout)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier predict.py run in --output (never other files)"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.face_masks and (args.align or args.skin or args.bisenet_weights or args.mesh_models):
        parser.error("--face-masks takes the images as they are; it cannot be combined with face settings")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from engine.segment_photos import NO_RESULT, predict_folder

    face_overrides = {
        k: v
        for k, v in (
            ("align", args.align),
            ("skin", args.skin),
            ("bisenet_weights", args.bisenet_weights),
            ("mesh_models", args.mesh_models),
        )
        if v
    }
    rows = predict_folder(
        args.checkpoint,
        args.input,
        args.output,
        args.threshold,
        args.save_probs,
        args.batch_size,
        args.face_masks,
        face_overrides,
        overwrite=args.overwrite,
        recursive=args.recursive,
        runtime=args.runtime,
        threads=args.threads,
        tta=args.tta,
        size=args.size,
        tile=args.tile,
        overlap=args.overlap,
    )
    print(args.output)
    return EXIT_PARTIAL if any(r["status"] in NO_RESULT for r in rows) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
