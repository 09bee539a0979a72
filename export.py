"""Export a checkpoint to ONNX, for ONNX Runtime on any CPU (or GPU), optionally int8-quantized.

    python export.py --checkpoint runs/NAME/checkpoints/best.pt --output model.onnx
    python export.py --checkpoint best.pt --output model_int8.onnx --int8 --calibration photos/

The .onnx file takes float32 `image` N x C x H x W in [0, 1] (RGB, plus the texture map / 255 for
model.input=rgb_texture) of any batch and size (the network pads inside, as in PyTorch) and returns
`wrinkle_prob` N x 1 x H x W. Its metadata holds the checkpoint's config (resolution, face settings,
input channels), its validation threshold and its provenance, so predict.py and evaluate.py take the
.onnx file alone in place of the checkpoint:

    python predict.py --checkpoint model_int8.onnx --input photos/ --output predictions/

--int8 writes a statically quantized model (QDQ, per-channel int8 weights, uint8 activations) whose
activation ranges are calibrated on up to --calibration-limit faces from --calibration DIR, each
prepared exactly as predict.py prepares it (face crop, skin mask, texture channel; or, with
--face-masks, the images as they are with those skin masks), cropped at --size: give the --size that
predict.py will use (e.g. 1024 with --tile 512). Every architecture exports (Swin UNETR's graph is
large: about a minute). OUTPUT is never overwritten unless --overwrite, and then only a file
export.py wrote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import EXIT_OK, run_cli, setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .pt written by train.py or unet/import_weights.py")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--int8", action="store_true", help="statically quantize to int8 (needs --calibration)")
    parser.add_argument("--calibration", help="with --int8: a folder of face photos to calibrate activation ranges on")
    parser.add_argument("--calibration-limit", type=int, default=64, help="at most this many calibration faces (default 64)")
    parser.add_argument(
        "--size", type=int, help="crop calibration faces at this resolution: the --size predict.py will use (default: the training one)"
    )
    parser.add_argument("--recursive", action="store_true", help="also read calibration photos in sub-folders")
    parser.add_argument("--face-masks", help="calibration images are face crops with these same-named skin masks (no detection)")
    parser.add_argument("--bisenet-weights", help="with face.skin bisenet: path to 79999_iter.pth (calibration)")
    parser.add_argument("--mesh-models", help="folder of the face-mesh .tflite files (calibration)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export.py file at --output")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if Path(args.output).suffix.lower() != ".onnx":
        parser.error(f"--output must end in .onnx, got {args.output}")
    if args.int8 != bool(args.calibration):
        parser.error("--int8 and --calibration DIR go together: int8 activation ranges are calibrated on faces")
    if args.calibration_limit < 1:
        parser.error("--calibration-limit must be at least 1")
    calibration_only = [
        f"--{key.replace('_', '-')}" for key in ("face_masks", "bisenet_weights", "mesh_models", "size", "recursive") if getattr(args, key)
    ]
    if calibration_only and not args.int8:
        parser.error(f"{', '.join(calibration_only)}: only for --int8 calibration (an fp32 export reads no faces)")
    if args.size is not None and args.size < 32:
        parser.error("--size must be at least 32")
    if args.face_masks and (args.bisenet_weights or args.mesh_models):
        parser.error("--face-masks takes the images as they are; it cannot be combined with face settings")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from engine.onnx_model import export_file

    face_overrides = {k: v for k, v in (("bisenet_weights", args.bisenet_weights), ("mesh_models", args.mesh_models)) if v}
    written = export_file(
        args.checkpoint,
        args.output,
        args.calibration,
        args.calibration_limit,
        args.face_masks,
        face_overrides,
        args.overwrite,
        calibration_size=args.size,
        recursive=args.recursive,
    )
    print(written)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
