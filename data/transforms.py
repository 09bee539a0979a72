"""Training augmentation built from config (albumentations, strict mode); evaluation gets none."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import albumentations as A

    from config import AugmentConfig


class TrainAugmentation:
    """Geometric transforms, then photometric ones: `augment(image, masks) -> (image, masks)`.

    Geometric transforms move every channel of the image (RGB, and a texture map as a 4th channel:
    bilinear, like the RGB) and the masks (nearest-neighbour, zero fill outside) together; photometric
    ones touch the RGB channels only, since a texture map describes the face, not its lighting."""

    def __init__(self, geometric: A.Compose, photometric: A.Compose):
        self.geometric, self.photometric = geometric, photometric
        self.strict = geometric.strict and photometric.strict

    def __call__(self, image: np.ndarray, masks: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        moved = self.geometric(image=image, masks=masks)
        image, masks = moved["image"], moved["masks"]
        rgb = self.photometric(image=np.ascontiguousarray(image[..., :3]))["image"]
        return (rgb if image.shape[2] == 3 else np.dstack([rgb, image[..., 3:]])), masks

    def set_random_seed(self, seed: int) -> None:
        """Reseed both streams (distinct, so the two parts do not draw the same numbers)."""
        self.geometric.set_random_seed(seed)
        self.photometric.set_random_seed(seed + 1)


def build_train_transform(cfg: AugmentConfig, seed: int | None = None) -> TrainAugmentation | None:
    """The seed's augmentation list; None when augmentation is off."""
    if not cfg.enabled:
        return None
    import albumentations as A

    geometric = [
        A.HorizontalFlip(p=cfg.hflip_p),
        A.Affine(
            scale=(1 - cfg.scale_limit, 1 + cfg.scale_limit),
            translate_percent=(-cfg.shift_limit, cfg.shift_limit),
            rotate=(-cfg.rotate_limit, cfg.rotate_limit),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=cfg.affine_p,
        ),
    ]
    if cfg.elastic_p > 0:
        geometric.append(A.ElasticTransform(alpha=30, sigma=6, border_mode=cv2.BORDER_CONSTANT, p=cfg.elastic_p))
    photometric = [
        A.CLAHE(clip_limit=2.0, p=cfg.clahe_p),
        A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.0), p=cfg.blur_p),
        A.GaussNoise(std_range=tuple(cfg.noise_std_range), p=cfg.noise_p),
    ]
    return TrainAugmentation(
        A.Compose(geometric, strict=True, seed=seed), A.Compose(photometric, strict=True, seed=None if seed is None else seed + 1)
    )


def dilate_mask(mask: np.ndarray, kernel_size: int) -> np.ndarray:
    """Binary dilation by a kernel_size x kernel_size square (training targets only); <= 1 is a no-op."""
    if kernel_size <= 1:
        return mask
    return cv2.dilate(mask.astype(np.uint8), np.ones((kernel_size, kernel_size), np.uint8)).astype(mask.dtype)


def wrinkle_patch(
    image: np.ndarray, mask: np.ndarray, skin: np.ndarray, size: int, wrinkle_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A size x size crop of image and masks; with probability `wrinkle_fraction` it is centred (with
    jitter) on a random wrinkle pixel, otherwise placed uniformly. Wrinkles cover ~1 % of a face, so
    uniform crops would mostly teach the model that there is nothing to find."""
    height, width = mask.shape
    if size >= height and size >= width:
        return image, mask, skin
    if wrinkle_fraction > 0 and rng.random() < wrinkle_fraction and mask.any():
        ys, xs = np.nonzero(mask)
        k = rng.integers(len(ys))
        jitter = rng.integers(-size // 4, size // 4 + 1, size=2)
        top, left = ys[k] - size // 2 + jitter[0], xs[k] - size // 2 + jitter[1]
    else:
        top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
    top, left = int(np.clip(top, 0, height - size)), int(np.clip(left, 0, width - size))
    window = (slice(top, top + size), slice(left, left + size))
    return image[window], mask[window], skin[window]
