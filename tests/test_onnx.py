"""ONNX export and ONNX Runtime (export.py, engine/onnx_model.py, --runtime onnx): parity with PyTorch for
every architecture, self-contained metadata, int8, the same masks from predict.py, one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from config import config_to_dict, load_config
from engine.checkpoint import CheckpointError
from engine.cli import run_cli
from engine.onnx_model import KEY, OnnxNetwork, export_checkpoint, read_onnx
from tests.conftest import PROJECT_ROOT
from unet import ARCHITECTURES, build_model

TINY_TRAINING = [
    "experiment.name=onnx",
    "data.sources.0.n_images=16",
    "data.image_size=64",
    "data.split.val_fraction=0.25",
    "data.split.test_fraction=0.25",
    "model.decoder_channels=[32, 16, 16, 8, 8]",
    "train.epochs=4",
    "train.batch_size=4",
    "eval.batch_size=4",
    "logging.wandb=disabled",
]


def arch_config(arch: str):
    """A small configuration of `arch` (the published networks have fixed shapes) with random weights."""
    overrides = [f"model.arch={arch}", "model.encoder_weights=null", "model.freeze_encoder=none", "data.image_size=64"]
    if arch in ("attention_unet", "smp_unet", "unetplusplus"):
        overrides += ["model.encoder=resnet18", "model.decoder_channels=[16, 16, 16, 8, 8]"]
    if arch in ("moon_unet", "swin_unetr"):
        overrides.append("model.input=rgb_texture")
    return load_config(None, overrides)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_exports_and_onnx_runtime_matches_pytorch(arch, tmp_path):
    """fp32 ONNX Runtime probabilities within 1e-4 of PyTorch's, for batch sizes and image sizes other than
    the traced ones and not multiples of the network's stride (the padding is in the graph); the metadata
    round-trips: the config, threshold and epoch read back are the exported ones."""
    torch.manual_seed(0)
    cfg = arch_config(arch)
    model = build_model(cfg.model, encoder_weights=False).eval()
    path = export_checkpoint(model, cfg, tmp_path / f"{arch}.onnx", threshold=0.37, epoch=7, source="test.pt sha256:0")
    data, read_cfg, facts = read_onnx(path)
    assert config_to_dict(read_cfg) == config_to_dict(cfg)
    assert facts == {"threshold": 0.37, "epoch": 7, "precision": "fp32", "source": "test.pt sha256:0"}
    network = OnnxNetwork(data, str(path), torch.device("cpu"), threads=2)
    channels = 4 if cfg.model.input == "rgb_texture" else 3
    # Traced at batch 2 and 72 x 56 (padded): other batch sizes, other padding, and none (64 x 96) must work too.
    # Swin UNETR runs at 1024 px whatever the input: one shape.
    shapes = [(1, channels, 40, 52)] if arch == "swin_unetr" else [(1, channels, 40, 52), (3, channels, 61, 77), (1, channels, 64, 96)]
    generator = torch.Generator().manual_seed(1)
    for shape in shapes:
        x = torch.rand(shape, generator=generator)
        if channels == 4:
            x[0, 3] = 0  # a face without skin: Moon et al.'s all-zero-map rule must survive export too
        with torch.no_grad():
            expected = torch.sigmoid(model(x))[:, 0]
        got = network(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-4, f"{arch} {shape}: {(got - expected).abs().max().item()}"


def test_the_metadata_states_the_preprocessing_facts(tmp_path):
    """Tools other than this project read the resolution, input channels, face settings and threshold."""
    import onnx

    cfg = arch_config("moon_unet")
    path = export_checkpoint(build_model(cfg.model, encoder_weights=False).eval(), cfg, tmp_path / "m.onnx", None, None, "x")
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata[KEY + "image_size"] == "64" and metadata[KEY + "input_channels"] == "4"
    assert json.loads(metadata[KEY + "face"]) == config_to_dict(cfg)["face"]
    assert metadata[KEY + "threshold"] == "" and read_onnx(path)[2]["threshold"] is None
    assert metadata[KEY + "arch"] == "moon_unet" and metadata[KEY + "zero_non_skin"] == "true"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A quickstart-recipe model trained for a few epochs at 64 px, exported fp32 and int8 (export.py)."""
    work = tmp_path_factory.mktemp("onnx")
    overrides = TINY_TRAINING + [f"experiment.output_dir={work / 'runs'}", f"data.sources.0.root={work / 'synthetic'}"]
    overrides.append(f"data.cache_dir={work / 'cache'}")
    train = [sys.executable, str(PROJECT_ROOT / "train.py"), "--config", str(PROJECT_ROOT / "configs" / "quickstart.yaml"), *overrides]
    result = subprocess.run(train, cwd=work, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = work / result.stdout.strip().splitlines()[-1] / "checkpoints" / "best.pt"
    import export

    assert run_cli(export.main, ["--checkpoint", str(checkpoint), "--output", str(work / "fp32.onnx")]) == 0
    calibration = ["--int8", "--calibration", str(work / "synthetic" / "images"), "--calibration-limit", "8"]
    assert run_cli(export.main, ["--checkpoint", str(checkpoint), "--output", str(work / "int8.onnx"), *calibration]) == 0
    return work, checkpoint


def evaluate(work, checkpoint, name, *options):
    import evaluate as evaluate_cli

    args = ["--checkpoint", str(checkpoint), "--output", str(work / name), *options, f"data.cache_dir={work / 'cache'}"]
    assert run_cli(evaluate_cli.main, args) == 0
    return json.loads((work / name / "metrics.json").read_text())


def test_evaluate_scores_the_same_with_onnx_runtime(trained):
    """The exported file, and the checkpoint run by --runtime onnx, score as PyTorch does; the file alone
    is enough (its own config finds the data); int8 predicts, close to fp32."""
    work, checkpoint = trained
    torch_metrics = evaluate(work, checkpoint, "eval_torch")
    onnx_metrics = evaluate(work, work / "fp32.onnx", "eval_onnx")
    exported_on_the_fly = evaluate(work, checkpoint, "eval_runtime_onnx", "--runtime", "onnx", "--threads", "1")
    for metrics in (onnx_metrics, exported_on_the_fly):
        assert metrics["n_images"] == torch_metrics["n_images"] == 4
        for key in ("iou", "dice", "precision", "recall", "auc"):
            assert metrics[key] == pytest.approx(torch_metrics[key], abs=1e-3), key
        assert metrics["runtime"].startswith("onnxruntime ") and "ExecutionProvider" in metrics["runtime"]  # CPU, or CUDA first
    assert torch_metrics["runtime"] == "torch"
    int8 = evaluate(work, work / "int8.onnx", "eval_int8")
    assert read_onnx(work / "int8.onnx")[2]["precision"] == "int8 (calibrated on 8 faces at 64 px)"
    assert int8["onnx_precision"].startswith("int8") and onnx_metrics["onnx_precision"] == "fp32"
    assert int8["onnx_source"].startswith("best.pt sha256:")
    assert (work / "int8.onnx").stat().st_size < (work / "fp32.onnx").stat().st_size / 2  # int8 weights
    baseline = evaluate(work, work / "fp32.onnx", "eval_baseline", "--baseline", "ridge")  # the .onnx names the data
    assert baseline["n_images"] == 4 and baseline["model"].startswith("baseline")
    print("int8 vs torch:", {k: round(int8[k] - torch_metrics[k], 4) for k in ("iou", "dice")})
    assert abs(int8["dice"] - torch_metrics["dice"]) < 0.05  # a 4-epoch 64 px model: +0.027 when written


def test_int8_calibration_faces_are_what_prediction_feeds_the_model(trained):
    """Calibration prepares faces as predict.py does, for a texture-input model with skin-zeroed RGB and
    given skin masks, at a --size other than the training one: the same arrays, bit for bit."""
    from engine.segment_photos import calibration_inputs, model_batch, read_with_face_mask

    work, _ = trained
    cfg = load_config(None, ["model.input=rgb_texture", "data.image_size=48", "data.zero_non_skin=true"])
    images, masks = work / "synthetic" / "images", work / "synthetic" / "face_masks"
    calibration = calibration_inputs(cfg, images, masks, limit=3, size=80)
    pending = [read_with_face_mask(path, masks, 80, path.stem) for path in sorted(images.iterdir())[:3]]
    fed = model_batch(pending, cfg)  # what PhotoSegmenter hands the model (as uint8; to_model_input divides by 255)
    assert [c.shape for c in calibration] == [(1, 4, 80, 80)] * 3 and all(c.dtype == np.float32 for c in calibration)
    assert torch.equal(torch.from_numpy(np.concatenate(calibration)), fed.float() / 255)
    assert (calibration[0][0, 3] > 0).any() and (calibration[0][0, :3] == 0).any()  # a texture channel; skin-zeroed RGB


def predict(checkpoint, inputs, output, *options):
    import predict as predict_cli

    assert run_cli(predict_cli.main, ["--checkpoint", str(checkpoint), "--input", str(inputs), "--output", str(output), *options]) in (0, 3)
    with open(output / "summary.csv", newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def differing_mask_pixels(first, second, rows) -> dict[str, float]:
    """Per photo: the share of pixels whose mask differs between two predict.py outputs."""
    shares = {}
    for name, row in rows.items():
        if row["status"] == "ok":
            stem = name.rsplit(".", 1)[0]
            a, b = (cv2.imread(str(folder / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) for folder in (first, second))
            shares[name] = float((a != b).mean())
    return shares


def test_predict_writes_the_same_masks_with_onnx_runtime_on_real_photos(trained, shared_data):
    """Real photos (any size and framing) through predict.py: the .onnx file gives the torch masks and
    summary.csv, but for a handful of pixels whose probability sits on the threshold; int8 predicts too."""
    work, checkpoint = trained
    photos = shared_data / "photos"
    torch_rows = predict(checkpoint, photos, work / "pred_torch")
    onnx_rows = predict(work / "fp32.onnx", photos, work / "pred_onnx")
    assert [r["status"] for r in torch_rows.values()] == [r["status"] for r in onnx_rows.values()]
    assert any(r["status"] == "ok" for r in torch_rows.values())
    shares = differing_mask_pixels(work / "pred_torch", work / "pred_onnx", torch_rows)
    assert max(shares.values()) <= 1e-4, shares
    for name, row in torch_rows.items():
        for column in ("width", "height", "skin_pixels", "threshold"):
            assert onnx_rows[name][column] == row[column]
    int8_rows = predict(work / "int8.onnx", photos, work / "pred_int8")
    assert [r["status"] for r in int8_rows.values()] == [r["status"] for r in torch_rows.values()]
    int8_shares = differing_mask_pixels(work / "pred_torch", work / "pred_int8", torch_rows)
    print("int8 vs torch, share of mask pixels differing:", int8_shares)
    assert max(int8_shares.values()) < 0.05  # about 1 % when written


def test_predict_reads_larger_crops_in_tiles_with_either_runtime_and_tta(trained, shared_data, capsys):
    """--size 128 --tile 64: faces cropped at twice the training size, read in 64 px windows; PyTorch and
    ONNX Runtime agree with each other, with mirrored test-time augmentation, and a tile that does not
    fit below the crop is refused in one line."""
    work, checkpoint = trained
    photos = shared_data / "photos"
    options = ["--size", "128", "--tile", "64", "--overlap", "16", "--tta", "hflip"]
    torch_rows = predict(checkpoint, photos, work / "tiled_torch", *options)
    onnx_rows = predict(work / "fp32.onnx", photos, work / "tiled_onnx", *options)
    whole_rows = predict(checkpoint, photos, work / "whole_128", "--size", "128", "--tta", "hflip")
    unmirrored_rows = predict(checkpoint, photos, work / "tiled_no_tta", *options[:-2])
    assert max(differing_mask_pixels(work / "tiled_torch", work / "tiled_onnx", torch_rows).values()) <= 1e-4
    assert onnx_rows.keys() == torch_rows.keys() == whole_rows.keys() == unmirrored_rows.keys()
    # Tiles are not the whole image (the receptive field is cut at window edges), but they read the same
    # face; and the options are not ignored: tiles, and the mirrored prediction, each change some pixels.
    tiled_vs_whole = differing_mask_pixels(work / "tiled_torch", work / "whole_128", torch_rows)
    mirrored_vs_not = differing_mask_pixels(work / "tiled_torch", work / "tiled_no_tta", torch_rows)
    print("tiled vs whole:", tiled_vs_whole, "hflip vs none:", mirrored_vs_not)
    assert 0 < max(tiled_vs_whole.values()) < 0.2 and max(mirrored_vs_not.values()) > 0
    assert {(r["width"], r["height"]) for r in torch_rows.values()} == {(r["width"], r["height"]) for r in whole_rows.values()}

    import predict as predict_cli

    capsys.readouterr()
    args = ["--checkpoint", str(checkpoint), "--input", str(photos), "--output", str(work / "x"), "--tile", "64", "--overlap", "16"]
    assert run_cli(predict_cli.main, args) == 1
    assert "error: --tile 64 is not below the face size (64 px): nothing to tile; pass --size above it" in capsys.readouterr().err


def foreign_onnx(path):
    """A valid ONNX model from another program: an identity, no metadata."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def strip_metadata(source, target, keep=()):
    import onnx

    proto = onnx.load(str(source))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key in keep]
    del proto.metadata_props[:]
    for key, value in kept:
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(target))
    return target


def test_a_bad_onnx_file_is_a_one_line_error(trained, tmp_path, capsys):
    """Truncated, empty, another program's model, missing or broken metadata, or run with --runtime torch:
    `error: <one line naming the file>` and exit 1, never a traceback."""
    import evaluate as evaluate_cli

    work, _ = trained
    good = (work / "fp32.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(good[: len(good) // 3])
    (tmp_path / "empty.onnx").write_bytes(b"")
    renamed_config = good.replace(b"zero_non_skin", b"zero_non_skim")
    (tmp_path / "bad_config.onnx").write_bytes(renamed_config)
    cases = {
        tmp_path / "truncated.onnx": "not a readable ONNX model",
        tmp_path / "empty.onnx": "empty",
        foreign_onnx(tmp_path / "other.onnx"): "no wrinkle-segmentation metadata",
        strip_metadata(work / "fp32.onnx", tmp_path / "no_metadata.onnx"): "no wrinkle-segmentation metadata",
        tmp_path / "bad_config.onnx": "stored config does not fit",
        tmp_path / "missing.onnx": "not found",
    }
    for path, message in cases.items():
        capsys.readouterr()
        assert run_cli(evaluate_cli.main, ["--checkpoint", str(path), "--output", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and str(path) in err and "\n" not in err, err
    assert run_cli(evaluate_cli.main, ["--checkpoint", str(work / "fp32.onnx"), "--output", str(tmp_path / "o"), "--runtime", "torch"]) == 1
    assert "use --runtime onnx" in capsys.readouterr().err
    # The right metadata on another graph: its inputs and outputs give it away.
    import onnx

    proto = onnx.load(str(foreign_onnx(tmp_path / "other2.onnx")))
    for prop in onnx.load(str(work / "fp32.onnx")).metadata_props:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(proto, str(tmp_path / "other_with_metadata.onnx"))
    data, _, _ = read_onnx(tmp_path / "other_with_metadata.onnx")
    with pytest.raises(CheckpointError, match="other_with_metadata.onnx: not a wrinkle model exported by export.py"):
        OnnxNetwork(data, "other_with_metadata.onnx", torch.device("cpu"), 1)


def test_export_never_replaces_a_file_it_did_not_write(trained, tmp_path, capsys):
    import export

    _, checkpoint = trained
    target = tmp_path / "model.onnx"
    target.write_text("someone's notes")
    args = ["--checkpoint", str(checkpoint), "--output", str(target)]
    assert run_cli(export.main, args) == 1 and "exists; pass --overwrite" in capsys.readouterr().err
    assert run_cli(export.main, [*args, "--overwrite"]) == 1 and "not written by export.py" in capsys.readouterr().err
    assert target.read_text() == "someone's notes"
    with pytest.raises(SystemExit):  # argparse: --int8 without --calibration
        export.parse_args([*args, "--int8"])
