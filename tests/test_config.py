"""Config schema: defaults, YAML loading, dotted overrides and their errors."""

from __future__ import annotations

import pytest
import yaml

from config import Config, ConfigError, config_from_dict, config_to_dict, load_config
from tests.conftest import PROJECT_ROOT


def test_shipped_configs_load():
    full = load_config(PROJECT_ROOT / "config.yaml")
    assert full.model.encoder == "resnet50" and full.train.epochs == 100 and full.train.batch_size == 8
    assert full.optim.lr == pytest.approx(1e-4) and full.scheduler.patience == 15 and full.train.grad_clip == 1.0
    assert full.data.image_size == 512 and full.data.train_mask_dilation == 3 and full.train.amp == "off"
    quick = load_config(PROJECT_ROOT / "configs" / "quickstart.yaml")
    assert quick.data.sources[0].kind == "synthetic" and quick.model.encoder_weights is None
    combined = load_config(PROJECT_ROOT / "configs" / "ffhq_wrinkle_kim.yaml")
    assert [s.kind for s in combined.data.sources] == ["ffhq_wrinkle", "kim"] and combined.data.split.method == "files"


def test_overrides_apply_with_types():
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "model.encoder=resnet18",
            "optim.lr=3e-4",
            "model.encoder_weights=null",
            "model.decoder_channels=[64, 32, 16]",
            "data.sources.0.root=/tmp/x",
            "train.amp=bf16",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.model.encoder == "resnet18" and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.encoder_weights is None and cfg.model.decoder_channels == [64, 32, 16]
    assert cfg.data.sources[0].root == "/tmp/x" and cfg.train.amp == "bf16"
    assert isinstance(cfg.optim.lr, float)
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0  # an int where a float is expected is fine


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epoch=3", "'train.epoch'"),  # typo: names the key and lists valid ones
        ("trian.epochs=3", "'trian'"),
        ("train.epochs=three", "train.epochs: expected an integer"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.channels_last=yes please", "train.channels_last: expected true or false"),
        ("train.amp=fp8", "choose one of off, bf16, fp16"),
        ("model.freeze_encoder=some", "choose one of none, all, partial"),
        ("data.sources.3.root=x", "data.sources.3: no list item"),
        ("train.epochs", "not of the form key=value"),
        ("train.epochs.x=1", "is a value, not a section"),
        ("data.split.val_fraction=0.95", "val_fraction + test_fraction"),
        ("scheduler.monitor=val_iou", "scheduler.mode: val_iou needs mode max"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_unknown_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'.*epochs"):
        load_config(path)
    path.write_text("data:\n  sources:\n    - kind: synthetic\n      rooot: x\n")
    with pytest.raises(ConfigError, match="data.sources.0.rooot"):
        load_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_file_then_overrides_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  batch_size: 2\n")
    cfg = load_config(path, ["train.epochs=9"])
    assert cfg.train.epochs == 9 and cfg.train.batch_size == 2 and cfg.train.grad_clip == 1.0


def test_round_trip_through_plain_data_and_yaml():
    cfg = load_config(None, ["model.encoder=resnet34", "data.sources.0.n_images=17"])
    plain = config_to_dict(cfg)
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(plain))) == cfg
    assert config_from_dict(config_to_dict(Config())) == Config()


@pytest.mark.parametrize(
    "override",
    ["optim.lr=.inf", "optim.lr=inf", "optim.lr=nan", "loss.focal_alpha=.nan", "optim.betas=[0.9, .inf]", "scheduler.min_lr=-.inf"],
)
def test_non_finite_numbers_are_refused(override, tmp_path):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=f"{key.replace('.', '[.]')}.* expected a finite number"):
        load_config(None, [override])
    section, name = key.split(".")[:2]
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: {override.partition('=')[2]}\n")
    with pytest.raises(ConfigError, match="expected a finite number"):
        load_config(path)


def _one_line_config_error(path, overrides=None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_a_config_file_that_is_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  # réglage\n  epochs: 2\n".encode("latin-1"))
    assert _one_line_config_error(path) == f"{path}: not UTF-8 text: byte 0xE9 at position 12 (line 2); save the file as UTF-8"
    path.write_text("train:\n  epochs: 2\n", encoding="utf-16")
    assert "(it looks like UTF-16): byte 0xFF at position 0 (line 1); save the file as UTF-8" in _one_line_config_error(path)
    path.write_bytes(b"\xef\xbb\xbftrain:\n  epochs: 2\n")  # UTF-8 with Notepad's byte-order mark is fine
    assert load_config(path).train.epochs == 2


def test_a_config_path_that_is_a_folder_or_unreadable_is_one_line(tmp_path, monkeypatch):
    assert _one_line_config_error(tmp_path) == f"{tmp_path}: is a folder, not a config file; pass the path of a YAML file"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\n")
    real_open = type(path).open

    def no_permission(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(type(path), "open", no_permission)  # chmod cannot stop root, who runs CI containers
    assert _one_line_config_error(path) == f"cannot read config file {path}: permission denied"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train:\n  epochs: !!timestamp 2024-13-45\n", "not valid YAML (month must be in 1..12)"),  # PyYAML: ValueError
        ("optim:\n  lr: !!float x\n", "not valid YAML (could not convert string to float: 'x')"),
        ("train:\n  epochs: " + "9" * 5000 + "\n", "not valid YAML (Exceeds the limit (4300 digits)"),
        ("data:\n  sources: " + "[" * 1000 + "]" * 1000 + "\n", "not valid YAML (nested too deeply)"),  # RecursionError
        ("train: {epochs: 1\n", "not valid YAML (line 2, column 1: expected ',' or '}', but got '<stream end>')"),
        ("optim:\n  lr: " + "9" * 400 + "\n", "optim.lr: expected a finite number, got 9999"),  # OverflowError in isfinite
    ],
    ids=["bad-date", "bad-float-tag", "5000-digit-int", "deep-nesting", "unclosed-brace", "int-beyond-float"],
)
def test_yaml_the_loader_could_not_take_is_a_config_error(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert fragment in _one_line_config_error(path)


def test_alias_bombs_give_a_short_message(tmp_path):
    """Aliases nest 10**6 numbers in a few lines of YAML; the message shows a cut-short repr, not all of them."""
    levels = ["    - &l0 [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"] + [f"    - &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 7)]
    path = tmp_path / "bomb.yaml"
    path.write_text("train:\n  epochs:\n" + "\n".join(levels) + "\n")
    message = _one_line_config_error(path)
    assert message.startswith("train.epochs: expected an integer, got [[0, 1, 2, 3, ...], [[") and len(message) < 200, message[:300]


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["data.sources.²=x"], "data.sources.²: no list item '²'"),  # "²".isdigit() is true, int("²") a ValueError
        (["data.sources." + "9" * 5000 + "=x"], "no list item '9999"),  # int() refuses 4300+ digits
        (["model.encoder={1: 2}", "model.encoder.x=3"], "unknown config key 'model.encoder.x'; valid keys in model.encoder: 1"),  # int keys
        (["data.sources.0.root.a\nb=1"], "override 'data.sources.0.root.a\\nb=1': the key has control characters"),
        (["train.epochs=!!timestamp 2024-13-45"], "train.epochs: cannot parse value '!!timestamp 2024-13-45' (month must be in 1..12)"),
        (["train.epochs=" + "[" * 1000], "train.epochs: cannot parse value '[[[["),
    ],
    ids=["unicode-digit", "5000-digit-index", "int-keys", "newline-in-key", "bad-date", "deep-nesting"],
)
def test_overrides_the_loader_could_not_take_are_config_errors(overrides, fragment):
    assert fragment in _one_line_config_error(None, overrides)


# -- YAML 1.2 values, duplicate keys, list items, pydantic-backed checks ------------------------------


def test_off_on_yes_no_are_text_as_in_yaml_1_2(tmp_path):
    assert load_config(None, ["train.amp=off"]).train.amp == "off"  # YAML 1.1 read False: "not valid; choose one of"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\nexperiment:\n  name: yes\nmodel:\n  encoder: no\n")
    cfg = load_config(path)
    assert (cfg.train.amp, cfg.experiment.name, cfg.model.encoder) == ("off", "yes", "no")
    assert load_config(None, ["experiment.name=yes", "model.encoder=no"]).experiment.name == "yes"
    flags = load_config(None, ["train.channels_last=FALSE", "train.compile=True", "data.zero_non_skin=false"])
    assert (flags.train.channels_last, flags.train.compile, flags.data.zero_non_skin) == (False, True, False)
    with pytest.raises(ConfigError, match="^train.channels_last: expected true or false, got 'yes'$"):
        load_config(None, ["train.channels_last=yes"])
    with pytest.raises(ConfigError, match="^train.amp: 'on' is not valid; choose one of off, bf16, fp16$"):
        load_config(None, ["train.amp=on"])


def test_numbers_and_nulls_follow_yaml_1_2():
    cfg = load_config(
        None, ["train.epochs=010", "train.batch_size=0x10", "eval.batch_size=0o10", "optim.lr=3e-4", "model.encoder_weights="]
    )
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.eval.batch_size, cfg.optim.lr) == (10, 16, 8, 3e-4)  # YAML 1.1: 010 was 8
    assert cfg.model.encoder_weights is None and load_config(None, ["model.init_from=~"]).model.init_from is None
    with pytest.raises(ConfigError, match="^train.epochs: expected an integer, got '1_000'$"):  # YAML 1.1: 1000
        load_config(None, ["train.epochs=1_000"])
    assert config_from_dict({"optim": {"lr": "3e-4"}}).optim.lr == pytest.approx(3e-4)  # a YAML 1.1 reader's text


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epochs: 2\ntrain:\n  batch_size: 3\n", "line 3, column 1: duplicate key 'train' (first on line 1)"),
        ("train:\n  epochs: 2\n  batch_size: 3\n  epochs: 4\n", "line 4, column 3: duplicate key 'epochs' (first on line 2)"),
        (
            "data:\n  sources:\n    - kind: folder\n      root: a\n      root: b\n",
            "line 5, column 7: duplicate key 'root' (first on line 4)",
        ),
        ("train: {epochs: 2, epochs: 3}\n", "line 1, column 20: duplicate key 'epochs' (first on line 1)"),
    ],
    ids=["two-sections", "key-in-section", "key-in-list-item", "flow-mapping"],
)
def test_a_repeated_key_names_the_key_and_its_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert _one_line_config_error(path) == f"{path}: not valid YAML ({message})"


def test_a_repeated_key_in_an_override_value_is_refused():
    message = _one_line_config_error(None, ["train={epochs: 2, epochs: 3}"])
    assert message == "train: cannot parse value '{epochs: 2, epochs: 3}' (line 1, column 13: duplicate key 'epochs' (first on line 1))"


def test_list_items_take_every_key_their_schema_knows(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  sources:\n    - kind: folder\n      root: faces\n")
    cfg = load_config(path, ["data.sources.0.seed=3", "data.sources.0.n_images=5"])  # keys the file's item left out
    assert (cfg.data.sources[0].kind, cfg.data.sources[0].seed, cfg.data.sources[0].n_images) == ("folder", 3, 5)
    cfg = load_config(
        None,
        ["data.sources=[{kind: folder, root: x}, {kind: synthetic}]", "data.sources.1.seed=7", "train={epochs: 3}", "train.batch_size=2"],
    )
    assert cfg.data.sources[1].seed == 7 and (cfg.train.epochs, cfg.train.batch_size) == (3, 2)
    assert _one_line_config_error(None, ["data.sources.0.seed=x"]) == "data.sources.0.seed: expected an integer, got 'x'"
    assert _one_line_config_error(path, ["data.sources.0.seed=true"]) == "data.sources.0.seed: expected an integer, got True"
    assert _one_line_config_error(path, ["data.sources.0.kind=kim"]) == "data.sources.0.images: the FFHQ image folder is needed for kim"
    assert _one_line_config_error(path, ["data.sources.0.sed=3"]).startswith(
        "unknown config key 'data.sources.0.sed'; valid keys in data.sources.0: kind, root, images, masks, skin_classes, n_images, seed"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.image_size=16", "data.image_size: must be >= 32, got 16"),
        ("model.dropout=1.5", "model.dropout: must be < 1.0, got 1.5"),
        ("face.crop_scale=3", "face.crop_scale: must be <= 2.0, got 3"),
        ("data.sources.0.n_images=0", "data.sources.0.n_images: must be > 0, got 0"),
        ("optim.betas=[0.9]", "optim.betas: must have 2 or more items, got [0.9]"),
        ("model.decoder_channels=[8, 8, 8, 8, 8, 8]", "model.decoder_channels: must have 5 or fewer items, got [8, 8, 8, 8, ...]"),
        ("data.sources=[]", "data.sources: must have 1 or more items, got []"),
        ("loss.focal_weight=-1", "loss.focal_weight: must be >= 0.0, got -1"),
        ("data.split.val_fraction=0.95", "data.split: val_fraction + test_fraction must be below 1, got 0.95 + 0.1"),
        ("data.patch_size=16", "data.patch_size: 0 (off) or between 32 and data.image_size (512), got 16"),
        ("model.init_from=3", "model.init_from: expected a string or null, got 3"),
    ],
)
def test_range_and_rule_errors_are_one_line(override, message):
    assert _one_line_config_error(None, [override]) == message


def test_several_problems_report_the_first_and_count_the_rest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: x\n  batch_size: y\n  amp: fp8\n")
    assert _one_line_config_error(path) == "train.epochs: expected an integer, got 'x' (and 2 more problems)"


def test_sections_stay_mutable_and_validate_checks_them_again():
    from config import FaceConfig, validate

    cfg = load_config(None)
    cfg.train.epochs = 0  # assignments are not checked...
    with pytest.raises(ConfigError, match="^train.epochs: must be > 0, got 0$"):
        validate(cfg)  # ...until validate (or config_from_dict) sees them
    face = FaceConfig(align="none", skin="none", crop_scale=1.2)
    assert face.model_copy(update={"skin": "mesh"}).skin == "mesh" and face.crop_scale == 1.2


def test_a_config_file_builds_on_its_base(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.yaml").write_text("data:\n  image_size: 256\ntrain:\n  epochs: 7\n  batch_size: 3\n")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mid.yaml").write_text("base: ../shared/base.yaml\ntrain:\n  epochs: 9\n")
    (tmp_path / "recipes" / "top.yaml").write_text("base: mid.yaml\nmodel:\n  arch: smp_unet\n")
    cfg = load_config(tmp_path / "recipes" / "top.yaml", ["train.batch_size=5"])
    assert (cfg.data.image_size, cfg.train.epochs, cfg.train.batch_size, cfg.model.arch) == (256, 9, 5, "smp_unet")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("base: missing.yaml\n", r"top.yaml: base: no config file .*missing.yaml"),
        ("base: top.yaml\n", r"top.yaml: base: top.yaml leads back to top.yaml"),
        ("base: loop.yaml\n", r"leads back to top.yaml \(a cycle of base files\)"),
        ("base: [a.yaml]\n", r"top.yaml: base: must be the path of another config file"),
    ],
)
def test_a_bad_base_is_a_one_line_error(tmp_path, text, match):
    (tmp_path / "loop.yaml").write_text("base: top.yaml\n")
    (tmp_path / "top.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(tmp_path / "top.yaml")
    assert "\n" not in str(err.value)


def test_every_shipped_config_loads():
    for path in sorted((PROJECT_ROOT / "configs").rglob("*.yaml")) + [PROJECT_ROOT / "config.yaml"]:
        load_config(path)


def test_kept_sections_stay_the_bases_and_what_is_dropped_is_named(tmp_path, caplog):
    """evaluate.py's rule: the model is the checkpoint's; model settings from --config or overrides (a typo
    included) are not used, and one warning line says which."""
    import logging

    checkpoint = config_to_dict(
        load_config(None, ["model.arch=moon_unet", "model.input=rgb_texture", "model.encoder_weights=null", "model.freeze_encoder=none"])
    )
    (tmp_path / "eval.yaml").write_text("model:\n  inptu: rgb\ndata:\n  image_size: 64\n")
    with caplog.at_level(logging.WARNING, logger="config"):
        cfg = load_config(tmp_path / "eval.yaml", ["model.input=rgb"], base=checkpoint, keep=("model",))
    assert (cfg.model.arch, cfg.model.input, cfg.data.image_size) == ("moon_unet", "rgb_texture", 64)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "model.inptu='rgb'" in warning and "model.input='rgb'" in warning and "\n" not in warning
    with pytest.raises(ValueError, match="needs `base`"):
        load_config(None, keep=("model",))
