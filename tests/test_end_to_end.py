"""The whole pipeline through its command lines: train -> evaluate -> predict, on tiny synthetic data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from data.image_io import write_png
from tests.conftest import PROJECT_ROOT

TINY = [
    "experiment.name=tiny",
    "data.sources.0.n_images=12",
    "data.image_size=64",
    "data.num_workers=0",
    "data.split.val_fraction=0.25",
    "data.split.test_fraction=0.25",
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "model.decoder_channels=[32, 16, 16, 8, 8]",
    "model.freeze_encoder=none",
    "train.epochs=2",
    "train.batch_size=3",
    "eval.batch_size=3",
    "logging.wandb=disabled",
]


def run(args, cwd, env, expect=0):
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}"
    return result


def extract_faces(inputs, output, *options, cwd, env, expect=0):
    """face_parsing_extraction.py on `inputs`, writing `output`."""
    return run(
        [str(PROJECT_ROOT / "face_parsing_extraction.py"), "--input", str(inputs), "--output", str(output), *options], cwd, env, expect
    )


def evaluate_cli(checkpoint, output, *options, cwd, env, expect=0):
    """evaluate.py on `checkpoint`, writing `output`."""
    return run([str(PROJECT_ROOT / "evaluate.py"), "--checkpoint", str(checkpoint), "--output", str(output), *options], cwd, env, expect)


def predict_cli(checkpoint, inputs, output, *options, cwd, env, expect=0):
    """predict.py with `checkpoint` on `inputs`, writing `output`."""
    args = ["--checkpoint", str(checkpoint), "--input", str(inputs), "--output", str(output), *options]
    return run([str(PROJECT_ROOT / "predict.py"), *args], cwd, env, expect)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny training run through train.py, shared by the tests below."""
    import os

    work = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    overrides = TINY + [f"experiment.output_dir={work / 'runs'}", f"data.sources.0.root={work / 'synthetic'}"]
    result = run([str(PROJECT_ROOT / "train.py"), "--config", str(PROJECT_ROOT / "configs" / "quickstart.yaml"), *overrides], work, env)
    run_dir = result.stdout.strip().splitlines()[-1]
    from pathlib import Path

    return Path(run_dir), work, env


def test_train_writes_the_run_folder_contract(trained_run):
    run_dir, work, _ = trained_run
    assert run_dir.parent == work / "runs" and run_dir.name.startswith("tiny-")
    assert list((work / "runs").iterdir()) == [run_dir]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["data"]["image_size"] == 64
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert cv2.imread(str(run_dir / "curves.png")).shape == (360, 1200, 3)  # the plots of metrics.csv beside it
    for column in ("train_loss", "val_loss", "val_iou", "val_dice", "val_precision", "val_recall", "val_auc", "lr"):
        assert all(np.isfinite(float(r[column])) for r in rows), column
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert best["config"] == saved and last["epoch"] == 2
    assert 0 < best["threshold"] < 1
    best_row = max(rows, key=lambda r: float(r["val_iou"]))
    assert best["epoch"] == int(best_row["epoch"])
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))  # no temporary files left behind


def test_evaluate_writes_metrics_and_pictures(trained_run):
    run_dir, work, env = trained_run
    out = work / "eval"
    evaluate_cli(run_dir / "checkpoints" / "best.pt", out, "--threshold", "auto", cwd=work, env=env)
    report = json.loads((out / "metrics.json").read_text())
    for key in ("iou", "dice", "precision", "recall", "auc", "threshold", "n_images", "region", "per_image_iou", "definitions"):
        assert key in report, key
    assert report["n_images"] == 3 and report["region"] == "skin" and report["split"] == "test"
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 3
    tp, fp, fn = (sum(int(r[k]) for r in rows) for k in ("tp", "fp", "fn"))
    assert report["iou"] == pytest.approx(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
    for picture in ("roc.png", "pr.png", "threshold.png"):
        assert (out / picture).stat().st_size > 1000
    assert len(list((out / "overlays").glob("*.png"))) >= 3
    for key in ("tolerant_precision", "tolerant_recall", "tolerant_f1", "cldice", "average_precision"):
        assert key in report and key in report["definitions"], key
    assert "per_image_cldice" in report
    assert report["tolerance_px"] == 2 and report["tta"] == "none"
    assert set(rows[0]) >= {"tolerant_f1", "cldice"}


def test_evaluate_with_tta_and_the_ridge_baseline(trained_run):
    run_dir, work, env = trained_run
    checkpoint = str(run_dir / "checkpoints" / "best.pt")
    evaluate_cli(checkpoint, work / "eval_tta", "--tta", "hflip", "--split", "val", cwd=work, env=env)
    report = json.loads((work / "eval_tta" / "metrics.json").read_text())
    assert report["tta"] == "hflip" and report["split"] == "val"
    run(
        [str(PROJECT_ROOT / "evaluate.py"), "--baseline", "ridge", "--checkpoint", checkpoint, "--output", str(work / "eval_ridge")],
        work,
        env,
    )
    ridge = json.loads((work / "eval_ridge" / "metrics.json").read_text())
    assert ridge["model"].startswith("baseline: multi-scale Hessian ridge") and ridge["threshold_chosen_on"].startswith("val (3 images")
    assert ridge["n_images"] == 3 and 0 < ridge["threshold"] < 1


def test_predict_handles_photos_text_and_corrupt_files(trained_run, shared_data_or_none):
    run_dir, work, env = trained_run
    inputs = work / "photos"
    from data.synthetic import render_face

    write_png(inputs / "face_a.png", render_face(99, 90, 70).image)  # non-square, another size
    cv2.imwrite(str(inputs / "face_b.jpg"), cv2.cvtColor(render_face(99, 64, 64, 1).image, cv2.COLOR_RGB2BGR))
    write_png(inputs / "face_b.png", render_face(99, 64, 64, 1).image)  # same stem as face_b.jpg: would overwrite its outputs
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "truncated.png").write_bytes((inputs / "face_a.png").read_bytes()[:200])
    if shared_data_or_none is not None:
        photo = shared_data_or_none / "photos" / "grace_hopper.jpg"
        (inputs / "grace_hopper.jpg").write_bytes(photo.read_bytes())
    out = work / "pred"
    predict_cli(run_dir / "checkpoints" / "best.pt", inputs, out, cwd=work, env=env, expect=3)
    rows = {r["file"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["notes.txt"]["status"] == "skipped" and rows["truncated.png"]["status"] == "error"
    assert "truncated.png" in rows["truncated.png"]["message"]
    assert rows["face_b.png"]["status"] == "name_clash" and "face_b.jpg" in rows["face_b.png"]["message"]
    images = [name for name in rows if rows[name]["status"] == "ok"]
    assert set(images) >= {"face_a.png", "face_b.jpg"}
    for name in images:
        stem = name.rsplit(".", 1)[0]
        mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        source = cv2.imread(str(inputs / name))
        assert mask.shape == source.shape[:2] and set(np.unique(mask)) <= {0, 255}
        assert cv2.imread(str(out / "overlays" / f"{stem}.png")).shape == source.shape
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(f"{n.rsplit('.', 1)[0]}.png" for n in images)


@pytest.fixture
def shared_data_or_none():
    from tests.conftest import SHARED_DATA

    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "predict.py", "face_parsing_extraction.py", "export.py", "app.py"])
def test_help_works_without_data(script, tmp_path, cli_env):
    result = run([str(PROJECT_ROOT / script), "--help"], tmp_path, cli_env)
    assert "usage" in result.stdout.lower()


def test_a_wrong_config_key_fails_in_one_line(tmp_path, cli_env):
    result = run(
        [str(PROJECT_ROOT / "train.py"), "--config", str(PROJECT_ROOT / "configs" / "quickstart.yaml"), "train.epoch=3"],
        tmp_path,
        cli_env,
        expect=1,
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.epoch" in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "runs").exists()


def test_evaluate_rejects_a_file_that_is_not_a_checkpoint(tmp_path, cli_env):
    (tmp_path / "fake.pt").write_bytes(b"garbage")
    result = run(
        [str(PROJECT_ROOT / "evaluate.py"), "--checkpoint", str(tmp_path / "fake.pt"), "--output", str(tmp_path / "o")],
        tmp_path,
        cli_env,
        expect=1,
    )
    assert result.stderr.strip().startswith("error:") and "fake.pt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_face_parsing_extraction_without_alignment_or_parsing(tmp_path, cli_env):
    inputs = tmp_path / "in"
    write_png(inputs / "wide.png", np.full((60, 90, 3), 200, np.uint8))
    (inputs / "readme.txt").write_text("x")
    extract_faces(inputs, tmp_path / "out", "--size", "64", "--align", "none", "--backend", "none", cwd=tmp_path, env=cli_env)
    assert cv2.imread(str(tmp_path / "out" / "faces" / "wide.png")).shape == (64, 64, 3)
    skin = cv2.imread(str(tmp_path / "out" / "face_masks" / "wide.png"), cv2.IMREAD_UNCHANGED)
    # The photo, padded to a square at the bottom: its 60 of 90 rows are skin, the padding is not.
    assert (skin[:42] == 255).all() and (skin[43:] == 0).all()
    rows = {r["file"]: r for r in csv.DictReader(open(tmp_path / "out" / "summary.csv"))}
    assert rows["readme.txt"]["status"] == "skipped" and rows["wide.png"]["status"] == "ok"
    assert np.allclose(
        [float(v) for v in rows["wide.png"]["matrix"].split()], [64 / 90, 0, 32 / 90 - 0.5, 0, 64 / 90, 32 / 90 - 0.5], atol=1e-5
    )


def test_predict_with_face_masks_marks_skin_only(trained_run):
    run_dir, work, env = trained_run
    from data.synthetic import render_face

    face = render_face(5, 80, 80, 2)
    write_png(work / "masked" / "images" / "f.png", face.image)
    write_png(work / "masked" / "face_masks" / "f.png", face.skin_mask)
    write_png(work / "masked" / "images" / "g.png", face.image)  # no face mask for g: an error row
    out = work / "pred_masked"
    predict_cli(
        run_dir / "checkpoints" / "best.pt",
        work / "masked" / "images",
        out,
        "--face-masks",
        str(work / "masked" / "face_masks"),
        "--threshold",
        "0.01",
        cwd=work,
        env=env,
        expect=3,
    )
    mask = cv2.imread(str(out / "masks" / "f.png"), cv2.IMREAD_UNCHANGED) > 0
    assert mask.any() and not (mask & ~face.skin_mask).any()
    rows = {r["file"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["g.png"]["status"] == "error" and "no face mask" in rows["g.png"]["message"]
    assert float(rows["f.png"]["wrinkle_percent_of_skin"]) == pytest.approx(100 * mask.sum() / face.skin_mask.sum(), abs=1e-3)


def test_face_parsing_extraction_bisenet_backend(tmp_path, cli_env):
    from face.bisenet import BiSeNet

    torch.manual_seed(0)
    torch.save(BiSeNet().state_dict(), tmp_path / "79999_iter.pth")
    inputs = tmp_path / "in"
    write_png(inputs / "face.png", np.random.default_rng(0).integers(0, 255, (80, 70, 3), dtype=np.uint8))
    extract_faces(
        inputs,
        tmp_path / "out",
        "--size",
        "64",
        "--align",
        "none",
        "--backend",
        "bisenet",
        "--weights",
        str(tmp_path / "79999_iter.pth"),
        "--device",
        "cpu",
        cwd=tmp_path,
        env=cli_env,
    )
    face = cv2.imread(str(tmp_path / "out" / "faces" / "face.png"))
    skin = cv2.imread(str(tmp_path / "out" / "face_masks" / "face.png"), cv2.IMREAD_UNCHANGED)
    assert face.shape == (64, 64, 3) and skin.shape == (64, 64) and set(np.unique(skin)) <= {0, 255}
    assert (face[skin == 0] == 0).all()
    result = extract_faces(inputs, tmp_path / "o2", "--backend", "bisenet", cwd=tmp_path, env=cli_env, expect=2)
    assert "--weights" in result.stderr


def test_predict_aligns_real_photos_and_reports_regions(trained_run, shared_data):
    """Real photos of any size: face found, FFHQ-aligned, segmented, mapped back; statuses for the rest."""
    from face.mesh_models import MeshModelsMissing, find_models

    try:
        find_models()
    except MeshModelsMissing as err:
        pytest.skip(str(err))
    from config import load_config
    from data.image_io import read_rgb
    from face.align import ffhq_affine, warp_to_photo
    from face.mesh import FaceMesh
    from face.regions import region_masks, skin_mask, visible_shares

    run_dir, work, env = trained_run
    inputs = work / "real_photos"
    inputs.mkdir()
    for photo in ("grace_hopper.jpg", "astronaut_eileen_collins.png"):
        (inputs / photo).write_bytes((shared_data / "photos" / photo).read_bytes())
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "truncated.png").write_bytes((shared_data / "photos" / "astronaut_eileen_collins.png").read_bytes()[:5000])
    write_png(inputs / "wall.png", np.full((240, 320, 3), 128, np.uint8))  # no face
    write_png(inputs / "hopper_cut.png", read_rgb(inputs / "grace_hopper.jpg")[230:])  # forehead above the frame
    before = sorted((p.name, p.stat().st_mtime_ns) for p in inputs.iterdir())
    out = work / "pred_real"
    result = predict_cli(
        run_dir / "checkpoints" / "best.pt",
        inputs,
        out,
        "--align",
        "ffhq",
        "--skin",
        "mesh",
        "--threshold",
        "0.05",
        "--save-probs",
        cwd=work,
        env=env,
        expect=3,
    )
    assert "differ from the model's training" in result.stderr  # the tiny model was trained on unaligned faces
    assert sorted((p.name, p.stat().st_mtime_ns) for p in inputs.iterdir()) == before
    rows = {r["file"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert [rows[n]["status"] for n in sorted(rows)] == ["ok", "ok", "ok", "skipped", "error", "no_face"]
    assert rows["hopper_cut.png"]["forehead_percent"] == "" and rows["hopper_cut.png"]["cheeks_percent"] != ""
    mesh = FaceMesh()
    for name in ("grace_hopper.jpg", "astronaut_eileen_collins.png", "hopper_cut.png"):
        row, image = rows[name], read_rgb(inputs / name)
        stem = name.rsplit(".", 1)[0]
        mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED) > 0
        probs = cv2.imread(str(out / "probs" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == probs.shape == image.shape[:2] and row["n_faces"] == "1"
        landmarks = mesh(image)[0].landmarks
        # Probabilities exist only where the aligned crop came from: mapped back, not just resized.
        size = load_config(run_dir / "config.yaml").data.image_size
        footprint = warp_to_photo(np.ones((size, size), np.float32), ffhq_affine(landmarks, size), image.shape[:2]) > 0
        assert (
            probs[~cv2.dilate(footprint.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)].max() == 0 and probs[footprint].max() > 0
        )
        skin = skin_mask(landmarks, image.shape[:2])
        assert mask.any() and not (mask & ~skin).any()  # wrinkles only on the face's skin
        assert int(row["skin_pixels"]) == skin.sum() and int(row["wrinkle_pixels"]) == mask.sum()
        assert float(row["wrinkle_percent_of_skin"]) == pytest.approx(100 * mask.sum() / skin.sum(), abs=1e-3)
        regions = region_masks(landmarks, image.shape[:2])
        for region, visible in visible_shares(landmarks, image.shape[:2], regions).items():
            area = regions[region] & skin
            if visible >= 0.5:
                assert float(row[f"{region}_percent"]) == pytest.approx(100 * (mask & area).sum() / area.sum(), abs=1e-3)
            else:  # mostly beyond the frame: no figure
                assert row[f"{region}_percent"] == ""


def test_evaluate_saves_the_scored_pixels_and_its_figures_match_sklearn(trained_run):
    from sklearn.metrics import average_precision_score, f1_score, jaccard_score, roc_auc_score

    run_dir, work, env = trained_run
    out = work / "eval_probs"
    evaluate_cli(run_dir / "checkpoints" / "best.pt", out, "--split", "val", "--threshold", "auto", "--save-probs", cwd=work, env=env)
    report = json.loads((out / "metrics.json").read_text())
    saved = [np.load(path) for path in sorted((out / "probs").glob("*.npz"))]
    assert len(saved) == report["n_images"] == 3
    prob = np.concatenate([z["prob"][z["region"]] for z in saved])
    truth = np.concatenate([z["truth"][z["region"]] for z in saved])
    assert report["auc"] == pytest.approx(roc_auc_score(truth, prob), abs=1e-3)
    assert report["average_precision"] == pytest.approx(average_precision_score(truth, prob), abs=1e-3)
    assert report["iou"] == pytest.approx(jaccard_score(truth, prob >= report["threshold"]))
    assert report["dice"] == pytest.approx(f1_score(truth, prob >= report["threshold"]))


def test_evaluating_the_train_split_is_neither_augmented_nor_dilated(trained_run):
    from config import load_config
    from data.dataset import split_samples
    from data.decode import load_sample
    from engine.scoring import evaluate_checkpoint

    run_dir, work, _ = trained_run
    report = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", work / "eval_train", split="train", threshold=0.5)
    cfg = load_config(run_dir / "config.yaml")
    rows = list(csv.DictReader(open(work / "eval_train" / "per_image.csv")))
    truth_pixels = {s.id: int((m & k).sum()) for s in split_samples(cfg)["train"] for _, m, k in [load_sample(s, cfg.data.image_size)]}
    assert {r["id"]: int(r["tp"]) + int(r["fn"]) for r in rows} == truth_pixels  # the thin masks, in place
    assert report["n_images"] == len(truth_pixels)


def _with(checkpoint, target, **changes):
    state = torch.load(checkpoint, weights_only=True)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            state[section][name] = value
        else:
            state[section] = value
    torch.save(state, target)
    return target


def test_checkpoints_trained_with_fp16_run_on_the_cpu(trained_run):
    from engine.scoring import evaluate_checkpoint
    from engine.segment_photos import predict_folder

    run_dir, work, _ = trained_run
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    fp16 = _with(
        run_dir / "checkpoints" / "best.pt",
        work / "fp16.pt",
        config={**best["config"], "train": {**best["config"]["train"], "amp": "fp16"}},
    )
    plain = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", work / "eval_fp32", split="val", threshold=0.5)
    assert evaluate_checkpoint(fp16, work / "eval_fp16", split="val", threshold=0.5)["iou"] == plain["iou"]  # float32 on the CPU
    from data.synthetic import render_face

    face = render_face(3, 64, 64)
    write_png(work / "fp16_in" / "images" / "a.png", face.image)
    write_png(work / "fp16_in" / "masks" / "a.png", face.skin_mask)
    rows = predict_folder(fp16, work / "fp16_in" / "images", work / "fp16_out", face_mask_dir=work / "fp16_in" / "masks")
    assert rows[0]["status"] == "ok"


@pytest.mark.parametrize("stored", [float("nan"), 0.0, 1.0, -3.0, float("inf")])
def test_a_stored_threshold_outside_0_1_is_refused_in_one_line(trained_run, stored, cli_env):
    run_dir, work, _ = trained_run
    bad = _with(run_dir / "checkpoints" / "best.pt", work / f"bad_threshold_{stored}.pt", threshold=stored)
    result = run(
        [str(PROJECT_ROOT / "evaluate.py"), "--checkpoint", str(bad), "--output", str(work / "o_bad"), "--threshold", "auto"],
        work,
        cli_env,
        expect=1,
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and bad.name in lines[0] and "not a probability in (0, 1)" in lines[0]


@pytest.mark.parametrize("flag", ["nan", "0", "1", "inf", "-0.2"])
def test_a_threshold_flag_outside_0_1_is_refused(trained_run, flag):
    from config import ConfigError
    from engine.scoring import evaluate_checkpoint

    run_dir, work, _ = trained_run
    with pytest.raises(ConfigError, match="--threshold must be in"):
        evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", work / "o_flag", threshold=flag)


def test_non_finite_weights_are_refused(trained_run):
    from engine.checkpoint import CheckpointError
    from engine.inference import load_model

    run_dir, work, _ = trained_run
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    state["model"]["head.conv.weight" if "head.conv.weight" in state["model"] else next(iter(state["model"]))].fill_(float("nan"))
    torch.save(state, work / "nan.pt")
    with pytest.raises(CheckpointError, match="nan.pt: 1 weight tensors hold NaN or infinity"):
        load_model(work / "nan.pt", torch.device("cpu"))
