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
    cfg = load_config(None, ["train.epochs=3", "model.encoder=resnet18", "optim.lr=3e-4", "model.encoder_weights=null",
                             "model.decoder_channels=[64, 32, 16]", "data.sources.0.root=/tmp/x", "train.amp=bf16"])
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


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.lr=inf", "optim.lr=nan", "loss.focal_alpha=.nan", "optim.betas=[0.9, .inf]", "scheduler.min_lr=-.inf"])
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
        ("train:\n  epochs: 2024-13-45\n", "not valid YAML (month must be in 1..12)"),  # PyYAML: ValueError
        ("optim:\n  lr: !!float x\n", "not valid YAML (could not convert string to float: 'x')"),
        ("train:\n  epochs: " + "9" * 5000 + "\n", "not valid YAML (Exceeds the limit (4300 digits)"),
        ("data:\n  sources: " + "[" * 1000 + "]" * 1000 + "\n", "not valid YAML (nested too deeply)"),  # RecursionError
        ("train: {epochs: 1\n", "not valid YAML (line 2, column 1: expected ',' or '}', but got '<stream end>')"),
        ("optim:\n  lr: " + "9" * 400 + "\n", "optim.lr: expected a finite number, got 9999"),  # OverflowError in isfinite
    ],    ids=["bad-date", "bad-float-tag", "5000-digit-int", "deep-nesting", "unclosed-brace", "int-beyond-float"],
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
        (["train={1: 2}", "train.epochs=3"], "unknown config key 'train.epochs'; valid keys in train: 1"),  # join of int keys
        (["data.sources.0.root.a\nb=1"], "override 'data.sources.0.root.a\\nb=1': the key has control characters"),
        (["train.epochs=2024-13-45"], "train.epochs: cannot parse value '2024-13-45' (month must be in 1..12)"),
        (["train.epochs=" + "[" * 1000], "train.epochs: cannot parse value '[[[["),
    ],    ids=["unicode-digit", "5000-digit-index", "int-keys", "newline-in-key", "bad-date", "deep-nesting"],
)
def test_overrides_the_loader_could_not_take_are_config_errors(overrides, fragment):
    assert fragment in _one_line_config_error(None, overrides)
