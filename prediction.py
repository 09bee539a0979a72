"""Segmenting a folder of face images with a checkpoint: masks, overlays, probabilities, summary.csv."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from cli import list_inputs, write_summary
from data.image_io import IMAGE_SUFFIXES, ImageReadError, read_binary_mask, read_rgb, write_png
from evaluation import resolve_threshold
from inference import load_model, model_predictor, resolve_device
from visualize import overlay

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["file", "status", "width", "height", "wrinkle_pixels", "wrinkle_percent_of_skin", "threshold", "message"]


@dataclass
class Prepared:
    """A photo brought to the model's input: padded to a square, resized, with how to undo it."""

    path: Path
    image: np.ndarray  # original RGB
    skin: np.ndarray  # boolean skin mask at the original size (all True without face masks)
    model_input: np.ndarray  # size x size RGB
    side: int  # side of the zero-padded square before resizing


def find_face_mask(face_mask_dir: Path, stem: str) -> Path:
    """The skin mask for `stem` in `face_mask_dir` (any image suffix)."""
    for suffix in IMAGE_SUFFIXES:
        candidate = face_mask_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise ImageReadError(f"{face_mask_dir}: no face mask named {stem}.*")


def prepare(path: Path, size: int, face_mask_dir: Path | None = None, zero_non_skin: bool = True) -> Prepared:
    """Read a photo (and its skin mask), prepare it as the training data was, fit it into size x size
    without distortion (zero padding right and bottom)."""
    image = read_rgb(path)
    height, width = image.shape[:2]
    skin = np.ones((height, width), bool)
    if face_mask_dir is not None:
        mask_path = find_face_mask(face_mask_dir, path.stem)
        skin = read_binary_mask(mask_path)
        if skin.shape != (height, width):
            raise ImageReadError(f"{mask_path}: face mask is {skin.shape[1]}x{skin.shape[0]}, image is {width}x{height}")
    side = max(height, width)
    square = np.zeros((side, side, 3), np.uint8)
    square[:height, :width] = image * skin[..., None] if zero_non_skin else image
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return Prepared(path, image, skin, cv2.resize(square, (size, size), interpolation=interpolation), side)


def restore(prob: np.ndarray, item: Prepared) -> np.ndarray:
    """Map a size x size probability map back onto the original photo's pixels."""
    height, width = item.image.shape[:2]
    square = cv2.resize(prob, (item.side, item.side), interpolation=cv2.INTER_LINEAR)
    return square[:height, :width]


def predict_folder(
    checkpoint: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    threshold: str | float | None = "auto",
    save_probs: bool = False,
    batch_size: int = 4,
    face_mask_dir: str | Path | None = None,
) -> list[dict]:
    """Segment every image in `input_dir`; returns the summary rows (one per input file).

    With `face_mask_dir` (skin masks named like the images), non-skin pixels are handled as in
    training (zeroed when the checkpoint's data.zero_non_skin) and wrinkles are reported on skin only.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    face_mask_dir = Path(face_mask_dir) if face_mask_dir is not None else None
    if face_mask_dir is not None and not face_mask_dir.is_dir():
        raise FileNotFoundError(f"--face-masks: not a folder: {face_mask_dir}")
    files = list_inputs(input_dir)
    device = resolve_device("auto")
    model, cfg, state = load_model(checkpoint, device)
    predictor = model_predictor(model, device, cfg.train.amp, cfg.train.channels_last)
    used_threshold = resolve_threshold(threshold, state.get("threshold"), cfg)
    size = cfg.data.image_size
    if face_mask_dir is None and cfg.data.zero_non_skin:
        log.warning("this model was trained on skin-masked faces; without --face-masks the whole image counts as skin and hair, eyes or background may be marked")
    for sub in ("masks", "overlays") + (("probs",) if save_probs else ()):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)

    rows: dict[Path, dict] = {}
    pending: list[Prepared] = []

    def flush() -> None:
        if not pending:
            return
        batch = torch.from_numpy(np.stack([p.model_input for p in pending]).transpose(0, 3, 1, 2).copy())
        probs = predictor({"image": batch})[1].cpu().numpy()
        for item, prob in zip(pending, probs):
            full = restore(prob, item)
            mask = (full >= used_threshold) & item.skin
            stem = item.path.stem
            write_png(output_dir / "masks" / f"{stem}.png", mask.astype(np.uint8) * 255)
            write_png(output_dir / "overlays" / f"{stem}.png", overlay(item.image, mask))
            if save_probs:
                write_png(output_dir / "probs" / f"{stem}.png", np.clip(full * 255 + 0.5, 0, 255).astype(np.uint8))
            height, width = mask.shape
            rows[item.path].update(
                status="ok", width=width, height=height, wrinkle_pixels=int(mask.sum()),
                wrinkle_percent_of_skin=round(100.0 * mask.sum() / max(int(item.skin.sum()), 1), 4),
            )
        pending.clear()

    stems: dict[str, Path] = {}
    for path in tqdm(files, desc="predict", unit="file", dynamic_ncols=True):
        row = rows.setdefault(path, {"file": path.name, "threshold": round(used_threshold, 4)})
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            row.update(status="skipped", message="not an image file")
            continue
        if path.stem in stems:
            row.update(status="skipped", message=f"same name as {stems[path.stem].name}; its outputs would collide")
            continue
        try:
            pending.append(prepare(path, size, face_mask_dir, cfg.data.zero_non_skin))
        except ImageReadError as err:
            row.update(status="error", message=str(err))
            log.warning("%s", err)
            continue
        stems[path.stem] = path
        if len(pending) >= batch_size:
            flush()
    flush()
    ordered = [rows[p] for p in files]
    write_summary(output_dir / "summary.csv", ordered, SUMMARY_COLUMNS)
    return ordered
