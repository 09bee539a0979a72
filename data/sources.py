"""Data set layouts on disk, each turned into a list of samples (image, wrinkle mask, skin mask paths)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from data.image_io import list_images
from data.synthetic import write_synthetic_dataset

if TYPE_CHECKING:
    from config import SourceConfig

log = logging.getLogger(__name__)

SOURCE_KINDS = ("synthetic", "folder", "ffhq_wrinkle")


class DataError(ValueError):
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


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in list_images(folder)} if folder.is_dir() else {}


def folder_samples(root: str | Path, source: str = "folder", require_masks: bool = True) -> list[Sample]:
    """Samples from `root/images/`, `root/masks/` and optional `root/face_masks/`, matched by file stem.

    Images without a mask are reported by name and left out (with `require_masks`); masks without an
    image are reported too.
    """
    root = Path(root)
    if not (root / "images").is_dir():
        raise DataError(f"{root}: no images/ folder (expected images/, masks/ and optional face_masks/)")
    images, masks, face_masks = _by_stem(root / "images"), _by_stem(root / "masks"), _by_stem(root / "face_masks")
    if not images:
        raise DataError(f"{root / 'images'}: no image files")
    missing = sorted(set(images) - set(masks))
    if require_masks and missing:
        log.warning("%s: %d images have no mask in masks/ and are left out: %s", root, len(missing), ", ".join(missing[:10]))
    orphans = sorted(set(masks) - set(images))
    if orphans:
        log.warning("%s: %d masks have no image: %s", root, len(orphans), ", ".join(orphans[:10]))
    if face_masks:
        no_skin = sorted(set(images) & set(masks) - set(face_masks))
        if no_skin:
            log.warning("%s: %d images have no face mask and are left out: %s", root, len(no_skin), ", ".join(no_skin[:10]))
    samples = []
    for stem, image in images.items():
        if stem not in masks and require_masks:
            continue
        if face_masks and stem not in face_masks:
            continue
        samples.append(Sample(stem, image, masks.get(stem), face_masks.get(stem), source))
    if not samples:
        raise DataError(f"{root}: no image has a matching mask in masks/")
    return samples


def _index_pngs(folder: Path) -> dict[str, Path]:
    """{stem: path} of every PNG under `folder`, flat or nested (FFHQ's one sub-folder per thousand)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return {p.stem: p for p in sorted(folder.rglob("*.png")) if not p.name.startswith(".")}


def ffhq_wrinkle_samples(root: str | Path, images: str | Path, masks: str = "manual", skin_classes: tuple[int, ...] = (1, 10)) -> list[Sample]:
    """FFHQ-Wrinkle (Moon et al. 2024): masks by FFHQ id, BiSeNet label maps for skin, FFHQ images.

    `root` holds manual_wrinkle_masks/{id}.png, weak_wrinkle_masks/{thousand}/{id}.png and
    face_parsed_labels/{id}.npy; `images` is FFHQ's images1024x1024/ (nested) or a flat folder.
    Ids with a mask but no image are reported by name and left out.
    """
    root, images = Path(root), Path(images)
    mask_dir = root / ("manual_wrinkle_masks" if masks == "manual" else "weak_wrinkle_masks")
    mask_index, image_index = _index_pngs(mask_dir), _index_pngs(images)
    labels = root / "face_parsed_labels"
    if not mask_index:
        raise DataError(f"{mask_dir}: no mask files")
    missing = sorted(set(mask_index) - set(image_index))
    if missing:
        log.warning("%s: %d masks have no FFHQ image in %s and are left out: %s", mask_dir, len(missing), images, ", ".join(missing[:10]))
    samples = []
    for sample_id, mask in mask_index.items():
        if sample_id not in image_index:
            continue
        label_map = labels / f"{sample_id}.npy"
        samples.append(Sample(sample_id, image_index[sample_id], mask, label_map if label_map.is_file() else None, "ffhq_wrinkle", tuple(skin_classes)))
    no_labels = [s.id for s in samples if s.face_mask is None]
    if no_labels:
        log.warning("%s: %d ids have no face-parsing labels (their whole image counts as skin): %s", labels, len(no_labels), ", ".join(no_labels[:10]))
    if not samples:
        raise DataError(f"{root}: no mask matches an image in {images}")
    return samples


def source_samples(src: "SourceConfig", image_size: int) -> list[Sample]:
    """The samples of one configured source; a synthetic source is generated first when missing or stale."""
    if src.kind == "synthetic":
        write_synthetic_dataset(src.root, src.n_images, image_size, image_size, src.seed, workers=2)
        return folder_samples(src.root, source="synthetic")
    if src.kind == "folder":
        return folder_samples(src.root, source="folder")
    if src.kind == "ffhq_wrinkle":
        return ffhq_wrinkle_samples(src.root, src.images, src.masks, tuple(src.skin_classes))
    raise KeyError(f"data.sources kind {src.kind!r}; valid: {', '.join(SOURCE_KINDS)}")
