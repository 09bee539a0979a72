"""Decoding one sample into arrays at the training resolution, applying its source's mask rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.image_io import ImageReadError, read_binary_mask, read_gray, read_rgb, resize_mask, resize_rgb
from data.sources import FFHQ_FRAME, Sample
from data.texture import texture_map, with_texture


def _fit_to_image(mask: np.ndarray, path: Path, what: str, height: int, width: int, thin: bool = True) -> np.ndarray:
    """A mask at the image's size: same size as is, same aspect ratio resized, else an error."""
    if mask.shape == (height, width):
        return mask
    if mask.shape[0] * width != mask.shape[1] * height:
        raise ImageReadError(f"{path}: {what} is {mask.shape[1]}x{mask.shape[0]}, another aspect ratio than the {width}x{height} image")
    return resize_mask(mask, height, width, thin)


def read_skin_from_labels(path: Path, skin_classes: tuple[int, ...]) -> np.ndarray:
    """Skin mask from a face-parsing label map (.npy of class ids)."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable label map ({err})") from err
    if labels.ndim != 2:
        raise ImageReadError(f"{path}: label map must be 2-D, got shape {labels.shape}")
    return np.isin(labels, skin_classes)


def read_cropped_mask(path: Path, crop: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A crop mask placed into the FFHQ frame, and the crop rectangle (the annotated region)."""
    min_h, max_h, min_w, max_w = crop
    crop_mask = read_binary_mask(path, threshold=0)  # 1-bit and palette BMPs: any non-black is wrinkle
    if crop_mask.shape != (max_h - min_h, max_w - min_w):
        raise ImageReadError(f"{path}: crop is {crop_mask.shape[1]}x{crop_mask.shape[0]}, its limits say {max_w - min_w}x{max_h - min_h}")
    if min_h < 0 or min_w < 0 or max_h > FFHQ_FRAME or max_w > FFHQ_FRAME:
        raise ImageReadError(f"{path}: crop limits {crop} fall outside the {FFHQ_FRAME}px FFHQ frame")
    mask = np.zeros((FFHQ_FRAME, FFHQ_FRAME), bool)
    region = np.zeros((FFHQ_FRAME, FFHQ_FRAME), bool)
    mask[min_h:max_h, min_w:max_w] = crop_mask
    region[min_h:max_h, min_w:max_w] = True
    return mask, region


def pad_to_square(array: np.ndarray) -> np.ndarray:
    """Zero-pad an image or mask on the right and bottom to a square (nothing cropped or distorted).

    The one convention for non-square inputs: training samples and `predict.py --face-masks` crops
    (face.align.square_affine maps the same geometry back onto the photo)."""
    height, width = array.shape[:2]
    side = max(height, width)
    if height == width:
        return array
    padded = np.zeros((side, side) + array.shape[2:], array.dtype)
    padded[:height, :width] = array
    return padded


def load_sample(sample: Sample, size: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one sample: RGB uint8 image, boolean wrinkle mask and skin mask, at size x size
    (or the image's own size with `size` None). A non-square image is padded to a square first (the
    padding is not skin), never stretched. Errors name the file."""
    image = read_rgb(sample.image)
    height, width = image.shape[:2]
    skin = np.ones((height, width), bool)
    if sample.mask is None:
        mask = np.zeros((height, width), bool)
    elif sample.mask_crop is not None:
        mask, region = read_cropped_mask(sample.mask, sample.mask_crop)
        mask = _fit_to_image(mask, sample.mask, "the FFHQ frame", height, width)
        skin &= _fit_to_image(region, sample.mask, "the FFHQ frame", height, width, thin=False)
    else:
        mask = _fit_to_image(read_binary_mask(sample.mask, sample.mask_threshold), sample.mask, "mask", height, width)
    if sample.face_mask is not None:
        if sample.face_mask.suffix == ".npy":
            face = read_skin_from_labels(sample.face_mask, sample.skin_classes)
        else:
            face = read_binary_mask(sample.face_mask)
        skin &= _fit_to_image(face, sample.face_mask, "face mask", height, width, thin=False)
    if size is None:
        return image, mask, skin
    image, mask, skin = pad_to_square(image), pad_to_square(mask), pad_to_square(skin)
    return resize_rgb(image, size, size), resize_mask(mask, size, size), resize_mask(skin, size, size, thin=False)


def texture_target(sample: Sample, image: np.ndarray, skin: np.ndarray, size: int) -> np.ndarray:
    """The uint8 texture map a texture-task model learns for `sample` (image and skin at size x size): its
    mask file as stored when that is a texture map (FFHQ-Wrinkle's weak masks, resized with the image),
    else computed from the image (data/texture.py); zero outside skin either way."""
    if sample.mask_is_texture and sample.mask is not None:
        # Padded and resized as the image was (the published maps have their image's 1024 x 1024 frame).
        target = resize_rgb(pad_to_square(read_gray(sample.mask)), size, size)
    else:
        target = texture_map(image, skin.astype(bool))
    return np.where(skin.astype(bool), target, 0).astype(np.uint8)


def decode_sample(sample: Sample, size: int, texture: bool = False, target: str = "mask") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`load_sample` at size x size, with the texture map as a 4th image channel when `texture`
    (computed at this resolution, from the whole image, zeroed outside skin: data/texture.py). With
    `target` "texture" the returned mask is the sample's uint8 texture map (`texture_target`), not its
    wrinkle mask."""
    image, mask, skin = load_sample(sample, size)
    if target == "texture":
        mask = texture_target(sample, image, skin, size)
    return (with_texture(image, skin) if texture else image), mask, skin
