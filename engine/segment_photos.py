"""Segmenting a folder of face images with a checkpoint: masks, overlays, probabilities, summary.csv."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from config import Config, ConfigError, FaceConfig, apply_overrides, config_from_dict, config_to_dict
from data.image_io import ImageReadError, read_rgb, read_rgb_with_face_mask
from data.texture import texture_map
from engine.cli import face_mask_folder, input_status, list_inputs, write_batch
from engine.errors import OutputError
from engine.inference import inference_amp, load_network, model_predictor, resolve_device, resolve_threshold, to_model_input
from engine.output_folder import OutputFolder
from engine.pictures import draw_region_outlines, overlay
from face.crop import FaceCrop, FaceCropper, FaceNotUsable, load_mask_crop
from face.regions import REGIONS

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
    name: str  # its outputs' name: the path below the input folder, without suffix
    image: np.ndarray  # the photo, RGB
    crop: FaceCrop


def read_with_face_mask(path: Path, face_mask_dir: Path, size: int, name: str) -> Prepared:
    """A photo whose skin mask is a file of the same `name` (relative, no suffix): padded to a square,
    no face detection."""
    image, skin = read_rgb_with_face_mask(path, face_mask_dir, name)
    return Prepared(path, name, image, load_mask_crop(image, skin, size))


def face_settings(trained: FaceConfig, overrides: dict[str, str]) -> FaceConfig:
    """The checkpoint's face settings with `overrides`; a warning when they differ from training."""
    differs = {k: v for k, v in overrides.items() if k in ("align", "skin") and getattr(trained, k) != v}
    if differs:
        log.warning(
            "face settings differ from the model's training (%s): predictions may suffer",
            ", ".join(f"{k} {getattr(trained, k)} -> {v}" for k, v in differs.items()),
        )
    return trained.model_copy(update=overrides)


def percent(part: np.ndarray, whole: np.ndarray) -> float | str:
    """100 * |part & whole| / |whole|, rounded; empty when `whole` is empty."""
    total = int(whole.sum())
    return round(100.0 * int((part & whole).sum()) / total, 4) if total else ""


class PhotoSegmenter:
    """A checkpoint (.pt, or an export.py .onnx) ready to segment photos as predict.py does: faces prepared
    as its training faces were (its `face` config; `face_overrides` replaces some keys, with a warning),
    segmented at `size` (default: the training resolution; `tile` / `overlap` read larger crops in
    windows; `tta` hflip averages with the mirror image) and mapped back onto the photo. With
    `face_mask_dir` (skin masks named like the images) no face is detected: the images are taken as they
    are, with those masks as skin. predict.py and the demo (app.py) both use it."""

    def __init__(
        self,
        checkpoint: str | Path,
        threshold: str | float | None = "auto",
        face_mask_dir: str | Path | None = None,
        face_overrides: dict[str, str] | None = None,
        runtime: str | None = None,
        threads: int | None = None,
        tta: str = "none",
        size: int | None = None,
        tile: int | None = None,
        overlap: int | None = None,
    ):
        self.face_mask_dir = face_mask_folder(face_mask_dir)
        device = resolve_device("auto")
        model, self.cfg, facts = load_network(checkpoint, device, runtime, threads)
        self.face = face_settings(self.cfg.face, face_overrides or {})
        self.size, tile, overlap = prediction_scale(self.cfg, size, tile, overlap)
        amp = inference_amp(self.cfg.train.amp, device)
        self.predictor = model_predictor(model, device, amp, self.cfg.train.channels_last, tta, tile, overlap)
        self.threshold = resolve_threshold(threshold, facts["threshold"], self.cfg, checkpoint)
        self.cropper = None
        if self.face_mask_dir is None:
            if self.face.skin == "none" and self.cfg.data.zero_non_skin:
                log.warning(
                    "this model was trained on skin-masked faces; with face.skin none the whole photo counts as skin and hair, eyes or background may be marked"
                )
            self.cropper = FaceCropper(self.face, self.size, str(device))

    def prepare(self, path: Path, name: str, row: dict) -> Prepared | None:
        """The photo's face crop (see `prepare_photo`); None, with the reason in `row`, when it has none."""
        return prepare_photo(path, name, row, self.cropper, self.face_mask_dir, self.size)

    def probabilities(self, pending: list[Prepared]) -> list[np.ndarray]:
        """Each prepared face's wrinkle probabilities (crop size), from one batched forward pass."""
        if not pending:
            return []
        return list(self.predictor({"image": model_batch(pending, self.cfg)})[1].float().cpu().numpy())

    def segment(self, pending: list[Prepared], save_probs: bool = False) -> dict[Path, tuple[dict[str, np.ndarray], dict]]:
        """Each prepared photo's output images and summary figures (see `segment_result`)."""
        return {
            item.path: segment_result(item, prob, self.threshold, save_probs) for item, prob in zip(pending, self.probabilities(pending))
        }


def predict_folder(
    checkpoint: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    threshold: str | float | None = "auto",
    save_probs: bool = False,
    batch_size: int = 4,
    face_mask_dir: str | Path | None = None,
    face_overrides: dict[str, str] | None = None,
    overwrite: bool = False,
    recursive: bool = False,
    runtime: str | None = None,
    threads: int | None = None,
    tta: str = "none",
    size: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
) -> list[dict]:
    """Segment every image in `input_dir` with a `PhotoSegmenter` (which the other options configure);
    returns the summary rows (one per input file). `output_dir` follows `OutputFolder`'s rules
    (`overwrite`); `recursive` also reads sub-folders, whose layout the outputs repeat. After every
    batch summary.csv lists exactly the photos whose files are written, so a run stopped by a full disk
    leaves a consistent folder.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    files = list_inputs(input_dir, recursive)
    segmenter = PhotoSegmenter(checkpoint, threshold, face_mask_dir, face_overrides, runtime, threads, tta, size, tile, overlap)
    inputs = [input_dir] + ([segmenter.face_mask_dir] if segmenter.face_mask_dir is not None else [])
    output = OutputFolder(output_dir, "predict.py", overwrite=overwrite, inputs=inputs)

    rows: dict[Path, dict] = {}
    pending: list[Prepared] = []
    names: dict[str, Path] = {}
    for path in tqdm(files, desc="predict", unit="file", dynamic_ncols=True):
        row = rows.setdefault(path, {"file": path.relative_to(input_dir).as_posix(), "threshold": round(segmenter.threshold, 4)})
        name, problem = input_status(path, input_dir, names)
        if problem is not None:
            row.update(status=problem[0], message=problem[1])
            continue
        item = segmenter.prepare(path, name, row)
        if item is not None:
            names[name] = path
            pending.append(item)
        if len(pending) >= batch_size:
            write_results(output, segmenter.segment(pending, save_probs), rows, files)
            pending.clear()
    # The last photos, and the final summary.csv with every file's row.
    write_results(output, segmenter.segment(pending, save_probs), rows, files)
    output.finish()
    return [rows[p] for p in files]


def prediction_scale(cfg: Config, size: int | None, tile: int | None, overlap: int | None) -> tuple[int, int, int]:
    """(face crop size, tile, overlap) from the options, the config's data.image_size and eval.tile /
    eval.overlap filling in those not given, checked like the config's own keys."""
    size = cfg.data.image_size if size is None else size
    if size < 32:
        raise ConfigError(f"--size must be at least 32 px, got {size}")
    # The options are the config's eval.tile / eval.overlap, so the config's rules check them (one-line errors).
    settings = [f"eval.{key}={value}" for key, value in (("tile", tile), ("overlap", overlap)) if value is not None]
    checked = config_from_dict(apply_overrides(config_to_dict(cfg), settings)).eval
    if tile is not None and tile >= size:  # asked for; the config's own eval.tile may exceed a small crop
        raise ConfigError(
            f"--tile {tile} is not below the face size ({size} px): nothing to tile; pass --size above it (e.g. --size {2 * tile})"
        )
    if size != cfg.data.image_size:
        log.info("faces cropped at %d px (the model was trained at %d px)", size, cfg.data.image_size)
    return size, checked.tile, checked.overlap


def prepare_photo(path: Path, name: str, row: dict, cropper: FaceCropper | None, face_mask_dir: Path | None, size: int) -> Prepared | None:
    """The photo's model input (its face crop, or the image with its given skin mask); None, with the
    reason in `row`, when it is unreadable or has no usable face."""
    try:
        if cropper is None:
            return read_with_face_mask(path, face_mask_dir, size, name)
        image = read_rgb(path)
        item = Prepared(path, name, image, cropper(image))
        row["n_faces"] = item.crop.n_faces if cropper.mesh is not None else ""
        return item
    except ImageReadError as err:
        row.update(status="error", message=str(err))
        log.warning("%s", err)
    except FaceNotUsable as err:
        row.update(status=err.status, n_faces=err.n_faces, message=str(err))
        log.warning("%s: %s", path.name, err)
    return None


def calibration_inputs(
    cfg: Config,
    input_dir: str | Path,
    face_mask_dir: str | Path | None = None,
    face_overrides: dict[str, str] | None = None,
    limit: int = 64,
    size: int | None = None,
    recursive: bool = False,
) -> list[np.ndarray]:
    """Up to `limit` faces of `input_dir` (with `recursive`, its sub-folders too) as prediction feeds them
    to the model (the same crop, skin mask, texture channel and scaling; cropped at `size`, by default
    the training resolution): float32 1 x C x S x S arrays in [0, 1], for int8 calibration. Files that
    give no face are skipped with a warning, as predict.py skips them."""
    input_dir, face_mask_dir = Path(input_dir), face_mask_folder(face_mask_dir)
    size = cfg.data.image_size if size is None else size
    cropper = FaceCropper(face_settings(cfg.face, face_overrides or {}), size, "cpu") if face_mask_dir is None else None
    inputs: list[np.ndarray] = []
    names: dict[str, Path] = {}
    for path in list_inputs(input_dir, recursive, option="--calibration"):
        name, problem = input_status(path, input_dir, names)
        item = None if problem is not None else prepare_photo(path, name, {}, cropper, face_mask_dir, size)
        if item is not None:
            names[name] = path
            inputs.append(to_model_input(model_batch([item], cfg), torch.device("cpu"), channels_last=False).numpy())
        if len(inputs) == limit:
            break
    log.info("%d calibration faces from %s", len(inputs), input_dir)
    return inputs


def model_input(crop: FaceCrop, zero_non_skin: bool, texture: bool) -> np.ndarray:
    """H x W x C uint8: the face crop as the model's training faces were made (data/dataset.py): the
    texture map (`texture`) from the whole crop, zero off skin; RGB zeroed off skin with `zero_non_skin`."""
    image = crop.image * crop.skin[..., None] if zero_non_skin else crop.image
    return np.dstack([image, texture_map(crop.image, crop.skin)]) if texture else image


def model_batch(pending: list[Prepared], cfg: Config) -> torch.Tensor:
    """uint8 N x C x S x S: the prepared faces as the model takes them (`model_input`), batched."""
    inputs = [model_input(p.crop, cfg.data.zero_non_skin, cfg.model.input == "rgb_texture") for p in pending]
    return torch.from_numpy(np.stack(inputs).transpose(0, 3, 1, 2).copy())


def segment_result(item: Prepared, prob: np.ndarray, threshold: float, save_probs: bool) -> tuple[dict[str, np.ndarray], dict]:
    """The output images of one photo (relative path -> array) and its summary figures."""
    full = item.crop.to_photo(prob)
    skin = item.crop.photo_skin()
    mask = (full >= threshold) & skin
    regions = item.crop.photo_regions()
    images = {
        f"masks/{item.name}.png": mask.astype(np.uint8) * 255,
        f"overlays/{item.name}.png": draw_region_outlines(overlay(item.image, mask), regions),
    }
    if save_probs:
        images[f"probs/{item.name}.png"] = np.clip(full * 255 + 0.5, 0, 255).astype(np.uint8)
    height, width = mask.shape
    figures = {
        "status": "ok",
        "width": width,
        "height": height,
        "skin_pixels": int(skin.sum()),
        "wrinkle_pixels": int(mask.sum()),
        "wrinkle_percent_of_skin": percent(mask, skin),
    }
    figures.update({f"{name}_percent": percent(mask, region) for name, region in regions.items()})
    return images, figures


def write_results(
    output: OutputFolder, results: dict[Path, tuple[dict[str, np.ndarray], dict]], rows: dict[Path, dict], files: list[Path]
) -> None:
    """Write a batch's images and summary.csv of every photo so far (see `cli.write_batch`)."""
    images = {relative: array for photo_images, _ in results.values() for relative, array in photo_images.items()}
    done = {path: {**rows[path], **results[path][1]} if path in results else rows[path] for path in rows}
    try:
        write_batch(output, images, [done[p] for p in files if p in done], SUMMARY_COLUMNS)
    except OutputError:
        log.error("stopped: summary.csv in %s lists the %d files handled before this batch", output.root, len(rows) - len(results))
        raise
    for path, (_, figures) in results.items():
        rows[path].update(figures)
