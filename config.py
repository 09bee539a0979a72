"""The configuration schema: one flat, commented block of defaults per section, loaded from YAML.

`load_config(path, overrides)` reads a YAML file over the defaults below and then applies dotted
`key=value` overrides (`train.epochs=3`, `model.encoder=resnet18`, `data.sources.0.root=/data`).
Unknown keys and wrongly typed values raise ConfigError naming the key, and the valid choices where
there is a fixed set. The resolved config is saved beside each run and embedded, as a plain dict, in
every checkpoint (`config_to_dict` / `config_from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from errors import WrinkleError, describe_os_error
from fileio import write_text_atomic


class ConfigError(WrinkleError, ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


# ----------------------------------------------------------------------------------------------
# Defaults: the seed's full recipe (config.yaml spells out the same values for FFHQ-Wrinkle).
# ----------------------------------------------------------------------------------------------


@dataclass
class ExperimentConfig:
    name: str = "wrinkle-unet"  # run folders are <output_dir>/<name>-<timestamp>
    output_dir: str = "runs"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present
    deterministic: bool = False  # deterministic kernels (slower), for exactly repeatable runs


@dataclass
class SourceConfig:
    kind: Literal["synthetic", "folder", "ffhq_wrinkle", "kim", "vanijan"] = "synthetic"
    # synthetic: where the faces are written (when missing or stale); folder: holds images/, masks/,
    # face_masks/; ffhq_wrinkle: the release folder (manual_wrinkle_masks/, weak_wrinkle_masks/,
    # face_parsed_labels/); kim: holds wrinkle_masks/ and skin_masks/; vanijan: holds wrinkles/
    root: str = "data_cache/synthetic"
    images: Optional[str] = None  # ffhq_wrinkle, kim, vanijan: FFHQ images (official nested or flat)
    masks: Literal["manual", "weak"] = "manual"  # ffhq_wrinkle: which wrinkle masks
    skin_classes: list[int] = field(default_factory=lambda: [1, 10])  # BiSeNet classes that are skin (skin, nose)
    n_images: int = 240  # synthetic: how many faces to generate
    seed: int = 1234  # synthetic: generator seed (independent of experiment.seed)


@dataclass
class SplitConfig:
    method: Literal["random", "files"] = "random"  # files: ids listed in val_ids_file / test_ids_file
    val_fraction: float = 0.1  # random: ids are ranked by a seeded hash, so a split never depends on order
    test_fraction: float = 0.1
    seed: int = 0
    val_ids_file: Optional[str] = None  # one id a line; with "files" and no val file, val is drawn at random
    test_ids_file: Optional[str] = None  # e.g. FFHQ-Wrinkle's test_file_lists.txt (Moon et al.'s 100 ids)


@dataclass
class AugmentConfig:
    enabled: bool = True  # training only: validation and test are never augmented
    hflip_p: float = 0.5
    affine_p: float = 0.7
    rotate_limit: float = 15.0  # degrees, +-
    scale_limit: float = 0.1  # fraction, +-
    shift_limit: float = 0.1  # fraction of the image size, +-
    clahe_p: float = 0.2
    blur_p: float = 0.2
    noise_p: float = 0.2
    noise_std_range: list[float] = field(default_factory=lambda: [0.02, 0.06])  # fraction of 255
    elastic_p: float = 0.0


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    image_size: int = 512  # training resolution (square)
    zero_non_skin: bool = True  # black out non-skin pixels of the image, as the seed did
    train_mask_dilation: int = 3  # kernel size of a training-only mask dilation; 0 or 1 = off
    num_workers: int = 2
    cache: Literal["disk", "memory", "none"] = "disk"  # decoded, resized samples: on disk, in RAM, or re-decoded
    cache_dir: str = "data_cache/decoded"  # disk cache; entries are keyed by source files and size
    patch_size: int = 0  # training on random crops of this size (validation: whole images); 0 = off
    patch_wrinkle_fraction: float = 0.7  # share of training patches centred on a wrinkle pixel
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    encoder: str = "resnet50"  # any segmentation-models-pytorch encoder name
    encoder_weights: Optional[str] = "imagenet"  # null, "imagenet" (downloaded) or a local file path
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])
    attention: bool = True  # attention gates on every skip connection
    dropout: float = 0.2
    full_res_skip_channels: int = 16  # a light full-resolution skip for 1-2 px lines; 0 = off
    freeze_encoder: Literal["none", "all", "partial"] = "partial"
    unfrozen_stages: int = 2  # with "partial": how many of the deepest encoder stages train
    init_from: Optional[str] = None  # start from a checkpoint's weights (not its optimizer or epoch)


@dataclass
class LossConfig:
    dice_weight: float = 1.0
    focal_weight: float = 1.0
    focal_alpha: float = 0.75  # weight of the wrinkle class (Kim et al.)
    focal_gamma: float = 2.0
    dice_smooth: float = 1.0  # keeps Dice defined (and ~0 loss) on images with no wrinkles
    region: Literal["skin", "image"] = "skin"  # pixels the loss is computed on


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SchedulerConfig:
    monitor: Literal["val_loss", "val_iou", "val_dice"] = "val_loss"
    mode: Literal["min", "max"] = "min"
    factor: float = 0.5
    patience: int = 15
    min_lr: float = 1e-7


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 8
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    amp: Literal["off", "bf16", "fp16"] = "off"  # fp16 only on CUDA (with a gradient scaler)
    channels_last: bool = True
    select_metric: Literal["val_iou", "val_dice", "val_loss"] = "val_iou"  # best.pt is chosen on this
    early_stopping_patience: int = 0  # epochs without improvement of select_metric; 0 = off
    max_bad_steps: int = 5  # non-finite loss or gradient: skip the step; abort after this many in a row
    compile: bool = False  # torch.compile the model (slow first epoch, faster after; CUDA mostly)
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over all ranks' batches
    overlay_every: int = 10  # log validation overlays to W&B every N epochs; 0 = never


@dataclass
class EvalConfig:
    threshold: float = 0.5
    region: Literal["skin", "image"] = "skin"  # pixels the metrics are computed on
    tolerance_px: int = 2  # for tolerant precision/recall/F1: annotators disagree by a few pixels
    batch_size: int = 4


@dataclass
class FaceConfig:
    # How predict.py brings a photo into the training frame; set it to how the training faces were made.
    align: Literal["ffhq", "none"] = "ffhq"  # ffhq: FFHQ crop from face-mesh eye/mouth landmarks; none: photo padded to a square
    skin: Literal["mesh", "bisenet", "none"] = "mesh"  # mesh: face oval minus eyes/brows/lips; bisenet: parsed classes; none: whole crop
    crop_scale: float = 1.0  # align ffhq: enlarge FFHQ's crop by this; `python -m face.calibrate DIR` measures it on training faces
    multiple_faces: Literal["largest", "skip"] = "largest"  # several faces in a photo: use the largest, or skip the photo
    min_score: float = 0.5  # detection and face-presence scores below this are not faces
    mesh_models: str = ""  # folder of the face-mesh .tflite files; "" = models/face_mesh (make install)
    bisenet_weights: str = ""  # skin=bisenet: path to face-parsing.PyTorch's 79999_iter.pth
    skin_classes: list[int] = field(default_factory=lambda: [1, 10])  # skin=bisenet: classes that are skin


@dataclass
class LoggingConfig:
    wandb: Literal["online", "offline", "disabled"] = "offline"  # WANDB_MODE overrides; no API key -> offline
    project: str = "wrinkle-segmentation"
    entity: Optional[str] = None


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ----------------------------------------------------------------------------------------------
# Typed conversion: plain data (YAML) -> dataclasses, with errors that name the key.
# ----------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value's repr for a message, cut short: a YAML alias chain can nest a list a billion items
    deep, and a 4000-digit integer is no help on a terminal."""
    short = reprlib.Repr()  # attributes, not keyword arguments: Python 3.10 and 3.11 take none
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 2, 80, 80, 40
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 4
    return short.repr(value)


def _clip(text: str, width: int = 80) -> str:
    """User text echoed in a message (an override's key), cut to `width` characters."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type `tp` and convert it (dicts to dataclasses, ints to floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {_show(value)} is not valid; choose one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}")
        (item_type,) = typing.get_args(tp)
        return [_convert(item, item_type, f"{key}.{i}") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {_show(value)}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range (1e309 and up)
            raise ConfigError(f"{key}: expected a finite number, got {_show(value)}") from None
        if not math.isfinite(value):  # .inf / .nan would pass every range check below as NaN does
            raise ConfigError(f"{key}: expected a finite number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"config schema: unsupported type {tp!r} at {key}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a dict, starting from its defaults; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            raise ConfigError(f"unknown config key {_show(full)}; valid keys here: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    """Recursive dict merge: mappings merge key by key, anything else (lists included) replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_to_dict(cfg: Config) -> dict:
    """The config as plain data (dicts, lists, scalars): YAML- and checkpoint-safe."""
    return dataclasses.asdict(cfg)


def config_from_dict(values: dict) -> Config:
    """A Config from plain data (a saved config or a checkpoint's), validated like a file."""
    cfg = _build(Config, values)
    validate(cfg)
    return cfg


def _set_dotted(tree: Any, dotted: str, value: Any) -> None:
    """Set `a.b.0.c` in nested dicts/lists, naming the key when a step does not exist."""
    parts = dotted.split(".")
    node = tree
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = _clip(".".join(parts[: depth + 1]))
        if isinstance(node, list):
            # ASCII digits only ("²".isdigit() is true, int("²") fails), and few of them (int() refuses 4300+)
            if not (part.isascii() and part.isdigit() and len(part) <= 9) or int(part) >= len(node):
                raise ConfigError(f"{where}: no list item {_show(part)} (the list has {len(node)} items)")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if part not in node:
                parent = _clip(".".join(parts[:depth])) or "the top level"
                # map(str): an override can put a mapping with non-string keys here (train={1: 2})
                raise ConfigError(f"unknown config key {where!r}; valid keys in {parent}: {', '.join(map(str, node))}")
            if last:
                node[part] = value
            else:
                node = node[part]
        else:
            raise ConfigError(f"{where}: {_clip('.'.join(parts[:depth]))} is a value, not a section")


# What yaml.safe_load raises on bad text: YAMLError, and from its constructors ValueError (a date
# "2024-13-45", an integer of 4300+ digits, "!!float x") and RecursionError (thousands of nested "[").
_YAML_FAULTS = (yaml.YAMLError, ValueError, RecursionError)


def _yaml_problem(err: BaseException) -> str:
    """One line on what YAML found wrong, and where when it knows."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{err.problem}".replace("\n", " ")
    text = " ".join(str(err).split())  # PyYAML's messages span several lines
    return text[:200] or type(err).__name__


def _read_config_text(path: Path) -> str:
    """The text of a config file: ConfigError, in one line, for a missing, unreadable or non-UTF-8 file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{path}: is a folder, not a config file; pass the path of a YAML file") from err
    except OSError as err:  # permission, a file where a folder should be, I/O error
        raise ConfigError(f"cannot read config file {describe_os_error(err, path)}") from err
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""  # Notepad's UTF-8 mark: harmless
    try:
        return data[len(bom) :].decode("utf-8")
    except UnicodeDecodeError as err:
        at = err.start + len(bom)
        line = data.count(b"\n", 0, at) + 1
        utf16 = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"{path}: not UTF-8 text{utf16}: byte 0x{data[at]:02X} at position {at} (line {line}); save the file as UTF-8"
        ) from err


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `key=value` strings (values parsed as YAML: 3, 1e-4, null, [1, 2], text) to plain data."""
    values = _merge({}, values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {_show(item)} is not of the form key=value")
        if not key.isprintable():  # keys are echoed in messages, which must stay one line
            raise ConfigError(f"override {_show(item)}: the key has control characters (a newline or tab?)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except _YAML_FAULTS as err:
            raise ConfigError(f"{_clip(key)}: cannot parse value {_show(raw)} ({_yaml_problem(err)})") from err
        _set_dotted(values, key.strip(), value)
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Defaults, then `base` (e.g. a checkpoint's config), then the YAML file, then dotted overrides."""
    values = config_to_dict(Config())
    if base is not None:
        values = _merge(values, config_to_dict(config_from_dict(base)))
    if path is not None:
        path = Path(path)
        text = _read_config_text(path)
        try:
            loaded = yaml.safe_load(text) or {}
        except _YAML_FAULTS as err:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(err)})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        _build(Config, loaded)  # reject unknown keys and bad types with the file's own key names
        values = _merge(values, loaded)
    values = apply_overrides(values, overrides or [])
    return config_from_dict(values)


def validate(cfg: Config) -> None:
    """Checks across fields and value ranges that types alone cannot express."""

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    d, s = cfg.data, cfg.data.split
    require(len(d.sources) > 0, "data.sources: at least one source is needed")
    require(d.image_size >= 32, f"data.image_size: must be at least 32, got {d.image_size}")
    require(d.train_mask_dilation >= 0, "data.train_mask_dilation: must be >= 0")
    require(d.num_workers >= 0, "data.num_workers: must be >= 0")
    for i, src in enumerate(d.sources):
        require(src.n_images > 0, f"data.sources.{i}.n_images: must be positive")
        require(src.kind in ("synthetic", "folder") or src.images is not None, f"data.sources.{i}.images: the FFHQ image folder is needed for {src.kind}")
    require(0 <= s.val_fraction < 1 and 0 <= s.test_fraction < 1, "data.split: fractions must be in [0, 1)")
    require(s.val_fraction + s.test_fraction < 1, "data.split: val_fraction + test_fraction must be below 1")
    require(len(d.augment.noise_std_range) == 2, "data.augment.noise_std_range: expected [low, high]")
    require(d.patch_size == 0 or 32 <= d.patch_size <= d.image_size, "data.patch_size: 0 (off) or between 32 and data.image_size")
    require(0 <= d.patch_wrinkle_fraction <= 1, "data.patch_wrinkle_fraction: must be in [0, 1]")
    require(s.method != "files" or s.test_ids_file is not None, "data.split.test_ids_file: needed with method files")
    require(1 <= len(cfg.model.decoder_channels) <= 5, "model.decoder_channels: 1 to 5 widths")
    require(all(c > 0 for c in cfg.model.decoder_channels), "model.decoder_channels: widths must be positive")
    require(0 <= cfg.model.dropout < 1, "model.dropout: must be in [0, 1)")
    require(cfg.model.unfrozen_stages >= 0, "model.unfrozen_stages: must be >= 0")
    require(0 <= cfg.loss.focal_alpha <= 1, "loss.focal_alpha: must be in [0, 1]")
    require(cfg.loss.dice_weight >= 0 and cfg.loss.focal_weight >= 0, "loss: weights must be >= 0")
    require(cfg.loss.dice_weight + cfg.loss.focal_weight > 0, "loss: dice_weight + focal_weight must be positive")
    require(cfg.optim.lr > 0, "optim.lr: must be positive")
    require(len(cfg.optim.betas) == 2, "optim.betas: expected [beta1, beta2]")
    require(cfg.train.epochs > 0, "train.epochs: must be positive")
    require(cfg.train.batch_size > 0, "train.batch_size: must be positive")
    side = d.patch_size or d.image_size
    require(cfg.train.batch_size > 1 or side > 32,  # the model pads to a multiple of 32, so only 32 px gives 1 x 1
            f"train.batch_size=1 with {'data.patch_size' if d.patch_size else 'data.image_size'}={side}: the encoder's deepest "
            "BatchNorm (1/32 of the side) would see one value per channel; use train.batch_size >= 2 or a size above 32")
    require(cfg.train.max_bad_steps > 0, "train.max_bad_steps: must be positive")
    require(cfg.train.overlay_every >= 0, "train.overlay_every: must be >= 0")
    require(cfg.eval.batch_size > 0, "eval.batch_size: must be positive")
    require(0 < cfg.eval.threshold < 1, "eval.threshold: must be in (0, 1)")
    require(cfg.eval.tolerance_px >= 0, "eval.tolerance_px: must be >= 0")
    require(0 < cfg.face.min_score < 1, "face.min_score: must be in (0, 1)")
    require(0.5 <= cfg.face.crop_scale <= 2, "face.crop_scale: must be in [0.5, 2]")
    require(cfg.face.skin != "bisenet" or bool(cfg.face.skin_classes), "face.skin_classes: at least one class with skin bisenet")
    require(0 < cfg.scheduler.factor < 1, "scheduler.factor: must be in (0, 1)")
    expected_mode = "min" if cfg.scheduler.monitor == "val_loss" else "max"
    require(cfg.scheduler.mode == expected_mode, f"scheduler.mode: {cfg.scheduler.monitor} needs mode {expected_mode}")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
