"""Segmenting a folder of face images with a checkpoint: masks, overlays, probabilities, summary.csv."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cli import list_inputs, write_summary
from config import FaceConfig
from data.image_io import IMAGE_SUFFIXES, ImageReadError, read_binary_mask, read_rgb, write_png
from evaluation import resolve_threshold
from face.crop import FaceCrop, FaceCropper, FaceNotUsable, load_mask_crop
from face.regions import REGIONS
from inference import inference_amp, load_model, model_predictor, resolve_device
from visualize import draw_region_outlines, overlay

log = logging.getLogger(__name__)

NO_RESULT = ("error", "no_face", "multiple_faces", "name_clash")  # statuses of image files that got no mask
SUMMARY_COLUMNS = (
    ["file", "status", "n_faces", "width", "height", "skin_pixels", "wrinkle_pixels", "wrinkle_percent_of_skin"]
    + [f"{name}_percent" for name in REGIONS]
    + ["threshold", "message"]
)


@dataclass
class Prepared:
    """A photo and its face crop (the model's input, and the way back to the photo)."""

    path: Path
    image: np.ndarray  # the photo, RGB
    crop: FaceCrop


def find_face_mask(face_mask_dir: Path, stem: str) -> Path:
    """The skin mask for `stem` in `face_mask_dir` (any image suffix)."""
    for suffix in IMAGE_SUFFIXES:
        candidate = face_mask_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise ImageReadError(f"{face_mask_dir}: no face mask named {stem}.*")


def read_with_face_mask(path: Path, face_mask_dir: Path, size: int) -> Prepared:
    """A photo whose skin mask is a file of the same name: padded to a square, no face detection."""
    image = read_rgb(path)
    mask_path = find_face_mask(face_mask_dir, path.stem)
    skin = read_binary_mask(mask_path)
    if skin.shape != image.shape[:2]:
        raise ImageReadError(f"{mask_path}: face mask is {skin.shape[1]}x{skin.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
    return Prepared(path, image, load_mask_crop(image, skin, size))


def face_settings(trained: FaceConfig, overrides: dict[str, str]) -> FaceConfig:
    """The checkpoint's face settings with `overrides`; a warning when they differ from training."""
    differs = {k: v for k, v in overrides.items() if k in ("align", "skin") and getattr(trained, k) != v}
    if differs:
        log.warning("face settings differ from the model's training (%s): predictions may suffer",
                    ", ".join(f"{k} {getattr(trained, k)} -> {v}" for k, v in differs.items()))
    return dataclasses.replace(trained, **overrides)


def percent(part: np.ndarray, whole: np.ndarray) -> float | str:
    """100 * |part & whole| / |whole|, rounded; empty when `whole` is empty."""
    total = int(whole.sum())
    return round(100.0 * int((part & whole).sum()) / total, 4) if total else ""


def predict_folder(
    checkpoint: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    threshold: str | float | None = "auto",
    save_probs: bool = False,
    batch_size: int = 4,
    face_mask_dir: str | Path | None = None,
    face_overrides: dict[str, str] | None = None,
) -> list[dict]:
    """Segment every image in `input_dir`; returns the summary rows (one per input file).

    Each photo is prepared as the checkpoint's training faces were (its `face` config: alignment,
    skin mask; `face_overrides` replaces some of its keys, with a warning), segmented at the
    training resolution and mapped back onto the photo. With `face_mask_dir` (skin masks named
    like the images) no face is detected: the images are taken as they are, with those masks as skin.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    face_mask_dir = Path(face_mask_dir) if face_mask_dir is not None else None
    if face_mask_dir is not None and not face_mask_dir.is_dir():
        raise FileNotFoundError(f"--face-masks: not a folder: {face_mask_dir}")
    files = list_inputs(input_dir)
    device = resolve_device("auto")
    model, cfg, state = load_model(checkpoint, device)
    face = face_settings(cfg.face, face_overrides or {})
    predictor = model_predictor(model, device, inference_amp(cfg.train.amp, device), cfg.train.channels_last)
    used_threshold = resolve_threshold(threshold, state.get("threshold"), cfg, checkpoint)
    size = cfg.data.image_size
    cropper = None
    if face_mask_dir is None:
        if face.skin == "none" and cfg.data.zero_non_skin:
            log.warning("this model was trained on skin-masked faces; with face.skin none the whole photo counts as skin and hair, eyes or background may be marked")
        cropper = FaceCropper(face, size, str(device))
    for sub in ("masks", "overlays") + (("probs",) if save_probs else ()):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)

    rows: dict[Path, dict] = {}
    pending: list[Prepared] = []

    def flush() -> None:
        if not pending:
            return
        inputs = [p.crop.image * p.crop.skin[..., None] if cfg.data.zero_non_skin else p.crop.image for p in pending]
        batch = torch.from_numpy(np.stack(inputs).transpose(0, 3, 1, 2).copy())
        probs = predictor({"image": batch})[1].float().cpu().numpy()
        for item, prob in zip(pending, probs):
            full = item.crop.to_photo(prob)
            skin = item.crop.photo_skin()
            mask = (full >= used_threshold) & skin
            stem = item.path.stem
            write_png(output_dir / "masks" / f"{stem}.png", mask.astype(np.uint8) * 255)
            regions = item.crop.photo_regions()
            write_png(output_dir / "overlays" / f"{stem}.png", draw_region_outlines(overlay(item.image, mask), regions))
            if save_probs:
                write_png(output_dir / "probs" / f"{stem}.png", np.clip(full * 255 + 0.5, 0, 255).astype(np.uint8))
            height, width = mask.shape
            row = rows[item.path]
            row.update(status="ok", width=width, height=height, skin_pixels=int(skin.sum()), wrinkle_pixels=int(mask.sum()),
                       wrinkle_percent_of_skin=percent(mask, skin))
            row.update({f"{name}_percent": percent(mask, region) for name, region in regions.items()})
        pending.clear()

    stems: dict[str, Path] = {}
    for path in tqdm(files, desc="predict", unit="file", dynamic_ncols=True):
        row = rows.setdefault(path, {"file": path.name, "threshold": round(used_threshold, 4)})
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            row.update(status="skipped", message="not an image file")
            continue
        if path.stem in stems:
            row.update(status="name_clash", message=f"same name as {stems[path.stem].name}; its outputs would collide")
            continue
        try:
            if cropper is None:
                item = read_with_face_mask(path, face_mask_dir, size)
            else:
                image = read_rgb(path)
                item = Prepared(path, image, cropper(image))
                row["n_faces"] = item.crop.n_faces if cropper.mesh is not None else ""
        except ImageReadError as err:
            row.update(status="error", message=str(err))
            log.warning("%s", err)
            continue
        except FaceNotUsable as err:
            row.update(status=err.status, n_faces=err.n_faces, message=str(err))
            log.warning("%s: %s", path.name, err)
            continue
        stems[path.stem] = path
        pending.append(item)
        if len(pending) >= batch_size:
            flush()
    flush()
    ordered = [rows[p] for p in files]
    write_summary(output_dir / "summary.csv", ordered, SUMMARY_COLUMNS)
    return ordered
