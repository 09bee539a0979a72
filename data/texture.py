"""Moon et al.'s texture map (the weak wrinkle label and the model's 4th input channel) from an RGB image.

The paper's map is T = (1 - I / (1 + I_G)) * 255, where I is the pixel intensity and I_G its Gaussian blur
(21 x 21 kernel, sigma 5, on 1024 px faces), unthresholded and zeroed outside the face skin. The paper
leaves the numerical details open; this module follows the variant that a third party (PacharaponK/
Aphrodize, ai/ffhq_wrinkle/texture_map.py) found closest to the released `weak_wrinkle_masks`:

- I = 0.2126 R + 0.7152 G + 0.0722 B (BT.709) in float32, on 0..255 values;
- I_G = cv2.GaussianBlur in float32 with BORDER_REFLECT_101;
- a dark-only floor I <- min(I, I_G), so only pixels darker than their surroundings respond;
- T clipped to [0, 255], rounded with np.rint, stored as uint8.

Aphrodize reports MAE 0.4934 (RMSE 3.033, 77.15% exact pixels) against the released weak masks over 100
test ids; their figure, not reproduced here. They call the dark floor an empirical choice, not the
authors' code. At other resolutions the kernel and sigma scale with the image (`blur_parameters`), so a
512 px face is blurred over the same share of the face as a 1024 px one.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import cv2
import numpy as np

REFERENCE_SIZE = 1024  # the side at which the published kernel and sigma apply
REFERENCE_KERNEL = 21
REFERENCE_SIGMA = 5.0
BT709_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], np.float32)  # R, G, B


def blur_parameters(side: int, reference_size: int = REFERENCE_SIZE) -> tuple[int, float]:
    """Gaussian kernel size and sigma for an image whose longer side is `side` pixels: the published
    21 x 21, sigma 5 at `reference_size`, both scaled by side / reference_size. The kernel is the odd
    integer nearest to the scaled 21, at least 3; a tie (the scaled 21 even) goes to the smaller one, which
    keeps the published kernel = 4 sigma + 1 at 2x and 4x the reference (41 at 2048, 83 at 4096)."""
    if side < 1 or reference_size < 1:
        raise ValueError(f"blur_parameters needs positive sizes, got side={side}, reference_size={reference_size}")
    scale = side / reference_size
    kernel = 2 * math.ceil((REFERENCE_KERNEL * scale - 1) / 2 - 0.5) + 1
    return max(kernel, 3), REFERENCE_SIGMA * scale


def intensity(image: np.ndarray) -> np.ndarray:
    """BT.709 intensity of an RGB uint8 image, float32 on 0..255 values (R, G, B order, as PIL reads)."""
    return image.astype(np.float32) @ BT709_WEIGHTS


def _check(image: np.ndarray, skin: np.ndarray | None) -> None:
    """ValueError for arguments no caller should pass: these are programming errors, not bad files."""
    if image.dtype != np.uint8:
        raise ValueError(f"texture_map needs a uint8 RGB image, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"texture_map needs a non-empty H x W x 3 RGB image, got shape {image.shape}")
    if skin is not None:
        if skin.shape != image.shape[:2]:
            raise ValueError(f"skin mask is {skin.shape}, the image is {image.shape[:2]}")
        if skin.dtype != np.bool_:  # a label map or 0/255 mask passed by mistake would not mean "skin" as is
            raise ValueError(f"skin mask must be bool, got dtype {skin.dtype}")


def texture_map(image: np.ndarray, skin: np.ndarray | None = None, reference_size: int = REFERENCE_SIZE) -> np.ndarray:
    """The uint8 texture map (H x W) of an RGB uint8 image, zero outside `skin` (bool H x W) when given.
    The blur sees the whole image; `skin` only zeroes the result, as the released maps were masked."""
    _check(image, skin)
    kernel, sigma = blur_parameters(max(image.shape[:2]), reference_size)
    level = intensity(image)
    blurred = cv2.GaussianBlur(level, (kernel, kernel), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    # The dark-only floor: a pixel brighter than its surroundings would give a negative response, clipped
    # to 0; floored to I_G it gives 255 / (1 + I_G), which matched the released maps better (Aphrodize).
    floored = np.minimum(level, blurred)
    response = (1.0 - floored / (1.0 + blurred)) * 255.0
    # With the floor the response already lies in (0, 255]; the clip only guards the uint8 cast.
    texture = np.rint(np.clip(response, 0.0, 255.0)).astype(np.uint8)
    if skin is not None:
        texture[~skin] = 0
    return texture


# What determines the texture channel: a cache entry made with another recipe must not be read.
TEXTURE_RECIPE = f"bt709-dark-floor-k{REFERENCE_KERNEL}-s{REFERENCE_SIGMA:g}@{REFERENCE_SIZE}"


def with_texture(image: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """H x W x 4 uint8: the RGB image, then its texture map zeroed outside `skin` (bool or 0/1 H x W) —
    the model input of `model.input=rgb_texture`, at whatever resolution the image is (the blur scales)."""
    return np.dstack([image, texture_map(image, skin.astype(bool, copy=False))])


# ------------------------------------------------------------------------------------------------
# Command line: weak labels for any folder, python -m data.texture --input DIR --output DIR
# ------------------------------------------------------------------------------------------------

CLI_HELP = """Texture maps (weak wrinkle labels) for a folder of face images.

    python -m data.texture --input faces/ --output texture_maps/ [--face-masks DIR] [--size N]

For every face image X.*: OUTPUT/X.png, its texture map as an 8-bit grayscale PNG (0..255, the format of
FFHQ-Wrinkle's weak_wrinkle_masks), the face's size (--size N: N x N), zero outside skin; and
OUTPUT/summary.csv, one row per input file: status (ok; skipped: not an image; error: unreadable, too
large, unsupported format, broken link, no or unreadable skin mask; name_clash: another file has the same
name before its suffix), width and height of the map, skin_pixels, texture_mean (the mean map value on
skin) and a message. The same image always gives the same bytes.

The faces are expected to be face crops, as face_parsing_extraction.py writes them (faces/ for --input,
face_masks/ for --face-masks), or FFHQ-aligned images. Skin:
  --face-masks DIR  the mask of the same relative name (any image suffix) in DIR, the image's size;
  (none)            every pixel that is not pure black (0, 0, 0): skin-masked faces (face_parsing_extraction.py's
                    faces/) have black non-skin pixels, whose texture would be 255 (I = 0), a bright band
                    around the face. An unmasked image counts as skin all over, bar its pure-black pixels.
The blur always sees the whole image; skin only zeroes the map. --size pads a non-square face with black
on the right and bottom to a square (not skin), then scales it to N x N (area averaging when shrinking)
before the map is computed; the blur's kernel and sigma scale with the resolution (21 x 21, sigma 5 at 1024).

OUTPUT must be new or empty; --overwrite replaces the files of an earlier run there (and removes those this
run does not write again), never a file this command did not write. OUTPUT may not be, contain or lie inside
--input or --face-masks (unless --overwrite). --recursive also reads sub-folders (outputs repeat their layout).

Exit codes: 0 every image got a map; 3 some image files got none (see summary.csv; non-image files do not
count); 1 nothing could be done (missing folder, output folder refused).
"""

COMMAND = "data.texture"  # the name recorded in the output folder's manifest
SUMMARY_COLUMNS = ["file", "status", "width", "height", "skin_pixels", "texture_mean", "message"]
NO_RESULT = ("error", "name_clash")  # statuses of image files that got no map
WRITE_EVERY = 16  # images per write of their PNGs and summary.csv


def face_texture(image: np.ndarray, skin: np.ndarray, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The texture map of a face (RGB uint8) and its skin (bool, same size), zero outside skin, and that
    skin; with `size` both are padded to a square and scaled to size x size first, as data.decode.load_sample
    does (the skin's padding is not skin, it is resized by majority)."""
    if size is not None:
        from data.decode import pad_to_square  # data.decode imports this module: imported here, when needed
        from data.image_io import resize_mask, resize_rgb

        image, skin = pad_to_square(image), pad_to_square(skin)
        image, skin = resize_rgb(image, size, size), resize_mask(skin, size, size, thin=False)
    return texture_map(image, skin), skin


def _face_and_skin(path: Path, name: str, face_mask_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """A face image and its skin: the mask named `name` in `face_mask_dir`, else the not-pure-black pixels.
    ImageReadError (naming the file) for an unreadable image or mask, a missing mask or a size mismatch."""
    from data.image_io import read_rgb, read_rgb_with_face_mask

    if face_mask_dir is not None:
        return read_rgb_with_face_mask(path, face_mask_dir, name)
    image = read_rgb(path)
    return image, image.any(axis=2)


def texture_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    face_mask_dir: str | Path | None = None,
    size: int | None = None,
    overwrite: bool = False,
    recursive: bool = False,
) -> list[dict]:
    """Write the texture map of every face image in `input_dir` to `output_dir` (see CLI_HELP); returns
    the summary rows, one per input file. `output_dir` follows engine.output_folder.OutputFolder's rules;
    every WRITE_EVERY images summary.csv lists exactly the files handled so far, their maps written."""
    from tqdm import tqdm

    from data.image_io import ImageReadError
    from engine.cli import face_mask_folder, input_status, list_inputs, write_batch
    from engine.errors import OutputError
    from engine.output_folder import OutputFolder

    log = logging.getLogger(__name__)
    input_dir, output_dir, face_mask_dir = Path(input_dir), Path(output_dir), face_mask_folder(face_mask_dir)
    files = list_inputs(input_dir, recursive)
    inputs = [input_dir] + ([face_mask_dir] if face_mask_dir is not None else [])
    output = OutputFolder(output_dir, COMMAND, overwrite=overwrite, inputs=inputs)

    done: list[dict] = []  # rows whose maps are written (or that have none)
    pending_rows: list[dict] = []
    pending_maps: dict[str, np.ndarray] = {}
    names: dict[str, Path] = {}

    def flush() -> None:
        try:
            write_batch(output, pending_maps, done + pending_rows, SUMMARY_COLUMNS)
        except OutputError:
            log.error("stopped: summary.csv in %s lists the %d files handled before this batch", output.root, len(done))
            raise
        done.extend(pending_rows)
        pending_rows.clear()
        pending_maps.clear()

    for path in tqdm(files, desc="texture", unit="file", dynamic_ncols=True):
        row = {"file": path.relative_to(input_dir).as_posix(), "status": "ok", "message": ""}
        pending_rows.append(row)
        name, problem = input_status(path, input_dir, names)
        if problem is not None:
            row.update(status=problem[0], message=problem[1])
            continue
        try:
            image, skin = _face_and_skin(path, name, face_mask_dir)
        except ImageReadError as err:
            row.update(status="error", message=str(err))
            log.warning("%s", err)
            continue
        names[name] = path
        texture, skin = face_texture(image, skin, size)
        skin_pixels = int(skin.sum())
        row.update(
            width=texture.shape[1],
            height=texture.shape[0],
            skin_pixels=skin_pixels,
            texture_mean=round(float(texture[skin].mean()), 4) if skin_pixels else "",
            message="" if skin_pixels else "no skin pixels: the map is all zero",
        )
        pending_maps[f"{name}.png"] = texture
        if len(pending_maps) >= WRITE_EVERY:
            flush()
    flush()  # the last maps, and summary.csv with every file's row
    output.finish()
    return done


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m data.texture", description=CLI_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="folder of face images (face crops, e.g. face_parsing_extraction.py's faces/)")
    parser.add_argument("--output", required=True, help="folder for the maps (X.png) and summary.csv")
    parser.add_argument(
        "--face-masks",
        help="folder of skin masks named like the images (e.g. face_parsing_extraction.py's face_masks/); "
        "without it every pixel that is not pure black counts as skin",
    )
    parser.add_argument("--size", type=int, help="pad each face to a square and scale it to N x N first (default: its own size)")
    parser.add_argument("--recursive", action="store_true", help="also read the images in sub-folders (outputs repeat their layout)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output (never other files)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 32:
        parser.error("--size must be at least 32")
    return args


def main(argv: list[str] | None = None) -> int:
    from engine.cli import EXIT_OK, EXIT_PARTIAL, setup_logging

    args = parse_args(argv)
    setup_logging(args.verbose)
    rows = texture_folder(args.input, args.output, args.face_masks, args.size, overwrite=args.overwrite, recursive=args.recursive)
    print(args.output)
    return EXIT_PARTIAL if any(r["status"] in NO_RESULT for r in rows) else EXIT_OK


if __name__ == "__main__":
    from engine.cli import run_cli

    raise SystemExit(run_cli(main))
