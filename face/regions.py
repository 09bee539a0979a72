"""Skin and facial regions as polygons over the 468-point face mesh.

Index lists follow the mesh's published topology (MediaPipe's face-oval, eye, eyebrow and lip
contours). "Right" is the subject's right, which is on the left of the image. The region polygons
were drawn over the numbered mesh of a real FFHQ face and are mirrored point for point.
"""

from __future__ import annotations

import cv2
import numpy as np

FACE_OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_BROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)  # lower edge outward-in, then upper edge back
LEFT_BROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
MOUTH_CORNERS = (61, 291)  # right, left: dlib's points 48 and 54 in the FFHQ recipe

# Regions dermatologists grade separately. Each is a tuple of polygons.
REGIONS = {
    "forehead": ((21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 301, 300, 293, 334, 296, 336, 9, 107, 66, 105, 63, 70, 71),),
    "glabella": ((9, 336, 285, 417, 168, 193, 55, 107),),  # between the brows
    "periorbital": (  # around the eyes: lids, crow's feet, under-eye, up to the brows
        (46, 53, 52, 65, 55, 193, 245, 128, 121, 120, 119, 118, 117, 111, 143, 34, 139, 71),
        (276, 283, 282, 295, 285, 417, 465, 357, 350, 349, 348, 347, 346, 340, 372, 264, 368, 301),
    ),
    "cheeks": (  # cheeks and nasolabial folds, from under the eyes to the mouth corners and jaw
        (143, 111, 117, 118, 119, 120, 121, 128, 126, 209, 129, 98, 165, 92, 186, 57, 43, 202, 210, 138, 58, 132, 93, 234, 127, 34),
        (372, 340, 346, 347, 348, 349, 350, 357, 355, 429, 358, 327, 391, 322, 410, 287, 273, 422, 430, 367, 288, 361, 323, 454, 356, 264),
    ),
}


def fill_polygons(landmarks: np.ndarray, polygons: tuple[tuple[int, ...], ...], shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of `shape` (height, width) covering the landmark polygons."""
    canvas = np.zeros(shape, np.uint8)
    # Fixed-point coordinates (4 fractional bits) keep sub-pixel landmark positions.
    contours = [np.round(landmarks[list(p)] * 16).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, contours, 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def skin_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Face skin: the face oval minus eyes, eyebrows and lips."""
    face = fill_polygons(landmarks, (FACE_OVAL,), shape)
    return face & ~fill_polygons(landmarks, (RIGHT_EYE, LEFT_EYE, RIGHT_BROW, LEFT_BROW, LIPS), shape)


def region_masks(landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """One boolean mask per entry of REGIONS (not yet intersected with the skin)."""
    return {name: fill_polygons(landmarks, polygons, shape) for name, polygons in REGIONS.items()}


def visible_shares(landmarks: np.ndarray, shape: tuple[int, int], masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Per region, its pixels inside the photo (`masks`, as region_masks drew them) over its whole
    polygon area, which may reach beyond the frame: 1.0 for a region in full view."""
    shares = {}
    for name, polygons in REGIONS.items():
        area = sum(abs(cv2.contourArea(landmarks[list(p)].astype(np.float32))) for p in polygons)
        shares[name] = float(masks[name].sum() / area) if area > 0 else 0.0
    return shares


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the right and left eye contours (the mean of their points, like dlib's six)."""
    return landmarks[list(RIGHT_EYE)].mean(0), landmarks[list(LEFT_EYE)].mean(0)
