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

import math

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
