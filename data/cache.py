"""On-disk cache of decoded samples at the training resolution.

Each sample becomes one uncompressed .npy ((C + 2)H x W uint8: the H x W x C image's bytes (RGB, or RGB +
texture map), then the wrinkle mask, then the skin mask, so reading it back needs no copy), named by a
hash of everything that determines it: the source files' paths, sizes and modification times, the
mask rules, the resolution and the texture recipe. A changed file or size gives a new name, so stale entries are never
read; they can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from data.decode import decode_sample
from data.image_io import ImageReadError
from data.sources import Sample
from data.texture import TEXTURE_RECIPE
from engine.errors import OutputError
from engine.fileio import atomic_write

CACHE_VERSION = 2


def _stat(path: Path | None) -> list | None:
    if path is None:
        return None
    info = path.stat()
    return [str(path.resolve()), info.st_size, info.st_mtime_ns]


def cache_key(sample: Sample, size: int, texture: bool = False, target: str = "mask") -> str:
    """A name that changes whenever the sample's files, mask rules, the resolution or the channels change."""
    description = {
        "version": CACHE_VERSION,
        "size": size,
        "image": _stat(sample.image),
        "mask": _stat(sample.mask),
        "face_mask": _stat(sample.face_mask),
        "skin_classes": list(sample.skin_classes),
        "mask_threshold": sample.mask_threshold,
        "mask_crop": list(sample.mask_crop) if sample.mask_crop else None,
    }
    if texture:  # RGB-only entries keep their names (and stay valid)
        description["texture"] = TEXTURE_RECIPE
    if target != "mask":  # the mask plane holds a texture map (train.task=texture)
        description["target"] = f"{target}:{TEXTURE_RECIPE}"
        description["mask_is_texture"] = sample.mask_is_texture
    return hashlib.sha1(json.dumps(description, sort_keys=True).encode()).hexdigest()


def pack(image: np.ndarray, mask: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """One (C + 2)H x W uint8 array: the H x W x C image's bytes as CH rows, the wrinkle mask, the skin mask (0/1)."""
    height, width = mask.shape
    channels = image.shape[2]
    return np.concatenate([np.ascontiguousarray(image).reshape(channels * height, width), mask.astype(np.uint8), skin.astype(np.uint8)])


def unpack(packed: np.ndarray, channels: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (H x W x channels) and uint8 0/1 wrinkle and skin masks: contiguous views, no copy."""
    height, width = packed.shape[0] // (channels + 2), packed.shape[1]
    image_rows = channels * height
    return packed[:image_rows].reshape(height, width, channels), packed[image_rows : image_rows + height], packed[image_rows + height :]


def cached_path(cache_dir: Path, sample: Sample, size: int, texture: bool = False, target: str = "mask") -> Path:
    key = cache_key(sample, size, texture, target)
    return cache_dir / key[:2] / f"{key}.npy"


class CacheWriteError(OutputError):
    """The cache folder cannot take a file (disk full, read-only, ...): the sample itself is fine."""


def ensure_cached(cache_dir: Path, sample: Sample, size: int, texture: bool = False, target: str = "mask") -> Path:
    """The cache file of `sample`, decoding and writing it (atomically) when it is not there yet.

    Raises ImageReadError when the sample's own files cannot be read, CacheWriteError when the cache
    cannot be written (nothing half-written is left behind)."""
    try:
        path = cached_path(cache_dir, sample, size, texture, target)
    except OSError as err:  # stat() of a source file
        raise ImageReadError(f"{err.filename}: cannot read ({err.strerror})") from err
    if path.is_file():
        return path
    packed = pack(*decode_sample(sample, size, texture, target))
    try:
        with atomic_write(path) as handle:
            np.save(handle, packed, allow_pickle=False)
    except OutputError as err:
        raise CacheWriteError(str(err)) from err
    return path


def read_cached(path: Path, channels: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return unpack(np.load(path, allow_pickle=False), channels)


def mask_is_marked(path: Path, channels: int = 3) -> bool:
    """Whether the cached sample's wrinkle mask marks any pixel (reads only the mask's rows)."""
    return bool(unpack(np.load(path, mmap_mode="r", allow_pickle=False), channels)[1].any())
