"""Nothing lost, nothing cryptic: output folders, run folders, bad files in batches, file-system faults.

Disk-full and read-only faults are injected at the one place every file goes through
(`fileio.atomic_write`'s `open`), so they run anywhere CI does, without a tmpfs or root.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from config import config_to_dict, load_config
from data.image_io import write_png
from data.synthetic import render_face
from engine import fileio
from engine.checkpoint import CheckpointError, load_checkpoint, model_state, save_checkpoint
from engine.cli import EXIT_ERROR, InputError, run_cli
from engine.errors import OutputError, UnknownNameError, WrinkleError
from engine.output_folder import MANIFEST, OutputFolder
from engine.segment_photos import predict_folder
from tests.conftest import PROJECT_ROOT
from unet import build_model

QUICKSTART = PROJECT_ROOT / "configs" / "quickstart.yaml"
SMALL_MODEL = ["data.image_size=64", "model.decoder_channels=[16, 16, 8, 8, 8]", "logging.wandb=disabled"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained small model in a real checkpoint (its config: synthetic faces, no face alignment)."""
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    cfg = load_config(QUICKSTART, SMALL_MODEL)
    torch.manual_seed(0)
    model = build_model(cfg.model, encoder_weights=False)
    save_checkpoint(path, {"model": model_state(model), "config": config_to_dict(cfg), "threshold": 0.5, "epoch": 1})
    return path


def photos(folder: Path, n: int = 3) -> list[Path]:
    """`n` small synthetic face photos in `folder`."""
    paths = [folder / f"face_{i}.png" for i in range(n)]
    for i, path in enumerate(paths):
        write_png(path, render_face(7, 48, 40, i).image)
    return paths


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (the body holds almost nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def summary(folder: Path) -> dict[str, dict]:
    return {row["file"]: row for row in csv.DictReader(open(folder / "summary.csv"))}


def leftovers(folder: Path) -> list[str]:
    """Temporary files left anywhere below `folder`."""
    return [p.name for p in folder.rglob(".*tmp*")]


class FailingOpen:
    """`open` for fileio that fails writes with `errno_` from the `after`-th file on (disk full, read-only)."""

    def __init__(self, after: int, errno_: int = errno.ENOSPC):
        self.after, self.errno, self.opened = after, errno_, 0

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        if "w" not in mode and "a" not in mode:
            return handle
        self.opened += 1
        if self.opened > self.after:
            fault = self.errno

            def write(data):
                handle.__class__.write(handle, data[: len(data) // 2])  # part of it reaches the disk, as on a full one
                raise OSError(fault, os.strerror(fault))

            handle.write = write
        return handle


# -- output folders --------------------------------------------------------------------------------


def test_predict_never_replaces_a_data_sets_masks(checkpoint, tmp_path):
    data, new_photos = tmp_path / "dataset", tmp_path / "photos"
    for path in photos(new_photos):
        write_png(data / "masks" / path.name, np.eye(48, 40, dtype=bool))
    truth = {p.name: p.read_bytes() for p in (data / "masks").iterdir()}
    with pytest.raises(OutputError, match="holds files predict.py did not write"):
        predict_folder(checkpoint, new_photos, data)
    with pytest.raises(OutputError, match="refusing to replace a file predict.py did not write"):
        predict_folder(checkpoint, new_photos, data, overwrite=True)
    assert {p.name: p.read_bytes() for p in (data / "masks").iterdir()} == truth


def test_output_equal_to_or_inside_the_input_is_refused(checkpoint, tmp_path):
    inputs = tmp_path / "photos"
    photos(inputs)
    (inputs / "summary.csv").write_text("the user's own table\n")
    for output in (inputs, inputs / "out"):
        with pytest.raises(OutputError, match="overlap"):
            predict_folder(checkpoint, inputs, output)
    with pytest.raises(OutputError, match="refusing to replace"):
        predict_folder(checkpoint, inputs, inputs, overwrite=True)
    assert (inputs / "summary.csv").read_text() == "the user's own table\n"
    assert not (inputs / "out").exists()


def test_overwrite_replaces_only_the_previous_runs_files(checkpoint, tmp_path):
    inputs, out = tmp_path / "photos", tmp_path / "out"
    _first, _second, third = photos(inputs)
    predict_folder(checkpoint, inputs, out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="pass --overwrite"):
        predict_folder(checkpoint, inputs, out)
    third.unlink()
    rows = predict_folder(checkpoint, inputs, out, overwrite=True)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["face_0.png", "face_1.png"]  # face_2's stale mask removed
    assert set(summary(out)) == {"face_0.png", "face_1.png"}


def test_a_folder_of_another_command_or_a_file_is_refused(tmp_path):
    fileio.write_text_atomic(OutputFolder(tmp_path / "eval", "evaluate.py").path("metrics.json"), "{}")
    with pytest.raises(OutputError, match="holds the output of evaluate.py, not of predict.py"):
        OutputFolder(tmp_path / "eval", "predict.py", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        OutputFolder(tmp_path / "file", "predict.py")


def test_evaluate_and_extraction_refuse_foreign_folders_before_any_work(checkpoint, tmp_path):
    from engine.scoring import evaluate_checkpoint
    from face_parsing_extraction import extract_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.docx").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        evaluate_checkpoint(checkpoint, tmp_path / "out", overrides=[f"data.sources.0.root={tmp_path / 'synthetic'}"])
    assert not (tmp_path / "synthetic").exists()  # refused before any data was generated or scored
    photos(tmp_path / "photos")
    with pytest.raises(OutputError, match="did not write"):
        extract_folder(tmp_path / "photos", tmp_path / "out", cropper=None)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.docx"]


# -- run folders -----------------------------------------------------------------------------------


def tiny_run(tmp_path: Path, *extra: str) -> list[str]:
    return SMALL_MODEL + [
        "experiment.name=t",
        f"experiment.output_dir={tmp_path / 'runs'}",
        f"data.sources.0.root={tmp_path / 'synthetic'}",
        "data.sources.0.n_images=12",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=0",
        "data.split.val_fraction=0.25",
        "data.split.test_fraction=0.1",
        "train.batch_size=4",
        "eval.batch_size=4",
        "train.epochs=1",
        *extra,
    ]


def test_resuming_a_copied_checkpoint_never_touches_the_folder_around_it(tmp_path):
    from engine.trainer import fit, resume_config

    run_dir = fit(load_config(QUICKSTART, tiny_run(tmp_path)))
    unrelated = tmp_path / "unrelated"
    (unrelated / "checkpoints").mkdir(parents=True)
    (unrelated / "config.yaml").write_text((run_dir / "config.yaml").read_text())  # even the same config
    (unrelated / "metrics.csv").write_text("epoch,val_iou\n1,0.5\n2,0.6\n3,0.7\n")
    (unrelated / "checkpoints" / "last.pt").write_bytes(b"someone else's")
    copy = unrelated / "checkpoints" / "copied.pt"
    shutil.copy(run_dir / "checkpoints" / "last.pt", copy)
    resumed = fit(resume_config(copy, ["train.epochs=2"]), resume=copy)
    assert resumed.parent == run_dir.parent and resumed not in (run_dir, unrelated)
    assert (unrelated / "metrics.csv").read_text() == "epoch,val_iou\n1,0.5\n2,0.6\n3,0.7\n"
    assert (unrelated / "checkpoints" / "last.pt").read_bytes() == b"someone else's"
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["epoch"] == 2
    # In its own folder, a checkpoint resumes there (and a second resume of the result too).
    again = fit(resume_config(run_dir / "checkpoints" / "last.pt", ["train.epochs=2"]), resume=run_dir / "checkpoints" / "last.pt")
    assert again == run_dir
    assert [r["epoch"] for r in csv.DictReader(open(run_dir / "metrics.csv"))] == ["1", "2"]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch):
    from engine.trainer import Trainer, TrainingError, fit

    def explode(self):
        raise TrainingError("boom")

    monkeypatch.setattr(Trainer, "train_one_epoch", explode)
    with pytest.raises(TrainingError):
        fit(load_config(QUICKSTART, tiny_run(tmp_path)))
    assert list((tmp_path / "runs").iterdir()) == []


# -- one bad file never stops a batch --------------------------------------------------------------


def test_bad_entries_get_a_row_and_the_rest_goes_on(checkpoint, tmp_path):
    inputs, out = tmp_path / "photos", tmp_path / "out"
    photos(inputs, 2)
    (inputs / "huge.png").write_bytes(png_header(40000, 40000))
    (inputs / "anim.gif").write_bytes(b"GIF89a" + b"\x00" * 20)
    (inputs / "dangling.png").symlink_to(tmp_path / "gone.png")
    (inputs / "loop.png").symlink_to(inputs / "loop.png")
    predict_folder(checkpoint, inputs, out)
    rows = summary(out)
    assert rows["face_0.png"]["status"] == rows["face_1.png"]["status"] == "ok"
    assert rows["huge.png"]["status"] == "error" and "too large" in rows["huge.png"]["message"]
    assert rows["anim.gif"]["status"] == "error" and "unsupported image format GIF" in rows["anim.gif"]["message"]
    assert "broken symbolic link" in rows["dangling.png"]["message"] and rows["loop.png"]["message"] == "symbolic link loop"
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["face_0.png", "face_1.png"]


def test_a_folder_without_images_says_so_and_recursive_reads_sub_folders(checkpoint, tmp_path):
    inputs = tmp_path / "photos"
    photos(inputs / "2024")
    (inputs / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"no image files .* directly in it; its 1 sub-folders are not searched unless --recursive"):
        predict_folder(checkpoint, inputs, tmp_path / "out")
    rows = predict_folder(checkpoint, inputs, tmp_path / "out", recursive=True)
    assert [r["file"] for r in rows] == ["2024/face_0.png", "2024/face_1.png", "2024/face_2.png", "readme.txt"]
    assert (tmp_path / "out" / "masks" / "2024" / "face_1.png").is_file()


def test_training_and_data_check_skip_an_oversized_image(tmp_path):
    from data.check import inspect_sample
    from data.sources import Sample

    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(40000, 40000))
    row = inspect_sample(Sample(id="huge", image=huge, mask=None, face_mask=None, source="folder"))
    assert row["problem"] == "unreadable" and "too large" in row["message"]


# -- file-system faults ----------------------------------------------------------------------------


def test_disk_full_while_predicting_leaves_a_consistent_folder(checkpoint, tmp_path, monkeypatch):
    inputs, out = tmp_path / "photos", tmp_path / "out"
    photos(inputs, 6)
    monkeypatch.setattr(fileio, "open", FailingOpen(after=8), raising=False)  # the manifest, then batch 1's files + summary
    with pytest.raises(OutputError, match=r"cannot write .*: no space left on device"):
        predict_folder(checkpoint, inputs, out, batch_size=2)
    rows = summary(out)
    assert leftovers(out) == []
    masks = sorted(p.name for p in (out / "masks").iterdir())
    assert masks == sorted(rows) == sorted(p.name for p in (out / "overlays").iterdir())
    assert 0 < len(masks) < 6


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "config": {}})
    before = path.read_bytes()
    monkeypatch.setattr(fileio, "open", FailingOpen(after=0), raising=False)
    with pytest.raises(OutputError, match=rf"cannot write {path}: no space left on device"):
        save_checkpoint(path, {"model": {"w": torch.ones(1000)}, "config": {}})
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_a_read_only_output_folder_is_one_line_naming_it(checkpoint, tmp_path, monkeypatch):
    photos(tmp_path / "photos", 1)
    monkeypatch.setattr(fileio, "open", FailingOpen(after=0, errno_=errno.EROFS), raising=False)
    with pytest.raises(OutputError, match=rf"cannot write {tmp_path / 'out' / MANIFEST}: read-only file system"):
        predict_folder(checkpoint, tmp_path / "photos", tmp_path / "out")


def test_disk_full_while_evaluating_writes_no_metrics_json(checkpoint, tmp_path, monkeypatch):
    from engine.scoring import evaluate_checkpoint

    overrides = [
        f"data.sources.0.root={tmp_path / 'synthetic'}",
        "data.sources.0.n_images=12",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.split.test_fraction=0.25",
    ]
    evaluate_checkpoint(checkpoint, tmp_path / "first", overrides=overrides)  # writes the data set and the cache
    monkeypatch.setattr(fileio, "open", FailingOpen(after=1), raising=False)  # the output folder's manifest, then nothing
    with pytest.raises(OutputError, match="no space left on device"):
        evaluate_checkpoint(checkpoint, tmp_path / "eval", overrides=overrides)
    assert (tmp_path / "first" / "metrics.json").is_file()
    assert not (tmp_path / "eval" / "metrics.json").exists() and leftovers(tmp_path / "eval") == []


def test_data_check_output_must_be_a_report_file(tmp_path, cli_env):
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  sources: [{{kind: synthetic, root: {tmp_path / 'synthetic'}, n_images: 4}}]\n  image_size: 64\n")
    (tmp_path / "notes.json").write_text("my notes")
    for output, message in ((tmp_path, "is a folder"), (tmp_path / "notes.json", "not a data.check report")):
        result = subprocess.run(
            [sys.executable, "-m", "data.check", "--config", str(config), "--output", str(output)],
            cwd=PROJECT_ROOT,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "notes.json").read_text() == "my notes"


# -- the model side --------------------------------------------------------------------------------


def test_broken_checkpoints_are_one_line_naming_the_file(checkpoint, tmp_path):
    from engine.inference import load_model, resolve_device

    empty, truncated = tmp_path / "empty.pt", tmp_path / "truncated.pt"
    empty.write_bytes(b"")
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"empty.pt: not a readable checkpoint: the file is empty"):
        load_checkpoint(empty)
    with pytest.raises(CheckpointError, match=r"truncated.pt: not a readable checkpoint: truncated or not a PyTorch file") as info:
        load_checkpoint(truncated)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["model"]["decoder_channels"] = [32, 16, 16, 8, 8]  # an edited config: the weights no longer fit
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    with pytest.raises(CheckpointError, match=r"edited.pt: its weights do not fit the model its config describes: .*wrongly shaped"):
        load_model(edited, resolve_device("cpu"))


# -- small things ----------------------------------------------------------------------------------


def test_one_image_batches_of_32_px_are_refused_before_any_run_folder():
    from config import ConfigError

    with pytest.raises(ConfigError, match="train.batch_size=1 with data.image_size=32"):
        load_config(QUICKSTART, ["data.image_size=32", "train.batch_size=1"])
    with pytest.raises(ConfigError, match="data.patch_size=32"):
        load_config(QUICKSTART, ["data.patch_size=32", "train.batch_size=1"])
    assert load_config(QUICKSTART, ["data.image_size=40", "train.batch_size=1"]).data.image_size == 40


@pytest.mark.parametrize("args", [["--height", "0"], ["--n", "-5"], ["--width", "16"]])
def test_synthetic_refuses_impossible_sizes_in_one_line(args, tmp_path, cli_env):
    result = subprocess.run(
        [sys.executable, "-m", "data.synthetic", "--output", str(tmp_path / "s"), *args],
        cwd=PROJECT_ROOT,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "must be at least" in result.stderr
    assert not (tmp_path / "s").exists()


def test_synthetic_never_regenerates_into_a_folder_of_other_files(tmp_path):
    from data.synthetic import SyntheticError, write_synthetic_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(SyntheticError, match="holiday.jpg"):
        write_synthetic_dataset(tmp_path, 2, 64, 64, 1)
    assert (tmp_path / "images" / "holiday.jpg").read_bytes() == b"mine"


def test_run_cli_reports_expected_failures_in_one_line_and_keeps_bugs_loud(capsys):
    def fails(error):
        def main(argv):
            raise error

        return main

    assert run_cli(fails(WrinkleError("config.yaml: bad\nsecond line"))) == EXIT_ERROR
    assert capsys.readouterr().err == "error: config.yaml: bad\n"
    assert run_cli(fails(OSError(errno.ENOSPC, "No space left on device", "/out/x.png"))) == EXIT_ERROR
    assert capsys.readouterr().err == "error: /out/x.png: no space left on device\n"
    assert run_cli(fails(UnknownNameError("model.encoder: unknown encoder 'resnet5'; valid: resnet18, resnet50"))) == EXIT_ERROR
    assert capsys.readouterr().err == "error: model.encoder: unknown encoder 'resnet5'; valid: resnet18, resnet50\n"
    for bug in (KeyError("encoder"), RuntimeError("shape mismatch"), FileNotFoundError(errno.ENOENT, "No such file", "x")):
        with pytest.raises(type(bug)):
            run_cli(fails(bug))


def test_outputs_record_what_they_wrote(tmp_path):
    folder = OutputFolder(tmp_path / "o", "predict.py")
    fileio.write_text_atomic(folder.path("masks/a.png"), "1")
    folder.finish()
    lines = (tmp_path / "o" / MANIFEST).read_text().splitlines()
    assert json.loads(lines[0]) == {"command": "predict.py"} and [json.loads(x) for x in lines[1:]] == ["masks/a.png"]
