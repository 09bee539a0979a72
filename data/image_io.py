"""Reading and writing images and masks: RGB out of any common format, binary masks, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image or mask file that cannot be decoded; the message names the file."""


def _decode(path: Path, flags: int) -> np.ndarray:
    """Decode a file with OpenCV, raising ImageReadError (naming the file) instead of returning None."""
    try:
        buffer = np.fromfile(path, dtype=np.uint8)  # np.fromfile copes with non-ASCII paths, unlike imread
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror})") from err
    array = cv2.imdecode(buffer, flags) if buffer.size else None
    if array is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    return array


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB, H x W x 3, turned upright per its EXIF orientation (phone photos
    are often stored sideways): alpha is dropped, grayscale repeated, 16-bit scaled."""
    path = Path(path)
    array = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # IMREAD_COLOR applies EXIF orientation
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {array.dtype}")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def read_binary_mask(path: str | Path, threshold: int | None = None) -> np.ndarray:
    """Read a mask as bool, H x W.

    Masks come as grayscale 0/1 or 0/255 (both occur in published data sets), 16-bit, palette images
    (read through their palette, as "L" would) and colour images such as red on black: a pixel's value
    is its brightest channel, so a coloured mark counts whatever its hue (luminance would put pure red
    at 76 and read it as background). With `threshold` None, a mask whose maximum is 1 is read as `> 0`
    and any other as `> 127`, which also absorbs stray values such as a background of 2; pass a
    threshold to force one rule.
    """
    path = Path(path)
    array = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # palette expanded, gray repeated, EXIF applied as for images
    if array.dtype == np.uint16:
        array = array // 257
    elif array.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {array.dtype} for a mask")
    value = array.max(axis=2) if array.ndim == 3 else array
    if threshold is None:
        threshold = 0 if value.max() <= 1 else 127
    return value > threshold


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write an RGB or single-channel uint8 array as PNG, atomically (temporary file, then rename)."""
    path = Path(path)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(encoded.tobytes())
    os.replace(tmp, path)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder` (by suffix), sorted by name; hidden files are ignored."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an RGB image: area averaging when shrinking, bilinear when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] > height or image.shape[1] > width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, height: int, width: int, thin: bool = True) -> np.ndarray:
    """Resize a boolean mask.

    Shrinking a `thin`-structure mask (wrinkles) marks a pixel when any part of its footprint was set,
    so a 1-px line at 1024 stays a line at 512; a region mask (`thin=False`, skin) takes the majority.
    Enlarging uses nearest neighbour.
    """
    if mask.shape[:2] == (height, width):
        return mask.astype(bool)
    shrinking = mask.shape[0] > height or mask.shape[1] > width
    if shrinking:
        coverage = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        return coverage > 1e-6 if thin else coverage >= 0.5
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
