"""The configuration schema: one flat, commented block of defaults per section, loaded from YAML.

`load_config(path, overrides)` reads a YAML file over the defaults below and then applies dotted
`key=value` overrides (`train.epochs=3`, `model.encoder=resnet18`, `data.sources.0.root=/data`).
Both are read as YAML 1.2: only true/false are booleans (`amp: off` is the text "off"), 3e-4 is a
number. The sections are pydantic models: unknown keys, wrong types and values out of range raise
ConfigError, one line naming the key and the valid choices where there is a fixed set. The resolved
config is saved beside each run and embedded, as a plain dict, in every checkpoint
(`config_to_dict` / `config_from_dict`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError, to_jsonable_python

from engine.errors import WrinkleError, describe_os_error
from engine.fileio import write_text_atomic

log = logging.getLogger(__name__)


class ConfigError(WrinkleError, ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


class _Section(BaseModel):
    """Strict: bools are not numbers, a float field takes an int but not inf or nan, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _number_from_text(cls, value: Any, info: ValidationInfo) -> Any:  # "3e-4": YAML 1.1 (yaml.safe_load) reads it as text
        with contextlib.suppress(ValueError):
            if isinstance(value, str) and cls.model_fields[info.field_name].annotation is float:
                return float(value)
        return value

    def _check(self, ok: bool, key: str, message: str) -> Any:
        """A rule across fields, in a model validator: ConfigError "<section>.<key>: <message>" unless `ok`."""
        if not ok:
            raise PydanticCustomError("config_rule", "{message}", {"key": key, "message": message})
        return self


# ----------------------------------------------------------------------------------------------
# Defaults: the seed's full recipe (config.yaml spells out the same values for FFHQ-Wrinkle).
# ----------------------------------------------------------------------------------------------


class ExperimentConfig(_Section):
    name: str = "wrinkle-unet"  # run folders are <output_dir>/<name>-<timestamp>
    output_dir: str = "runs"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present
    deterministic: bool = False  # deterministic kernels (slower), for exactly repeatable runs


class SourceConfig(_Section):
    kind: Literal["synthetic", "folder", "ffhq_wrinkle", "kim", "vanijan", "weak"] = "synthetic"
    # synthetic: where the faces are written (when missing or stale); folder: holds images/, masks/,
    # face_masks/; ffhq_wrinkle: the release folder (manual_wrinkle_masks/, weak_wrinkle_masks/,
    # face_parsed_labels/); kim: holds wrinkle_masks/ and skin_masks/; vanijan: holds wrinkles/;
    # weak: unlabeled faces in images/ (or faces/, face_parsing_extraction.py's output) with optional
    # face_masks/, whose texture maps are the targets (train.task=texture only)
    root: str = "data_cache/synthetic"
    images: str | None = None  # ffhq_wrinkle, kim, vanijan: FFHQ images (official nested or flat)
    masks: Literal["manual", "weak"] = "manual"  # ffhq_wrinkle: which wrinkle masks
    skin_classes: list[int] = [1, 10]  # BiSeNet classes that are skin (skin, nose)
    n_images: int = Field(240, gt=0)  # synthetic: how many faces to generate
    seed: int = 1234  # synthetic: generator seed (independent of experiment.seed)

    @model_validator(mode="after")
    def _rules(self) -> SourceConfig:
        return self._check(
            self.kind in ("synthetic", "folder", "weak") or self.images is not None,
            "images",
            f"the FFHQ image folder is needed for {self.kind}",
        )


class SplitConfig(_Section):
    method: Literal["random", "files"] = "random"  # files: ids listed in val_ids_file / test_ids_file
    val_fraction: float = Field(0.1, ge=0, lt=1)  # random: ids are ranked by a seeded hash, so a split never depends on order
    test_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    val_ids_file: str | None = None  # one id a line; with "files" and no val file, val is drawn at random
    test_ids_file: str | None = None  # e.g. FFHQ-Wrinkle's test_file_lists.txt (Moon et al.'s 100 ids)

    @model_validator(mode="after")
    def _rules(self) -> SplitConfig:
        self._check(
            self.val_fraction + self.test_fraction < 1,
            "",
            f"val_fraction + test_fraction must be below 1, got {self.val_fraction} + {self.test_fraction}",
        )
        return self._check(self.method != "files" or self.test_ids_file is not None, "test_ids_file", "needed with method files")


class AugmentConfig(_Section):
    enabled: bool = True  # training only: validation and test are never augmented
    hflip_p: float = 0.5
    affine_p: float = 0.7
    rotate_limit: float = 15.0  # degrees, +-
    scale_limit: float = 0.1  # fraction, +-
    shift_limit: float = 0.1  # fraction of the image size, +-
    clahe_p: float = 0.2
    blur_p: float = 0.2
    noise_p: float = 0.2
    noise_std_range: list[float] = Field([0.02, 0.06], min_length=2, max_length=2)  # [low, high], fraction of 255
    elastic_p: float = 0.0


class DataConfig(_Section):
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig()], min_length=1)
    image_size: int = Field(512, ge=32)  # training resolution (square)
    zero_non_skin: bool = True  # black out non-skin pixels of the image, as the seed did
    train_mask_dilation: int = Field(3, ge=0)  # kernel size of a training-only mask dilation; 0 or 1 = off
    num_workers: int = Field(2, ge=0)
    cache: Literal["disk", "memory", "none"] = "disk"  # decoded, resized samples: on disk, in RAM, or re-decoded
    cache_dir: str = "data_cache/decoded"  # disk cache; entries are keyed by source files and size
    patch_size: int = 0  # training on random crops of this size (validation: whole images); 0 = off
    patch_wrinkle_fraction: float = Field(0.7, ge=0, le=1)  # share of training patches centred on a wrinkle pixel
    split: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _rules(self) -> DataConfig:
        ok = self.patch_size == 0 or 32 <= self.patch_size <= self.image_size
        return self._check(ok, "patch_size", f"0 (off) or between 32 and data.image_size ({self.image_size}), got {self.patch_size}")


class ModelConfig(_Section):
    # attention_unet: ours; smp_unet / unetplusplus: segmentation-models-pytorch's Unet / UnetPlusPlus (Kim
    # et al.: unetplusplus with encoder resnext50_32x4d); seed_unet: the seed blog's ResNet50 U-Net;
    # moon_unet / swin_unetr: Moon et al.'s FFHQ-Wrinkle U-Net and Swin UNETR (input rgb_texture, no
    # pretrained encoder). The published models keep their released module names, so their weights
    # import: python -m unet.import_weights
    arch: Literal["attention_unet", "smp_unet", "unetplusplus", "seed_unet", "moon_unet", "swin_unetr"] = "attention_unet"
    input: Literal["rgb", "rgb_texture"] = "rgb"  # rgb_texture: a 4th channel, Moon et al.'s texture map (data/texture.py)
    encoder: str = "resnet50"  # any segmentation-models-pytorch encoder name (seed_unet: resnet50 only)
    encoder_weights: str | None = "imagenet"  # null, "imagenet" (downloaded) or a local file path
    decoder_channels: list[int] = Field([256, 128, 64, 32, 16], min_length=1, max_length=5)  # positive widths
    attention: bool = True  # attention gates on every skip connection
    dropout: float = Field(0.2, ge=0, lt=1)
    full_res_skip_channels: int = 16  # a light full-resolution skip for 1-2 px lines; 0 = off
    freeze_encoder: Literal["none", "all", "partial"] = "partial"
    unfrozen_stages: int = Field(2, ge=0)  # with "partial": how many of the deepest encoder stages train
    init_from: str | None = None  # start from a checkpoint's weights (not its optimizer or epoch)

    @model_validator(mode="after")
    def _rules(self) -> ModelConfig:
        self._check(all(c > 0 for c in self.decoder_channels), "decoder_channels", f"widths must be positive, got {self.decoder_channels}")
        self._check(
            self.arch != "seed_unet" or self.encoder == "resnet50", "encoder", f"seed_unet is built on resnet50, got {self.encoder}"
        )
        if self.arch in ("moon_unet", "swin_unetr"):  # Moon et al.'s networks: fixed, 4 channels, trained from scratch
            self._check(self.input == "rgb_texture", "input", f"{self.arch} takes RGB + the texture map; set model.input=rgb_texture")
            self._check(
                self.encoder_weights is None,
                "encoder_weights",
                f"{self.arch} has no pretrained encoder; set model.encoder_weights=null (start from released weights with model.init_from)",
            )
            self._check(
                self.freeze_encoder == "none" or self.init_from is not None,
                "freeze_encoder",
                f"{self.arch} trained from scratch has nothing to freeze (its encoder starts random); set model.freeze_encoder=none, "
                "or fine-tune released weights with model.init_from",
            )
        return self


class LossConfig(_Section):
    dice_weight: float = Field(1.0, ge=0)
    focal_weight: float = Field(1.0, ge=0)
    focal_alpha: float = Field(0.75, ge=0, le=1)  # weight of the wrinkle class (Kim et al.)
    focal_gamma: float = 2.0
    dice_smooth: float = 1.0  # keeps Dice defined (and ~0 loss) on images with no wrinkles
    region: Literal["skin", "image"] = "skin"  # pixels the loss is computed on

    @model_validator(mode="after")
    def _rules(self) -> LossConfig:
        return self._check(self.dice_weight + self.focal_weight > 0, "", "dice_weight + focal_weight must be positive")


class OptimConfig(_Section):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = 1e-5
    betas: list[float] = Field([0.9, 0.999], min_length=2, max_length=2)


class SchedulerConfig(_Section):
    monitor: Literal["val_loss", "val_iou", "val_dice"] = "val_loss"
    mode: Literal["min", "max"] = "min"  # min for val_loss, max for the others
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = 15
    min_lr: float = 1e-7

    @model_validator(mode="after")
    def _rules(self) -> SchedulerConfig:
        expected = "min" if self.monitor == "val_loss" else "max"
        return self._check(self.mode == expected, "mode", f"{self.monitor} needs mode {expected}")


class TrainConfig(_Section):
    epochs: int = Field(100, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    amp: Literal["off", "bf16", "fp16"] = "off"  # fp16 only on CUDA (with a gradient scaler)
    channels_last: bool = True
    # segmentation: wrinkle masks, Dice + Focal; texture: regress each face's texture map (weak labels,
    # stage 1 of Moon et al.'s recipe: MSE, validation MAE / PSNR), then fine-tune with model.init_from
    task: Literal["segmentation", "texture"] = "segmentation"
    select_metric: Literal["val_iou", "val_dice", "val_loss", "val_mae"] = "val_iou"  # best.pt is chosen on this
    early_stopping_patience: int = 0  # epochs without improvement of select_metric; 0 = off
    max_bad_steps: int = Field(5, gt=0)  # non-finite loss or gradient: skip the step; abort after this many in a row
    compile: bool = False  # torch.compile the model (slow first epoch, faster after; CUDA mostly)
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over all ranks' batches
    overlay_every: int = Field(10, ge=0)  # log validation overlays to W&B every N epochs; 0 = never


class EvalConfig(_Section):
    threshold: float = Field(0.5, gt=0, lt=1)
    region: Literal["skin", "image"] = "skin"  # pixels the metrics are computed on
    tolerance_px: int = Field(2, ge=0)  # for tolerant precision/recall/F1: annotators disagree by a few pixels
    batch_size: int = Field(4, gt=0)
    # Tiled prediction (evaluate.py --tile/--overlap): images larger than `tile` px are read in overlapping
    # tile x tile windows blended with a ramp (engine/tiling.py), e.g. 1024 px faces by a 512 px model; 0 = off
    tile: int = Field(0, ge=0)
    overlap: int = Field(64, ge=0)  # pixels shared by neighbouring windows, blended over

    @model_validator(mode="after")
    def _rules(self) -> EvalConfig:
        self._check(self.tile == 0 or self.tile >= 32, "tile", f"0 (off) or at least 32 px, got {self.tile}")
        return self._check(
            self.tile == 0 or self.overlap < self.tile, "overlap", f"must be below eval.tile ({self.tile}), got {self.overlap}"
        )


class FaceConfig(_Section):
    # How predict.py brings a photo into the training frame; set it to how the training faces were made.
    align: Literal["ffhq", "none"] = "ffhq"  # ffhq: FFHQ crop from face-mesh eye/mouth landmarks; none: photo padded to a square
    skin: Literal["mesh", "bisenet", "none"] = "mesh"  # mesh: face oval minus eyes/brows/lips; bisenet: parsed classes; none: whole crop
    crop_scale: float = Field(
        1.0, ge=0.5, le=2
    )  # align ffhq: enlarge FFHQ's crop by this; `python -m face.calibrate DIR` measures it on training faces
    multiple_faces: Literal["largest", "skip"] = "largest"  # several faces in a photo: use the largest, or skip the photo
    min_score: float = Field(0.5, gt=0, lt=1)  # detection and face-presence scores below this are not faces
    mesh_models: str = ""  # folder of the face-mesh .tflite files; "" = models/face_mesh (make install)
    bisenet_weights: str = ""  # skin=bisenet: path to face-parsing.PyTorch's 79999_iter.pth
    skin_classes: list[int] = [1, 10]  # skin=bisenet: classes that are skin

    @model_validator(mode="after")
    def _rules(self) -> FaceConfig:
        return self._check(self.skin != "bisenet" or bool(self.skin_classes), "skin_classes", "at least one class with skin bisenet")


class LoggingConfig(_Section):
    wandb: Literal["online", "offline", "disabled"] = "offline"  # WANDB_MODE overrides; no API key -> offline
    project: str = "wrinkle-segmentation"
    entity: str | None = None


class Config(_Section):
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    face: FaceConfig = Field(default_factory=FaceConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _rules(self) -> Config:
        self._task_rules()
        self._check(
            self.model.arch != "swin_unetr" or self.eval.tile % 1024 == 0,
            "",
            f"eval.tile: swin_unetr pads every input to a multiple of 1024 px, so a {self.eval.tile} px window would cost a "
            "whole 1024 px pass; use eval.tile=0 (off) or a multiple of 1024",
        )
        side, name = (self.data.patch_size, "data.patch_size") if self.data.patch_size else (self.data.image_size, "data.image_size")
        return self._check(
            self.train.batch_size > 1 or side > 32,
            "",  # the model pads to a multiple of 32, so only 32 px gives 1 x 1
            f"train.batch_size=1 with {name}={side}: the encoder's deepest BatchNorm (1/32 of the side) would see "
            "one value per channel; use train.batch_size >= 2 or a size above 32",
        )

    def _task_rules(self) -> None:
        """What train.task asks of the other sections (texture: the texture map is the target, not an input)."""
        task, model = self.train.task, self.model
        for index, source in enumerate(self.data.sources):
            self._check(
                source.kind != "weak" or task == "texture",
                "",
                f"data.sources.{index}.kind: weak serves texture maps as targets; it needs train.task=texture "
                "(stage 1; then fine-tune on masks with model.init_from)",
            )
        if task == "segmentation":
            self._check(self.train.select_metric != "val_mae", "", "train.select_metric: val_mae is a texture-task metric; use val_iou")
            return
        self._check(model.input == "rgb", "", "model.input: with train.task=texture the texture map is the target; use model.input=rgb")
        self._check(
            model.arch not in ("moon_unet", "swin_unetr"),
            "",
            f"model.arch: {model.arch} has Moon et al.'s stage-2 input and head (RGB + texture in, two classes out); "
            "train.task=texture trains the one-output networks (attention_unet, smp_unet, unetplusplus, seed_unet)",
        )
        self._check(
            self.train.select_metric in ("val_loss", "val_mae"),
            "",
            f"train.select_metric: {self.train.select_metric} has no meaning for train.task=texture; use val_loss or val_mae",
        )
        self._check(self.scheduler.monitor == "val_loss", "", "scheduler.monitor: train.task=texture has val_loss only; use val_loss")


# ----------------------------------------------------------------------------------------------
# Plain data (YAML files, dotted overrides, checkpoints) <-> Config, with one-line errors naming the key.
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


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _schema_at(loc: tuple) -> Any:
    """The annotation at `loc` (("data", "sources", 0, "seed")) in the schema; None off it."""
    tp = Config
    for part in loc:
        if _is_section(tp) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        else:
            return None
    return tp


def _expected(tp: Any, value: Any) -> str:
    """What a field of type `tp` takes, in words."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # str | None
        return " or ".join("null" if a is type(None) else _expected(a, value) for a in typing.get_args(tp))
    if tp is float and type(value) in (int, float):
        return "a finite number"  # nan, inf, or an integer beyond float range (1e309 and up)
    words = {int: "an integer", bool: "true or false", float: "a number", str: "a string", list: "a list"}
    return f"a mapping of {tp.__name__} fields" if _is_section(tp) else words.get(typing.get_origin(tp) or tp, "another value")


_LIMITS = {
    "greater_than": "be > {gt}",
    "greater_than_equal": "be >= {ge}",
    "less_than": "be < {lt}",
    "less_than_equal": "be <= {le}",
    "too_short": "have {min_length} or more items",
    "too_long": "have {max_length} or fewer items",
}


def _describe(error: ValidationError) -> str:
    """Pydantic's first error in one line naming the dotted key, and how many more there are."""
    problems = error.errors(include_url=False)
    kind, loc, value, ctx = problems[0]["type"], tuple(problems[0]["loc"]), problems[0]["input"], problems[0].get("ctx", {})
    key = _clip(".".join(map(str, loc)))
    if kind == "config_rule":  # raised by _Section._check
        where = ".".join(part for part in (key, ctx["key"]) if part)
        text = f"{where}: {ctx['message']}" if where else ctx["message"]
    elif kind in ("extra_forbidden", "invalid_key"):  # invalid_key: not a string (train: {1: 2})
        text = f"unknown config key {key!r}; valid keys here: {', '.join(_schema_at(loc[:-1]).model_fields)}"
    elif kind == "literal_error":
        text = f"{key}: {_show(value)} is not valid; choose one of {', '.join(typing.get_args(_schema_at(loc)))}"
    elif kind in _LIMITS:
        text = f"{key}: must {_LIMITS[kind].format(**ctx)}, got {_show(value)}"
    else:
        text = f"{key or 'the config'}: expected {_expected(_schema_at(loc), value)}, got {_show(value)}"
    more = len(problems) - 1
    return text + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2's core schema (the resolvers below): only true/false are booleans, not yes/no/on/off; 3e-4 is a
    number; 1_000 and 2024-01-02 are text. A mapping may not repeat a key (YAML 1.1 readers let the second win)."""

    yaml_implicit_resolvers: typing.ClassVar[dict] = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in lines:
                    problem = f"duplicate key {_clip(key.value)!r} (first on line {lines[key.value]})"
                    raise yaml.constructor.ConstructorError(None, None, problem, key.start_mark)
                lines[key.value] = key.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:  # YAML 1.1's read 010 as eight
        text = self.construct_scalar(node)
        return int(text, 16 if text.startswith("0x") else 8 if text.startswith("0o") else 10)


for _tag, _pattern, _first in [
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    ("float", r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)", "-+.0123456789"),
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
]:
    _Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), list(_first))
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _Yaml12Loader.construct_yaml_int)


# What parsing raises on bad text: YAMLError, and from its constructors ValueError (a date
# "!!timestamp 2024-13-45", an integer of 4300+ digits, "!!float x") and RecursionError (thousands of nested "[").
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


def _read_config_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A config file's sections, on top of those of the file its top-level `base:` names (a path relative
    to it, e.g. `base: ../../config.yaml`), recursively: recipes that differ from a shared one in a few keys."""
    text = _read_config_text(path)
    try:
        loaded = yaml.load(text, Loader=_Yaml12Loader) or {}
    except _YAML_FAULTS as err:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(err)})") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    if "base" not in loaded:
        return loaded
    parent = loaded.pop("base")
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: base: must be the path of another config file (relative to this one), got {_show(parent)}")
    parent_path = (path.parent / parent).resolve()
    if parent_path in chain or parent_path == path.resolve():
        raise ConfigError(f"{path}: base: {parent} leads back to {parent_path.name} (a cycle of base files)")
    if not parent_path.is_file():
        raise ConfigError(f"{path}: base: no config file {parent_path}")
    return _merge(_read_config_file(parent_path, (*chain, path.resolve())), loaded)


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
    return cfg.model_dump()


def config_from_dict(values: dict) -> Config:
    """A Config from plain data (a saved config or a checkpoint's), validated like a file."""
    try:
        return Config.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from err


def validate(cfg: Config) -> None:
    """Check a Config again, e.g. after code changed its attributes (assignments are not checked)."""
    config_from_dict(config_to_dict(cfg))


def _set_dotted(tree: Any, dotted: str, value: Any) -> None:
    """Set `a.b.0.c` in nested dicts/lists, naming the key when a step does not exist. A key the schema knows
    that the data lacks (a list item written without it: data.sources.0.seed) starts from its default."""
    parts, node, loc = dotted.split("."), tree, []
    for depth, part in enumerate(parts):
        where = _clip(".".join(parts[: depth + 1]))
        if isinstance(node, list):
            # ASCII digits only ("²".isdigit() is true, int("²") fails), and few of them (int() refuses 4300+)
            if not (part.isascii() and part.isdigit() and len(part) <= 9) or int(part) >= len(node):
                raise ConfigError(f"{where}: no list item {_show(part)} (the list has {len(node)} items)")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"{where}: {_clip('.'.join(parts[:depth]))} is a value, not a section")
        elif part not in node:
            section, parent = _schema_at(tuple(loc)), _clip(".".join(parts[:depth])) or "the top level"
            if not (_is_section(section) and part in section.model_fields):
                # map(str): an override can put a mapping with non-string keys here (model.encoder={1: 2})
                valid = ", ".join(map(str, section.model_fields if _is_section(section) else node))
                raise ConfigError(f"unknown config key {where!r}; valid keys in {parent}: {valid}")
            node[part] = to_jsonable_python(section.model_fields[part].get_default(call_default_factory=True))
        loc.append(part)
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `key=value` strings to plain data; values are YAML 1.2 (3, 1e-4, null, off, [1, 2], text)."""
    values = _merge({}, values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {_show(item)} is not of the form key=value")
        if not key.isprintable():  # keys are echoed in messages, which must stay one line
            raise ConfigError(f"override {_show(item)}: the key has control characters (a newline or tab?)")
        try:
            value = yaml.load(raw, Loader=_Yaml12Loader)
        except _YAML_FAULTS as err:
            raise ConfigError(f"{_clip(key)}: cannot parse value {_show(raw)} ({_yaml_problem(err)})") from err
        _set_dotted(values, key.strip(), value)
    return values


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None, keep: tuple[str, ...] = ()
) -> Config:
    """Defaults, then `base` (e.g. a checkpoint's config), then the YAML file, then dotted overrides; the
    sections named in `keep` stay `base`'s whatever the file and overrides say (evaluate.py: the model is
    the checkpoint's, even under a training config that describes another one), with one warning that
    names the settings not used."""
    if keep and base is None:
        raise ValueError("load_config(keep=...) needs `base`, the config whose sections are kept")
    values = config_to_dict(Config() if base is None else config_from_dict(base))
    if path is not None:
        values = _merge(values, _read_config_file(Path(path)))
    values = apply_overrides(values, overrides or [])
    kept_config = config_to_dict(config_from_dict(base)) if keep else {}
    for section in keep:
        given, kept = values[section], kept_config[section]
        ignored = [f"{section}.{key}={_show(value)}" for key, value in given.items() if kept.get(key, object()) != value]
        if ignored:
            log.warning("not used (the %s section is the checkpoint's): %s", section, ", ".join(ignored[:6]))
        values[section] = kept
    return config_from_dict(values)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
