"""The torch Dataset: decoded, resized samples with wrinkle and skin masks, plus split assembly."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data.cache import CacheWriteError, ensure_cached, mask_is_marked, pack, read_cached, unpack
from data.decode import decode_sample
from data.image_io import ImageReadError
from data.sources import DataError, Sample, configured_sources
from data.splits import SPLITS, SplitReport, assign_splits
from data.transforms import TrainAugmentation, build_train_transform, dilate_mask, wrinkle_patch
from engine.errors import UnknownNameError

if TYPE_CHECKING:
    from config import Config

log = logging.getLogger(__name__)
CACHE_MODES = ("disk", "memory", "none")


class WrinkleDataset(Dataset):
    """Samples at the training resolution, augmented on the fly for training.

    Samples are decoded once at construction (in threads: OpenCV decodes without the GIL) into the
    disk cache ("disk"), into RAM ("memory"), or only checked ("none": decoded again on every read).
    Unreadable files are reported by name and left out there, so one bad file never stops an epoch.
    Each item is a dict: `image` (C x H x W uint8: RGB, and with `texture` the texture map as a 4th
    channel), `mask` and `face_mask` (1 x H x W uint8, 0/1), `id`. The texture map is computed when a
    sample is decoded (so it is cached with it); geometric augmentation moves it with the RGB,
    photometric augmentation leaves it alone (`TrainAugmentation`).
    """

    def __init__(
        self,
        samples: list[Sample],
        image_size: int,
        transform: TrainAugmentation | None = None,
        zero_non_skin: bool = True,
        mask_dilation: int = 0,
        cache: str = "memory",
        cache_dir: str | Path = "data_cache/decoded",
        patch_size: int = 0,
        patch_wrinkle_fraction: float = 0.0,
        workers: int = 4,
        texture: bool = False,
        target: str = "mask",
    ):
        if cache not in CACHE_MODES:
            raise UnknownNameError(f"data.cache {cache!r}; valid: {', '.join(CACHE_MODES)}")
        self.image_size = image_size
        self.transform = transform
        self.zero_non_skin = zero_non_skin
        self.mask_dilation = mask_dilation
        self.cache = cache
        self.patch_size = patch_size
        self.patch_wrinkle_fraction = patch_wrinkle_fraction
        self.texture = texture
        self.target = target  # "mask": wrinkle masks; "texture": the `mask` entry is the face's texture map (0..255)
        self.channels = 4 if texture else 3
        self.rng = np.random.default_rng(0)  # patch positions; reseeded per epoch and per worker
        cache_dir = Path(cache_dir)
        cache_failures: list[str] = []

        def prepare(sample: Sample):
            """The entry of `sample` (cache path, packed array, or the sample itself), or None if unreadable."""
            try:
                if cache == "disk":
                    try:
                        return ensure_cached(cache_dir, sample, image_size, texture, target)
                    except CacheWriteError as err:  # not the sample's fault: decode it on every read instead
                        cache_failures.append(str(err))
                        return sample
                packed = pack(*decode_sample(sample, image_size, texture, target))  # decoding also checks the files
                return packed if cache == "memory" else sample
            except ImageReadError as err:
                log.warning("skipped %s: %s", sample.id, err)
                return None

        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            prepared = list(pool.map(prepare, samples))
        if cache_failures:
            log.warning(
                "data.cache_dir: %d of %d samples could not be cached (%s); they are decoded on every read instead (slower)",
                len(cache_failures),
                len(samples),
                cache_failures[0],
            )
        self.samples = [s for s, p in zip(samples, prepared) if p is not None]
        self.entries = [p for p in prepared if p is not None]
        self.skipped = [s.id for s, p in zip(samples, prepared) if p is None]
        self.uncached = len(cache_failures)
        if not self.samples and samples:
            raise DataError(f"none of the {len(samples)} samples could be read (first: {samples[0].image})")

    def __len__(self) -> int:
        return len(self.samples)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (H x W x C), wrinkle mask and skin mask (uint8, 0/1) of sample `index` at the training resolution."""
        entry = self.entries[index]
        if isinstance(entry, Path):
            return read_cached(entry, self.channels)
        if isinstance(entry, np.ndarray):
            return unpack(entry, self.channels)
        return unpack(pack(*decode_sample(entry, self.image_size, self.texture, self.target)), self.channels)

    def has_wrinkles(self) -> bool:
        """Whether any sample's wrinkle mask marks a pixel (stops at the first that does)."""
        for index, entry in enumerate(self.entries):
            if isinstance(entry, Path):
                if mask_is_marked(entry, self.channels):
                    return True
            elif self.arrays(index)[1].any():
                return True
        return False

    def reseed(self, seed: int) -> None:
        """New random streams for augmentation and patch positions."""
        self.rng = np.random.default_rng(seed)
        if self.transform is not None:
            self.transform.set_random_seed(seed)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """`key` is an index, or (item_seed, index) from EpochSampler: then the item's augmentation is
        a function of that seed alone, whichever worker or process draws it."""
        if isinstance(key, tuple):
            item_seed, index = key
            self.reseed(item_seed)
        else:
            index = key
        image, mask, skin = self.arrays(index)
        if self.zero_non_skin:
            # ~20x faster than image * skin[..., None]; the texture channel is already zero off skin
            image = cv2.bitwise_and(image, image, mask=skin)
        if self.patch_size:
            image, mask, skin = wrinkle_patch(image, mask, skin, self.patch_size, self.patch_wrinkle_fraction, self.rng)
        if self.transform is not None and self.target == "texture":
            # A texture target is warped as the image is (bilinear), not as a wrinkle mask (nearest).
            image, (skin,) = self.transform(np.dstack([image, mask]), [skin])
            image, mask = image[..., :-1], image[..., -1]
        elif self.transform is not None:
            image, (mask, skin) = self.transform(image, [mask, skin])
        if self.target == "mask":
            mask = dilate_mask(mask, self.mask_dilation)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),  # collation copies once
            "mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
            "face_mask": torch.from_numpy(np.ascontiguousarray(skin))[None],
            "id": self.samples[index].id,
        }


def split_samples_with_report(cfg: Config) -> tuple[dict[str, list[Sample]], SplitReport]:
    """All configured sources' samples, merged by id and divided into train / val / test."""
    return assign_splits(configured_sources(cfg.data), cfg.data.split)


def split_samples(cfg: Config) -> dict[str, list[Sample]]:
    """The samples of each split (see `split_samples_with_report`)."""
    return split_samples_with_report(cfg)[0]


def build_dataset(cfg: Config, split: str, samples: list[Sample] | None = None, *, training: bool) -> WrinkleDataset:
    """The dataset of one split; `training` (what the trainer's train split gets, and nothing else) adds
    augmentation, patches and dilated masks. Evaluation passes False for every split, train included."""
    if split not in SPLITS:
        raise UnknownNameError(f"split {split!r}; valid: {', '.join(SPLITS)}")
    if samples is None:
        samples = split_samples(cfg)[split]
    if not samples:
        raise DataError(f"the {split} split is empty: check data.sources and data.split")
    d = cfg.data
    return WrinkleDataset(
        samples,
        d.image_size,
        transform=build_train_transform(d.augment, seed=cfg.experiment.seed) if training else None,
        zero_non_skin=d.zero_non_skin,
        mask_dilation=d.train_mask_dilation if training else 0,
        cache=d.cache,
        cache_dir=d.cache_dir,
        patch_size=d.patch_size if training else 0,
        patch_wrinkle_fraction=d.patch_wrinkle_fraction,
        texture=cfg.model.input == "rgb_texture",
        target="texture" if cfg.train.task == "texture" else "mask",
    )


def require_wrinkles(dataset: WrinkleDataset, split: str) -> None:
    """Refuse a split whose wrinkle masks are all empty: every score on it would be a perfect 1.0."""
    if not dataset.has_wrinkles():
        raise DataError(
            f"every wrinkle mask of the {split} split ({len(dataset)} images, e.g. {dataset.samples[0].mask}) is empty: a wrong mask "
            "folder, or masks stored in a way that reads as empty; run python -m data.check --config FILE"
        )


class EpochSampler(Sampler):
    """Yields (item_seed, index) pairs: the epoch's order and each item's augmentation seed depend only
    on (seed, epoch, index).

    So augmentations differ between items and epochs but not with the number of workers, a resumed
    run replays exactly what an uninterrupted one did, and under DDP each rank takes its own shard
    (training shards are cut to equal length, as every rank must run the same number of steps).
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, equal_shards: bool = True):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.equal_shards = rank, world_size, equal_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.world_size > 1:
            if self.equal_shards:
                order = order[: self.size - self.size % self.world_size]
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self):
        base = (self.seed * 1_000_003 + self.epoch * 7_919) % 2**31
        for index in self._order():
            yield (base + index * 104_729) % 2**32, index

    def __len__(self) -> int:
        return len(self._order())


def seed_worker(worker_id: int) -> None:
    """Seed NumPy's global stream per worker (forked workers would otherwise share one)."""
    np.random.seed(torch.initial_seed() % 2**32)


def make_loader(
    dataset: WrinkleDataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over an EpochSampler (call `loader.sampler.set_epoch(e)` each epoch)."""
    sampler = EpochSampler(len(dataset), shuffle, seed, rank, world_size, equal_shards=shuffle)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,  # safe: items carry their own seeds
    )
