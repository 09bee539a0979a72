"""Data set layouts on disk, each turned into a list of samples (image, wrinkle mask, skin mask paths).

Layouts, exactly as published:
- synthetic: the built-in generator, written in the folder layout;
- folder: images/, masks/, optional face_masks/, matched by file stem;
- ffhq_wrinkle (Moon et al. 2024): manual_wrinkle_masks/{id}.png or weak_wrinkle_masks/{thousand}/{id}.png,
  face_parsed_labels/{id}.npy (BiSeNet classes), FFHQ images by id;
- kim (Kim et al. 2024): wrinkle_masks/{id}.png (wrinkle = value > 127: the release has backgrounds of 2
  and stray values), skin_masks/{id}.png, FFHQ images by id;
- vanijan: wrinkles/finalNNNNN.bmp crops placed into the 1024 FFHQ frame by wrinkles/crop_limits.npy;
  only the crop was annotated, so the crop rectangle is the region that counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.image_io import IMAGE_SUFFIXES, list_images
from data.synthetic import write_synthetic_dataset
from engine.errors import UnknownNameError, WrinkleError

if TYPE_CHECKING:
    from config import DataConfig, SourceConfig

log = logging.getLogger(__name__)

SOURCE_KINDS = ("synthetic", "folder", "ffhq_wrinkle", "kim", "vanijan", "weak")
FFHQ_FRAME = 1024  # the side of FFHQ's aligned images, in which vanijan's crop limits are given


class DataError(WrinkleError, ValueError):
    """A data set that cannot be used as configured; the message names the folder or file."""


@dataclass(frozen=True)
class Sample:
    """One training example on disk; `face_mask` is None when the source has no skin masks."""

    id: str
    image: Path
    mask: Path | None
    face_mask: Path | None  # a 0/255 (or 0/1) image, or a .npy face-parsing label map
    source: str
    skin_classes: tuple[int, ...] = ()  # for a label map: the classes that count as skin
    mask_threshold: int | None = None  # wrinkle = value > threshold; None: > 0 for 0/1 masks, > 127 otherwise
    mask_crop: tuple[int, int, int, int] | None = None  # (min_h, max_h, min_w, max_w) of a crop in the FFHQ frame
    mask_is_texture: bool = False  # the mask file is a texture map (FFHQ-Wrinkle's weak masks): a texture target as is


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in list_images(folder)} if folder.is_dir() else {}


def _report(what: str, ids: list[str]) -> None:
    if ids:
        log.warning("%s (%d): %s%s", what, len(ids), ", ".join(ids[:10]), " ..." if len(ids) > 10 else "")


def folder_samples(root: str | Path, source: str = "folder", require_masks: bool = True) -> list[Sample]:
    """Samples from `root/images/`, `root/masks/` and optional `root/face_masks/`, matched by file stem.

    Images without a mask (or, where face_masks/ exists, without a face mask) are reported by name and
    left out; masks without an image are reported too.
    """
    root = Path(root)
    if not (root / "images").is_dir():
        raise DataError(f"{root}: no images/ folder (expected images/, masks/ and optional face_masks/)")
    images, masks, face_masks = _by_stem(root / "images"), _by_stem(root / "masks"), _by_stem(root / "face_masks")
    if not images:
        raise DataError(f"{root / 'images'}: no image files")
    if require_masks:
        _report(f"{root}: images without a mask in masks/, left out", sorted(set(images) - set(masks)))
    _report(f"{root}: masks without an image", sorted(set(masks) - set(images)))
    if face_masks:
        _report(f"{root}: images without a face mask, left out", sorted(set(images) & set(masks) - set(face_masks)))
    samples = [
        Sample(stem, image, masks.get(stem), face_masks.get(stem), source)
        for stem, image in images.items()
        if (stem in masks or not require_masks) and (not face_masks or stem in face_masks)
    ]
    if not samples:
        raise DataError(f"{root}: no image has a matching mask in masks/")
    return samples


def index_ffhq_images(folder: str | Path) -> dict[str, Path]:
    """{id: path} of the images under an FFHQ folder: official nested (00000/00000.png) or flat."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: FFHQ image folder not found")
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    if not found:
        raise DataError(f"{folder}: no images")
    return found


def _index_pngs(folder: Path) -> dict[str, Path]:
    """{stem: path} of every PNG under `folder`, flat or nested by thousand; a stem found twice is an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.png")):
        if path.name.startswith("."):
            continue
        if path.stem in found:
            raise DataError(f"{folder}: id {path.stem} twice, {found[path.stem]} and {path}: keep one (a folder unpacked inside another?)")
        found[path.stem] = path
    return found


def _with_images(kind: str, masks: dict[str, Path], images: str | Path, mask_dir: Path) -> dict[str, Path]:
    """The FFHQ image of each mask id; masks without an image are reported and left out."""
    if not masks:
        raise DataError(f"{mask_dir}: no mask files")
    image_index = index_ffhq_images(images)
    _report(f"{kind}: masks in {mask_dir} without an FFHQ image in {images}, left out", sorted(set(masks) - set(image_index)))
    matched = {i: image_index[i] for i in masks if i in image_index}
    if not matched:
        raise DataError(f"{mask_dir}: no mask matches an image in {images}")
    return matched


def ffhq_wrinkle_samples(
    root: str | Path, images: str | Path, masks: str = "manual", skin_classes: tuple[int, ...] = (1, 10)
) -> list[Sample]:
    """FFHQ-Wrinkle: masks by FFHQ id, BiSeNet label maps for skin (ids without one: whole image)."""
    root = Path(root)
    mask_dir = root / ("manual_wrinkle_masks" if masks == "manual" else "weak_wrinkle_masks")
    mask_index = _index_pngs(mask_dir)
    matched = _with_images("ffhq_wrinkle", mask_index, images, mask_dir)
    labels = root / "face_parsed_labels"
    samples = []
    for sample_id, image in matched.items():
        label_map = labels / f"{sample_id}.npy"
        samples.append(
            Sample(
                sample_id,
                image,
                mask_index[sample_id],
                label_map if label_map.is_file() else None,
                "ffhq_wrinkle",
                tuple(skin_classes),
                mask_is_texture=masks == "weak",
            )
        )
    _report(
        f"ffhq_wrinkle: ids without face-parsing labels in {labels} (whole image counts as skin)",
        [s.id for s in samples if s.face_mask is None],
    )
    return samples


def kim_samples(root: str | Path, images: str | Path) -> list[Sample]:
    """Kim et al.: wrinkle_masks/{id}.png binarized with > 127, skin_masks/{id}.png, FFHQ images."""
    root = Path(root)
    mask_dir = root / "wrinkle_masks"
    mask_index = _index_pngs(mask_dir)
    matched = _with_images("kim", mask_index, images, mask_dir)
    skins = _by_stem(root / "skin_masks")
    _report(f"kim: ids without a skin mask in {root / 'skin_masks'} (whole image counts as skin)", sorted(set(matched) - set(skins)))
    return [Sample(i, image, mask_index[i], skins.get(i), "kim", mask_threshold=127) for i, image in matched.items()]


def vanijan_samples(root: str | Path, images: str | Path) -> list[Sample]:
    """vanijan: wrinkles/finalNNNNN.bmp crops with their limits in wrinkles/crop_limits.npy."""
    wrinkles = Path(root) / "wrinkles"
    limits_path = wrinkles / "crop_limits.npy"
    if not limits_path.is_file():
        raise DataError(f"{limits_path}: crop limits not found")
    limits = np.load(limits_path, allow_pickle=False)
    if limits.ndim != 2 or limits.shape[1] != 5:
        raise DataError(f"{limits_path}: expected rows [image_number, min_h, max_h, min_w, max_w], got shape {limits.shape}")
    crops = {f"{int(row[0]):05d}": tuple(int(v) for v in row[1:]) for row in limits}
    masks = {p.stem.removeprefix("final"): p for p in sorted(wrinkles.glob("final*.bmp"))}
    _report(f"vanijan: masks without crop limits in {limits_path}, left out", sorted(set(masks) - set(crops)))
    masks = {i: p for i, p in masks.items() if i in crops}
    matched = _with_images("vanijan", masks, images, wrinkles)
    return [Sample(i, image, masks[i], None, "vanijan", mask_crop=crops[i]) for i, image in matched.items()]


def weak_samples(root: str | Path) -> list[Sample]:
    """Unlabeled faces for texture pretraining: `root/images/` (or `root/faces/`, as face_parsing_extraction.py
    writes them) and optional `root/face_masks/` (skin); no wrinkle masks, the targets are texture maps."""
    root = Path(root)
    folder = next((root / name for name in ("images", "faces") if (root / name).is_dir()), None)
    if folder is None:
        raise DataError(f"{root}: no images/ or faces/ folder of unlabeled faces (face_masks/ beside it is optional)")
    images, face_masks = _by_stem(folder), _by_stem(root / "face_masks")
    if not images:
        raise DataError(f"{folder}: no image files")
    if face_masks:
        _report(f"{root}: faces without a skin mask in face_masks/, left out", sorted(set(images) - set(face_masks)))
    samples = [
        Sample(stem, image, None, face_masks.get(stem), "weak") for stem, image in images.items() if not face_masks or stem in face_masks
    ]
    if not samples:
        raise DataError(f"{root}: no face has a skin mask in face_masks/")
    return samples


def source_samples(src: SourceConfig, image_size: int) -> list[Sample]:
    """The samples of one configured source; a synthetic source is generated first when missing or stale."""
    if src.kind == "synthetic":
        write_synthetic_dataset(src.root, src.n_images, image_size, image_size, src.seed, workers=2)
        return folder_samples(src.root, source="synthetic")
    if src.kind == "folder":
        return folder_samples(src.root, source="folder")
    if src.kind == "ffhq_wrinkle":
        return ffhq_wrinkle_samples(src.root, src.images, src.masks, tuple(src.skin_classes))
    if src.kind == "kim":
        return kim_samples(src.root, src.images)
    if src.kind == "vanijan":
        return vanijan_samples(src.root, src.images)
    if src.kind == "weak":
        return weak_samples(src.root)
    raise UnknownNameError(f"data.sources kind {src.kind!r}; valid: {', '.join(SOURCE_KINDS)}")


def configured_sources(cfg: DataConfig) -> list[tuple[str, list[Sample]]]:
    """(name, samples) of every configured source, in order; names are "<index>:<kind>" and each
    sample's `source` is set to its source's name."""
    named = []
    for index, src in enumerate(cfg.sources):
        name = f"{index}:{src.kind}"
        named.append((name, [replace(s, source=name) for s in source_samples(src, cfg.image_size)]))
    return named
