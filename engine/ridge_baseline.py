"""A classical baseline scored under the same protocol as the network: a multi-scale ridge filter.

Wrinkles are thin dark valleys, where the grayscale image's Hessian has one large positive eigenvalue
(across the valley) and one near zero (along it). The response, scale-normalized and taken as the
maximum over a few scales (Sato et al. 1998 style), is divided by its 99.5th percentile on the image's
skin and clipped to [0, 1], so it can be thresholded and scored exactly like a probability map. Its
threshold is chosen on the validation split, never on test.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

BASE_SIGMAS = (1.0, 1.5, 2.5)  # pixels at 512 px; scaled with the image size
NORMALIZING_PERCENTILE = 99.5


def ridge_response(gray: np.ndarray, sigmas: tuple[float, ...]) -> np.ndarray:
    """Scale-normalized dark-ridge strength of a float32 grayscale image (0..1)."""
    best = np.zeros_like(gray)
    for sigma in sigmas:
        smooth = cv2.GaussianBlur(gray, (0, 0), sigma)
        dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3)
        dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3)
        dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3)
        half_trace = (dxx + dyy) / 2
        spread = np.sqrt(((dxx - dyy) / 2) ** 2 + dxy**2)
        across, along = half_trace + spread, half_trace - spread  # across >= along
        line = np.maximum(across - np.maximum(along, 0), 0)  # dark blobs (both positive) are damped
        np.maximum(best, sigma**2 * line, out=best)
    return best


class RidgeBaseline:
    """Callable like a model's predictor: uint8 N x 3 x H x W images (+ skin masks) -> scores N x H x W."""

    name = "ridge"

    def __init__(self, image_size: int):
        scale = image_size / 512
        self.sigmas = tuple(max(s * scale, 0.7) for s in BASE_SIGMAS)

    def describe(self) -> str:
        return f"multi-scale Hessian ridge filter (sigmas {', '.join(f'{s:.2f}' for s in self.sigmas)} px), per-image {NORMALIZING_PERCENTILE}th-percentile normalization"

    def __call__(self, images: torch.Tensor, skin: torch.Tensor | None = None) -> torch.Tensor:
        scores = []
        for i, image in enumerate(images):
            rgb = image.permute(1, 2, 0).cpu().numpy()
            gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
            response = ridge_response(gray, self.sigmas)
            region = skin[i, 0].cpu().numpy().astype(bool) if skin is not None else np.ones_like(gray, bool)
            if skin is not None:
                # the skin edge is a strong artificial ridge when non-skin pixels are black
                region = cv2.erode(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            scale = np.percentile(response[region], NORMALIZING_PERCENTILE) if region.any() else 1.0
            score = np.clip(response / max(scale, 1e-8), 0, 1) * region
            scores.append(torch.from_numpy(score.astype(np.float32)))
        return torch.stack(scores)
