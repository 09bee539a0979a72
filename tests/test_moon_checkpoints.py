"""Moon et al.'s released U-Net and Swin UNETR as checkpoints of this project: the published containers
import (digest known or not), and evaluate.py and predict.py take the result like one of train.py's.

Random weights under the published key names and shapes (tests/fixtures): the path, not the quality."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

import evaluate
import predict
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cli import run_cli
from engine.inference import load_model
from tests.conftest import PROJECT_ROOT, fixture_shapes, random_weights
from unet import import_weights as iw

QUICKSTART = PROJECT_ROOT / "configs" / "quickstart.yaml"
RELEASES = {  # importer name: (fixture, released file name, its SHA-256, model.arch)
    "moon-unet": (
        "moon_unet_keys.txt",
        "stage2_unet.pth",
        "883034b3e0726dcdae946c312106dfde1d354ea5455fa21cba045a73058f4a25",
        "moon_unet",
    ),
    "moon-swinunetr": (
        "swin_unetr_keys.txt",
        "stage2_swinunetr.pth",
        "b8f6a46c49d52f5725d0d79740d2c9508b4f8aa6400ea4fe0b27f7a6cd8bdd12",
        "swin_unetr",
    ),
}


def released_weights(name: str) -> dict[str, torch.Tensor]:
    """Random values under the published names and shapes; integer buffers (Swin UNETR's relative position
    index) hold what any copy of the network holds, as the released file does."""
    fixture = RELEASES[name][0]
    if not (Path(__file__).parent / "fixtures" / fixture).is_file():
        pytest.skip(f"tests/fixtures/{fixture} is not there yet")
    weights = random_weights(fixture_shapes(fixture), seed=5, scale=0.05)
    reference = iw.PUBLISHED[name].build().state_dict()
    weights.update({k: v for k, v in reference.items() if not v.is_floating_point() and not k.endswith("num_batches_tracked")})
    return weights


@pytest.fixture(scope="module", params=list(RELEASES))
def release(request, tmp_path_factory) -> dict:
    """The released .pth as their inference.py reads it: a `model` entry with DataParallel prefixes and
    the optimizer state beside it; imported once into a project checkpoint."""
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    weights = released_weights(name)
    pth = folder / RELEASES[name][1]
    optimizer = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}, "optimizer": optimizer, "epoch": 150}, pth)
    checkpoint = iw.import_weights(name, pth, folder / f"{name}.pt")
    return {"name": name, "weights": weights, "pth": pth, "checkpoint": checkpoint, "folder": folder}


def test_the_release_imports_with_the_config_it_was_trained_under(release):
    name, checkpoint = release["name"], release["checkpoint"]
    model, cfg, state = load_model(checkpoint, torch.device("cpu"))
    assert type(model) is type(iw.PUBLISHED[name].build())
    assert all(torch.equal(v, release["weights"][k]) for k, v in model.state_dict().items())
    assert (cfg.model.arch, cfg.model.input, cfg.data.image_size) == (RELEASES[name][3], "rgb_texture", 1024)
    assert (cfg.face.align, cfg.face.skin, cfg.face.skin_classes, cfg.data.zero_non_skin) == ("ffhq", "bisenet", [1, 10], True)
    assert cfg.eval.threshold == state["threshold"] == 0.5
    assert state["imported_from"] == {"file": release["pth"].name, "sha256": iw.file_digest(release["pth"], "sha256"), "model": name}


def test_the_known_digest_is_the_release_and_another_file_gets_a_warning(release, caplog, monkeypatch):
    name, pth = release["name"], release["pth"]
    assert iw.PUBLISHED[name].known_sha256 == {RELEASES[name][2]}
    with caplog.at_level(logging.INFO, logger="unet.import_weights"):
        assert iw.import_weights(name, pth, None) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"not a known {name} release" in warnings[0]
    caplog.clear()
    known = dataclasses.replace(iw.PUBLISHED[name], known_sha256=frozenset({iw.file_digest(pth, "sha256")}))
    monkeypatch.setitem(iw.PUBLISHED, name, known)
    with caplog.at_level(logging.INFO, logger="unet.import_weights"):
        iw.import_weights(name, pth, None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(f"is a known {name} release" in r.getMessage() for r in caplog.records)


def test_the_other_moon_model_is_refused_by_name(release, capsys):
    other = next(n for n in RELEASES if n != release["name"])
    assert run_cli(iw.main, [other, str(release["pth"]), "--check-only"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"not the {other} weights" in err[0]


def test_evaluate_scores_the_imported_checkpoint(release, tmp_path):
    output = tmp_path / "eval"
    args = [
        "--checkpoint",
        str(release["checkpoint"]),
        "--output",
        str(output),
        "--config",
        str(QUICKSTART),  # a training config: its model section is not used, the checkpoint's model is scored
        f"data.sources.0.root={tmp_path / 'synthetic'}",
        "data.sources.0.n_images=8",
        "data.split.test_fraction=0.125",  # one test image: Swin UNETR runs at its 1024 px minimum whatever the size
        "data.image_size=64",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    assert run_cli(evaluate.main, args) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["threshold"] == 0.5 and metrics["n_images"] == 1 and metrics["image_size"] == 64
    assert 0 <= metrics["iou"] <= 1 and 0 <= metrics["per_image_dice"] <= 1
    assert len(list((output / "overlays").iterdir())) == 1  # the one image is both best and worst: pictured once


def test_predict_segments_real_photos_with_the_imported_checkpoint(release, shared_data, tmp_path):
    """Their faces are FFHQ-aligned and BiSeNet-skin-masked: predict.py does that to each photo (face mesh,
    BiSeNet with random weights under the published key names), adds the texture map, and maps the mask
    back. At 256 px instead of 1024 to keep the CPU time short (Swin UNETR still runs its 1024 minimum)."""
    from face.bisenet import BiSeNet
    from face.mesh import FaceMesh
    from face.mesh_models import MeshModelsMissing

    try:
        FaceMesh()
    except MeshModelsMissing as err:
        pytest.skip(str(err))
    torch.manual_seed(0)
    torch.save(BiSeNet().state_dict(), tmp_path / "79999_iter.pth")
    state = load_checkpoint(release["checkpoint"])
    state["config"]["data"]["image_size"] = 256
    state["config"]["face"]["bisenet_weights"] = str(tmp_path / "79999_iter.pth")
    small = tmp_path / "small.pt"
    save_checkpoint(small, state)
    photos = shared_data / "photos"
    if release["name"] == "moon-swinunetr":  # one photo: its forward pass alone is a 1024 px one
        (tmp_path / "photos").mkdir()
        (tmp_path / "photos" / "grace_hopper.jpg").write_bytes((photos / "grace_hopper.jpg").read_bytes())
        photos = tmp_path / "photos"
    output = tmp_path / "out"
    assert run_cli(predict.main, ["--checkpoint", str(small), "--input", str(photos), "--output", str(output)]) == 0
    rows = list(csv.DictReader(open(output / "summary.csv")))
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in photos.iterdir())
    assert all(r["status"] == "ok" and int(r["skin_pixels"]) > 0 for r in rows)
    for row in rows:
        assert (output / "masks" / f"{Path(row['file']).stem}.png").is_file()
        assert (output / "overlays" / f"{Path(row['file']).stem}.png").is_file()


@pytest.mark.parametrize("release", ["moon-unet"], indirect=True)  # the protocol is the same for every checkpoint
def test_the_published_protocol_scores_moon_et_als_test_ids_on_skin_and_nose(release, shared_data, tmp_path):
    """configs/eval_ffhq_wrinkle.yaml as shipped (1024 px, manual masks, the test-id list, BiSeNet classes 1
    and 10 of the released 512 px parsing labels, threshold 0.5) on an FFHQ-Wrinkle layout of real faces."""
    import numpy as np

    from data.image_io import write_png

    root, images = tmp_path / "ffhq-wrinkle", tmp_path / "images1024x1024"
    labels = np.zeros((512, 512), np.uint8)
    labels[100:400, 80:430] = 1  # skin
    labels[220:330, 220:290] = 10  # nose
    labels[180:210, 150:220] = 4  # an eye: not scored
    for sample_id in ("00018", "00761"):
        face = shared_data / "ffhq-faces" / "images1024" / f"{sample_id}.png"
        (images / "00000").mkdir(parents=True, exist_ok=True)
        (images / "00000" / f"{sample_id}.png").write_bytes(face.read_bytes())
        mask = np.zeros((1024, 1024), np.uint8)
        mask[500:503, 300:700] = 255
        write_png(root / "manual_wrinkle_masks" / f"{sample_id}.png", mask)
        (root / "face_parsed_labels").mkdir(exist_ok=True)
        np.save(root / "face_parsed_labels" / f"{sample_id}.npy", labels)
    (root / "test_file_lists.txt").write_text("00018\n")
    output = tmp_path / "eval"
    args = [
        "--checkpoint",
        str(release["checkpoint"]),
        "--config",
        str(PROJECT_ROOT / "configs" / "eval_ffhq_wrinkle.yaml"),
        "--output",
        str(output),
        "--save-probs",
        f"data.sources.0.root={root}",
        f"data.sources.0.images={images}",
        f"data.split.test_ids_file={root / 'test_file_lists.txt'}",
    ]
    assert run_cli(evaluate.main, args) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["n_images"], metrics["image_size"], metrics["threshold"], metrics["region"]) == (1, 1024, 0.5, "skin")
    scored = np.load(output / "probs" / "00018.npz")
    face_region = np.repeat(np.repeat(np.isin(labels, [1, 10]), 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(scored["region"], face_region)
    assert scored["prob"].shape == (1024, 1024) and scored["truth"].sum() == 3 * 400
