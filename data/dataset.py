"""The torch Dataset: decoded, resized samples with wrinkle and skin masks, plus split assembly."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.image_io import ImageReadError, read_binary_mask, read_rgb, resize_mask, resize_rgb
from data.sources import DataError, Sample, source_samples
from data.splits import SPLITS, split_ids
from data.transforms import build_train_transform, dilate_mask

if TYPE_CHECKING:
    import albumentations as A

    from config import Config

log = logging.getLogger(__name__)


def read_skin_from_labels(path: Path, skin_classes: tuple[int, ...], height: int, width: int) -> np.ndarray:
    """Skin mask from a face-parsing label map (.npy of class ids), scaled to the image's size."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable label map ({err})") from err
    if labels.ndim != 2:
        raise ImageReadError(f"{path}: label map must be 2-D, got shape {labels.shape}")
    if labels.shape[0] * width != labels.shape[1] * height:
        raise ImageReadError(f"{path}: label map {labels.shape[1]}x{labels.shape[0]} has another aspect ratio than the {width}x{height} image")
    return resize_mask(np.isin(labels, skin_classes), height, width)


def load_sample(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one sample at `size` x `size`: RGB uint8 image, boolean wrinkle mask and skin mask."""
    image = read_rgb(sample.image)
    height, width = image.shape[:2]
    if sample.mask is not None:
        mask = read_binary_mask(sample.mask)
        if mask.shape != (height, width):
            raise ImageReadError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {width}x{height}")
    else:
        mask = np.zeros((height, width), bool)
    if sample.face_mask is not None and sample.face_mask.suffix == ".npy":
        skin = read_skin_from_labels(sample.face_mask, sample.skin_classes, height, width)
    elif sample.face_mask is not None:
        skin = read_binary_mask(sample.face_mask)
        if skin.shape != (height, width):
            raise ImageReadError(f"{sample.face_mask}: face mask is {skin.shape[1]}x{skin.shape[0]}, image is {width}x{height}")
    else:
        skin = np.ones((height, width), bool)
    return resize_rgb(image, size, size), resize_mask(mask, size, size), resize_mask(skin, size, size)


class WrinkleDataset(Dataset):
    """Samples decoded once into memory at the training resolution, augmented on the fly.

    Each item is a dict: `image` (3 x H x W uint8), `mask` and `face_mask` (1 x H x W uint8, 0/1),
    `id`. Unreadable files are reported by name and left out at construction, so one bad file never
    stops an epoch.
    """

    def __init__(
        self,
        samples: list[Sample],
        image_size: int,
        transform: "A.Compose | None" = None,
        zero_non_skin: bool = True,
        mask_dilation: int = 0,
        workers: int = 4,
    ):
        self.image_size = image_size
        self.transform = transform
        self.zero_non_skin = zero_non_skin
        self.mask_dilation = mask_dilation

        def decode(sample: Sample):
            try:
                return load_sample(sample, image_size)
            except (ImageReadError, OSError) as err:
                log.warning("skipped %s: %s", sample.id, err)
                return None

        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:  # OpenCV decodes without the GIL
            decoded = list(pool.map(decode, samples))
        self.samples = [s for s, d in zip(samples, decoded) if d is not None]
        self.arrays = [d for d in decoded if d is not None]
        self.skipped = [s.id for s, d in zip(samples, decoded) if d is None]
        if not self.samples and samples:
            raise DataError(f"none of the {len(samples)} samples could be read (first: {samples[0].image})")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        image, mask, skin = self.arrays[index]
        if self.zero_non_skin:
            image = image * skin[..., None]
        if self.transform is not None:
            out = self.transform(image=image, masks=[mask.astype(np.uint8), skin.astype(np.uint8)])
            image, (mask, skin) = out["image"], out["masks"]
        mask = dilate_mask(mask, self.mask_dilation)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None],
            "face_mask": torch.from_numpy(np.ascontiguousarray(skin, dtype=np.uint8))[None],
            "id": self.samples[index].id,
        }


def split_samples(cfg: "Config") -> dict[str, list[Sample]]:
    """All configured sources' samples, divided into train / val / test by id."""
    samples: list[Sample] = []
    for src in cfg.data.sources:
        samples += source_samples(src, cfg.data.image_size)
    ids = [s.id for s in samples]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if duplicates:
        raise DataError(f"the same id appears in more than one sample: {', '.join(duplicates[:10])}")
    s = cfg.data.split
    assignment = split_ids(ids, s.val_fraction, s.test_fraction, s.seed)
    by_id = {sample.id: sample for sample in samples}
    return {split: [by_id[i] for i in assignment[split]] for split in SPLITS}


def build_dataset(cfg: "Config", split: str, samples: list[Sample] | None = None) -> WrinkleDataset:
    """The dataset of one split: augmented and with dilated masks for "train" only."""
    if split not in SPLITS:
        raise KeyError(f"split {split!r}; valid: {', '.join(SPLITS)}")
    if samples is None:
        samples = split_samples(cfg)[split]
    if not samples:
        raise DataError(f"the {split} split is empty: check data.sources and data.split")
    training = split == "train"
    return WrinkleDataset(
        samples,
        cfg.data.image_size,
        transform=build_train_transform(cfg.data.augment, seed=cfg.experiment.seed) if training else None,
        zero_non_skin=cfg.data.zero_non_skin,
        mask_dilation=cfg.data.train_mask_dilation if training else 0,
    )


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own numpy and augmentation stream (forked workers share one)."""
    seed = torch.initial_seed() % 2**32  # differs per worker and per epoch
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None:
        transform.set_random_seed(seed)


def make_loader(dataset: WrinkleDataset, batch_size: int, shuffle: bool, num_workers: int, seed: int, pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader with seeded shuffling and per-worker augmentation seeds."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
