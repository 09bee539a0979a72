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
