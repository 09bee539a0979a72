"""python -m data.texture: texture maps (weak labels) for a folder of faces, as predict.py treats folders:
one 8-bit map per face equal to texture_map of that face and its skin, a summary row per file, bad files
reported and skipped, output folders that never lose a user's file, the same bytes on every run."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.decode import pad_to_square
from data.image_io import read_binary_mask, read_rgb, resize_mask, resize_rgb, write_png
from data.synthetic import render_face
from data.texture import main, texture_map
from engine.cli import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, run_cli

SIZES = {"face_0": (64, 64), "face_1": (56, 72), "face_2": (72, 48)}  # height, width: two non-square faces


def faces(root: Path, masked: bool = False) -> tuple[Path, Path]:
    """root/faces/ (three synthetic faces; `masked`: black off skin, as face_parsing_extraction.py writes
    them) and root/skin/ (their skin masks, 0/255 PNGs)."""
    for index, (name, (height, width)) in enumerate(SIZES.items()):
        face = render_face(7, height, width, index)
        write_png(root / "faces" / f"{name}.png", face.image * face.skin_mask[..., None] if masked else face.image)
        write_png(root / "skin" / f"{name}.png", face.skin_mask)
    return root / "faces", root / "skin"


def read_map(path: Path) -> np.ndarray:
    """A written map as stored: must be one 8-bit channel."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert array is not None and array.dtype == np.uint8 and array.ndim == 2, path
    return array


def summary(output: Path) -> dict[str, dict[str, str]]:
    with open(output / "summary.csv", newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_maps_are_the_texture_of_each_face_on_its_skin_and_bad_files_get_a_row(tmp_path):
    images, skins = faces(tmp_path)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # corrupt
    write_png(images / "no_mask.png", render_face(7, 40, 40, 9).image)  # no skin mask of its name
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert run_cli(main, ["--input", str(images), "--output", str(out), "--face-masks", str(skins)]) == EXIT_PARTIAL
    rows = summary(out)
    assert list(rows) == ["broken.png", "face_0.png", "face_1.png", "face_2.png", "no_mask.png", "notes.txt"]
    assert rows["broken.png"]["status"] == "error" and "not a readable PNG" in rows["broken.png"]["message"]
    assert rows["no_mask.png"]["status"] == "error" and "no face mask named no_mask" in rows["no_mask.png"]["message"]
    assert rows["notes.txt"]["status"] == "skipped"
    assert sorted(p.name for p in out.iterdir()) == [".wrinkle-output", "face_0.png", "face_1.png", "face_2.png", "summary.csv"]
    for name, (height, width) in SIZES.items():
        image, skin = read_rgb(images / f"{name}.png"), read_binary_mask(skins / f"{name}.png")
        written = read_map(out / f"{name}.png")
        expected = texture_map(image, skin)
        assert written.shape == (height, width)
        assert written.tobytes() == expected.tobytes()
        assert not written[~skin].any() and written[skin].any()  # zero off skin, a texture on it
        row = rows[f"{name}.png"]
        assert row["status"] == "ok" and (int(row["width"]), int(row["height"])) == (width, height)
        assert int(row["skin_pixels"]) == skin.sum()
        assert float(row["texture_mean"]) == pytest.approx(expected[skin].mean(), abs=1e-4)


def test_a_clean_folder_exits_0_and_the_same_input_gives_the_same_bytes(tmp_path):
    images, skins = faces(tmp_path)
    runs = [tmp_path / "first", tmp_path / "second"]
    for out in runs:
        assert run_cli(main, ["--input", str(images), "--output", str(out), "--face-masks", str(skins)]) == EXIT_OK
    assert listing(runs[0]) == listing(runs[1])


def test_without_face_masks_pure_black_is_not_skin(tmp_path):
    # Skin-masked faces (black off skin) without --face-masks give the very maps that their masks give:
    # the black pixels (I = 0, texture 255) would otherwise ring every face.
    images, skins = faces(tmp_path, masked=True)
    with_masks, without = tmp_path / "with_masks", tmp_path / "without"
    assert run_cli(main, ["--input", str(images), "--output", str(with_masks), "--face-masks", str(skins)]) == EXIT_OK
    assert run_cli(main, ["--input", str(images), "--output", str(without)]) == EXIT_OK
    assert listing(with_masks) == listing(without)
    image = read_rgb(images / "face_0.png")
    assert (texture_map(image)[~image.any(axis=2)] == 255).all()  # what the black pixels would have been


def test_size_pads_to_a_square_then_scales(tmp_path):
    images, skins = faces(tmp_path)
    out = tmp_path / "out"
    assert run_cli(main, ["--input", str(images), "--output", str(out), "--face-masks", str(skins), "--size", "48"]) == EXIT_OK
    rows = summary(out)
    for name in SIZES:
        image, skin = pad_to_square(read_rgb(images / f"{name}.png")), pad_to_square(read_binary_mask(skins / f"{name}.png"))
        image, skin = resize_rgb(image, 48, 48), resize_mask(skin, 48, 48, thin=False)
        written = read_map(out / f"{name}.png")
        assert written.shape == (48, 48) and written.tobytes() == texture_map(image, skin).tobytes()
        assert (rows[f"{name}.png"]["width"], rows[f"{name}.png"]["height"], rows[f"{name}.png"]["skin_pixels"]) == (
            "48",
            "48",
            str(skin.sum()),
        )
    assert not read_map(out / "face_2.png")[:, 32:].any()  # 72 x 48 padded on the right: no skin there


def test_recursive_repeats_the_layout(tmp_path):
    images, _ = faces(tmp_path)
    (images / "more").mkdir()
    shutil.move(images / "face_2.png", images / "more" / "face_2.png")
    out = tmp_path / "out"
    assert run_cli(main, ["--input", str(images), "--output", str(out), "--recursive"]) == EXIT_OK
    assert sorted(summary(out)) == ["face_0.png", "face_1.png", "more/face_2.png"]
    image = read_rgb(images / "more" / "face_2.png")
    assert read_map(out / "more" / "face_2.png").tobytes() == texture_map(image, image.any(axis=2)).tobytes()


def test_a_folder_with_foreign_files_is_refused_in_one_line(tmp_path, capsys):
    images, skins = faces(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "face_0.png").write_bytes(b"the user's own file")
    args = ["--input", str(images), "--output", str(out), "--face-masks", str(skins)]
    assert run_cli(main, args) == EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "did not write" in lines[0], lines
    assert listing(out) == {"face_0.png": b"the user's own file"}  # nothing written, not even the manifest
    # --overwrite takes the folder, but a file of the same name it did not write is still never replaced.
    assert run_cli(main, [*args, "--overwrite"]) == EXIT_ERROR
    assert "error: " in capsys.readouterr().err
    assert {k: v for k, v in listing(out).items() if not k.startswith(".")} == {"face_0.png": b"the user's own file"}
    for overlapping in (images, images / "maps", skins):
        assert run_cli(main, ["--input", str(images), "--output", str(overlapping), "--face-masks", str(skins)]) == EXIT_ERROR
        assert "overlap" in capsys.readouterr().err
    assert not (images / "maps").exists() and not (images / "summary.csv").exists()


def test_overwrite_replaces_only_its_own_earlier_files(tmp_path, capsys):
    images, skins = faces(tmp_path)
    out = tmp_path / "out"
    args = ["--input", str(images), "--output", str(out), "--face-masks", str(skins)]
    assert run_cli(main, args) == EXIT_OK
    (out / "notes.txt").write_text("mine")
    assert run_cli(main, args) == EXIT_ERROR
    assert "pass --overwrite" in capsys.readouterr().err
    (images / "face_2.png").unlink()
    (out / "face_0.png").write_bytes(b"stale")
    assert run_cli(main, [*args, "--overwrite"]) == EXIT_OK
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.glob("*.png")) == ["face_0.png", "face_1.png"]  # face_2's stale map removed
    assert (
        read_map(out / "face_0.png").tobytes()
        == texture_map(read_rgb(images / "face_0.png"), read_binary_mask(skins / "face_0.png")).tobytes()
    )
    assert sorted(summary(out)) == ["face_0.png", "face_1.png"]


def test_real_face(shared_data, tmp_path):
    # FFHQ 00018 at 1024 px, scaled to 512: the map of the scaled face, whose blur is the published one
    # scaled to 512 (11 x 11, sigma 2.5); FFHQ faces are unmasked, so nearly every pixel is skin.
    images = tmp_path / "faces"
    images.mkdir()
    shutil.copy(shared_data / "ffhq-faces" / "images1024" / "00018.png", images / "00018.png")
    out = tmp_path / "out"
    assert run_cli(main, ["--input", str(images), "--output", str(out), "--size", "512"]) == EXIT_OK
    face = resize_rgb(read_rgb(images / "00018.png"), 512, 512)
    skin = resize_mask(read_rgb(images / "00018.png").any(axis=2), 512, 512, thin=False)
    written = read_map(out / "00018.png")
    assert written.shape == (512, 512) and written.tobytes() == texture_map(face, skin).tobytes()
    row = summary(out)["00018.png"]
    assert int(row["skin_pixels"]) > 0.99 * 512 * 512
    assert 2 < float(row["texture_mean"]) < 40  # mostly faint: a flat region gives 255 / (1 + I), a few levels
    assert np.percentile(written, 99) > 2 * float(row["texture_mean"])  # lines and pores stand out
