"""FFHQ alignment from eye and mouth landmarks, and its inverse.

FFHQ's recipe (NVlabs/ffhq-dataset, `recreate_aligned_images`) builds an oriented square from the
eye centres and mouth corners and resamples it to the output size. Here the square becomes one 2x3
affine matrix, so the same matrix brings a photo into the training frame and, inverted, brings any
output (mask, probabilities) back onto the photo.
"""

from __future__ import annotations

import cv2
import numpy as np

from face.regions import MOUTH_CORNERS, eye_centres


def ffhq_quad(landmarks: np.ndarray, crop_scale: float = 1.0) -> np.ndarray:
    """The FFHQ crop as four corners (top-left, bottom-left, bottom-right, top-right) in photo pixels;
    `crop_scale` enlarges it about its centre (1.0: the published recipe)."""
    eye_left, eye_right = eye_centres(landmarks)  # FFHQ names eyes by image side: "left" is the subject's right
    mouth_left, mouth_right = landmarks[MOUTH_CORNERS[0]], landmarks[MOUTH_CORNERS[1]]
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]  # the face's horizontal, from both cues
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) * crop_scale
    y = np.flipud(x) * [-1, 1]
    centre = eye_avg + eye_to_mouth * 0.1
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y]).astype(np.float64)


def ffhq_affine(landmarks: np.ndarray, size: int, crop_scale: float = 1.0) -> np.ndarray:
    """2x3 matrix taking photo pixels to the size x size FFHQ-aligned frame."""
    quad = ffhq_quad(landmarks, crop_scale)
    # Pixel-index coordinates (a pixel's centre is its index): the quad's corners are the frame's
    # outer corners, which sit half a pixel outside the first and last pixel centres.
    target = np.array([[0, 0], [0, size], [size, size]], np.float32) - 0.5
    return cv2.getAffineTransform(quad[:3].astype(np.float32), target).astype(np.float64)


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(matrix)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_to_face(image: np.ndarray, matrix: np.ndarray, size: int, border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """Resample a photo into the aligned frame; areas beyond the photo are mirrored, as FFHQ pads
    by reflection (masks should pass BORDER_CONSTANT)."""
    shrink = min(int(1.0 / np.sqrt(abs(np.linalg.det(matrix[:, :2]))) / 1.5), image.shape[0], image.shape[1])
    if shrink > 1:
        # Shrinking a lot: area-average by an integer factor first, so bilinear sampling does not
        # alias fine lines away. Small pixel u covers big pixels [u*f, u*f + f): centre u*f + (f-1)/2.
        height, width = (image.shape[0] // shrink) * shrink, (image.shape[1] // shrink) * shrink
        image = cv2.resize(image[:height, :width], (width // shrink, height // shrink), interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.array([[shrink, 0, (shrink - 1) / 2], [0, shrink, (shrink - 1) / 2], [0, 0, 1]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def warp_to_photo(array: np.ndarray, matrix: np.ndarray, photo_shape: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Map an aligned-frame array back onto the photo (height, width); pixels outside the crop get 0."""
    height, width = photo_shape[:2]
    return cv2.warpAffine(
        array, matrix, (width, height), flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def square_affine(height: int, width: int, size: int) -> np.ndarray:
    """2x3 matrix for the unaligned path: the photo zero-padded right and bottom to a square, then
    scaled to size x size (nothing cropped or distorted)."""
    scale = size / max(height, width)
    # Pixel-index coordinates: x' = (x + 0.5) * scale - 0.5.
    return np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5]], np.float64)


def photo_outline(height: int, width: int, matrix: np.ndarray, size: int) -> np.ndarray:
    """Boolean size x size mask of the aligned-frame pixels that come from inside the photo."""
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64) - 0.5
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(canvas, np.round(transform_points(corners, matrix) * 16).astype(np.int32), 1, shift=4)
    return canvas.astype(bool)
