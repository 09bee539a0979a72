"""data.prepare against a local stand-in for the remote: a loopback HTTP server with Range support."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections import namedtuple
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from data import prepare
from data.decode import load_sample
from data.fetch import FetchError, direct_url, fetch
from data.sources import ffhq_wrinkle_samples, kim_samples
from engine.cli import run_cli

IDS = ["00002", "01500"]
WEAK_IDS = ["12000", "00002", "03001", "00777", "01500"]  # the weak zip's order; --weak-limit takes the smallest
KIM_WRINKLE, KIM_SKIN = 40, 28 * 28  # pixels of the Kim fixture's wrinkle and skin masks


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, honouring `Range: bytes=N-` like Google Drive and most servers do."""

    requests: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        RangeHandler.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


def weak_png(sample_id: str) -> bytes:
    texture = np.zeros((32, 32), np.uint8)
    texture[4:28, 4:28] = 10 + int(sample_id) % 50
    return cv2.imencode(".png", texture)[1].tobytes()


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A mirror laid out like the remote: release zips, ffhq-dataset-v2.json, FFHQ images by path."""
    site = tmp_path / "site"
    metadata = {}
    for sample_id in sorted(set(IDS + WEAK_IDS)):
        image = np.full((32, 32, 3), int(sample_id) % 200, np.uint8)
        _ok, encoded = cv2.imencode(".png", image)
        data = encoded.tobytes()
        rel = f"images1024x1024/{int(sample_id) // 1000 * 1000:05d}/{sample_id}.png"
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        metadata[str(int(sample_id))] = {
            "image": {
                "file_url": f"https://example.invalid/{rel}",
                "file_path": rel,
                "file_size": len(data),
                "file_md5": hashlib.md5(data).hexdigest(),
            }
        }
    (site / "test_file_lists.txt").write_text("01500\n")
    json_bytes = json.dumps(metadata).encode()
    (site / "ffhq-dataset-v2.json").write_bytes(json_bytes)
    monkeypatch.setattr(
        prepare, "FFHQ_JSON_SPEC", {**prepare.FFHQ_JSON_SPEC, "file_size": len(json_bytes), "file_md5": hashlib.md5(json_bytes).hexdigest()}
    )

    def zip_of(name, files):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            for member, payload in files.items():
                bundle.writestr(member, payload)
        (site / name).write_bytes(buffer.getvalue())

    mask = np.zeros((32, 32), np.uint8)
    mask[5, 3:20] = 255
    png = cv2.imencode(".png", mask)[1].tobytes()
    labels = io.BytesIO()
    np.save(labels, np.ones((16, 16), np.uint8))
    zip_of("manual_wrinkle_masks.zip", {f"manual_wrinkle_masks/{i}.png": png for i in IDS} | {"__MACOSX/._x": b"junk"})
    zip_of("face_parsed_labels.zip", {f"face_parsed_labels/{i}.npy": labels.getvalue() for i in IDS})
    # weak masks as published: weak_wrinkle_masks/{thousand}/{id}.png, grey texture maps, one value per id
    zip_of(
        "weak_wrinkle_masks.zip",
        {f"weak_wrinkle_masks/{int(i) // 1000 * 1000:05d}/{i}.png": weak_png(i) for i in WEAK_IDS} | {"__MACOSX/._y": b"junk"},
    )
    # Kim: a wrinkle mask of KIM_WRINKLE pixels and a different skin mask of KIM_SKIN pixels, so that a mix-up shows
    kim_mask = np.zeros((32, 32), np.uint8)
    kim_mask[5, 3:23] = kim_mask[9, 3:23] = 255
    kim_skin = np.zeros((32, 32), np.uint8)
    kim_skin[2:30, 2:30] = 255
    kim_png, skin_png = (cv2.imencode(".png", m)[1].tobytes() for m in (kim_mask, kim_skin))
    zip_of(
        "kim.zip",
        {f"wrinkle_dataset/wrinkle_masks/{i}.png": kim_png for i in IDS} | {f"wrinkle_dataset/skin_masks/{i}.png": skin_png for i in IDS},
    )
    zip_of("kim_flat.zip", {f"wrinkle_dataset/{i}.png": kim_png for i in IDS})  # none of Kim's folders

    RangeHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: RangeHandler(*a, directory=str(site), **k))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_ffhq_wrinkle_is_fetched_verified_and_laid_out(remote, tmp_path):
    site, url = remote
    root = tmp_path / "ffhq-wrinkle"
    assert prepare.main(["ffhq-wrinkle", "--root", str(root), "--mirror", url]) == 0
    samples = ffhq_wrinkle_samples(root, root / "images1024x1024")
    assert [s.id for s in samples] == IDS and all(s.face_mask is not None for s in samples)
    assert (root / "test_file_lists.txt").read_text() == "01500\n"
    assert (root / "images1024x1024" / "01000" / "01500.png").read_bytes() == (
        site / "images1024x1024" / "01000" / "01500.png"
    ).read_bytes()
    assert not list(root.rglob("*.part")) and not (root / "manual_wrinkle_masks" / "._x").exists()
    # a second run fetches nothing again
    before = len(RangeHandler.requests)
    assert prepare.main(["ffhq-wrinkle", "--root", str(root), "--mirror", url]) == 0
    assert len(RangeHandler.requests) == before


def test_an_interrupted_download_resumes_with_a_range_request(remote, tmp_path):
    site, url = remote
    rel = "images1024x1024/01000/01500.png"
    data = (site / rel).read_bytes()
    dest = tmp_path / "01500.png"
    (tmp_path / "01500.png.part").write_bytes(data[:40])  # what an interrupted run left
    fetch(f"{url}/{rel}", dest, len(data), hashlib.md5(data).hexdigest())
    assert dest.read_bytes() == data
    assert (f"/{rel}", "bytes=40-") in RangeHandler.requests


def test_a_download_that_does_not_verify_is_deleted_and_named(remote, tmp_path):
    _, url = remote
    with pytest.raises(FetchError, match="01500.png: MD5"):
        fetch(f"{url}/images1024x1024/01000/01500.png", tmp_path / "01500.png", md5="0" * 32)
    assert not (tmp_path / "01500.png").exists() and not (tmp_path / "01500.png.part").exists()
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{url}/nothing.png", tmp_path / "nothing.png")


def test_kim_from_a_local_zip(remote, tmp_path):
    site, _url = remote
    root = tmp_path / "kim"
    assert prepare.main(["kim", "--zip", str(site / "kim.zip"), "--root", str(root), "--mirror", str(site)]) == 0
    samples = kim_samples(root, root / "images1024x1024")
    assert [s.id for s in samples] == IDS and all(s.face_mask is not None for s in samples)
    # each mask comes from its own folder of the zip: the wrinkle mask is not the skin mask
    assert sorted(p.relative_to(root).as_posix() for p in (root / "wrinkle_masks").rglob("*")) == [f"wrinkle_masks/{i}.png" for i in IDS]
    assert sorted(p.relative_to(root).as_posix() for p in (root / "skin_masks").rglob("*")) == [f"skin_masks/{i}.png" for i in IDS]
    for sample in samples:
        _, mask, skin = load_sample(sample, None)
        assert (int(mask.sum()), int(skin.sum())) == (KIM_WRINKLE, KIM_SKIN)


def test_kim_zip_without_its_folders_is_a_one_line_error(remote, tmp_path, capsys):
    site, _ = remote
    root = tmp_path / "kim"
    from engine.cli import run_cli

    assert run_cli(prepare.main, ["kim", "--zip", str(site / "kim_flat.zip"), "--root", str(root), "--mirror", str(site)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kim_flat.zip" in err and "wrinkle_masks" in err and "skin_masks" in err
    assert not (root / "wrinkle_masks").exists()


@pytest.mark.parametrize(
    "members",
    [
        ["manual_wrinkle_masks/00002.png", "manual_wrinkle_masks/01500.png"],  # the folder at the top
        ["release/manual_wrinkle_masks/00002.png", "release/manual_wrinkle_masks/01500.png", "release/README.txt"],  # below it
        ["masks/00002.png", "masks/01500.png"],  # another top-level name: the top level is dropped
        ["00002.png", "01500.png"],  # no folder at all
    ],
)
def test_single_folder_zips_unpack_whatever_their_nesting(tmp_path, members):
    archive = tmp_path / "manual_wrinkle_masks.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for member in members:
            bundle.writestr(member, b"png")
    target = prepare.extract_folder(archive, tmp_path / "root", "manual_wrinkle_masks")
    assert sorted(p.name for p in target.rglob("*") if p.is_file()) == ["00002.png", "01500.png"]


def test_google_drive_links_use_the_direct_endpoint():
    assert (
        direct_url("https://drive.google.com/uc?id=ABC") == "https://drive.usercontent.google.com/download?id=ABC&export=download&confirm=t"
    )
    assert direct_url("https://drive.google.com/file/d/XYZ/view?usp=sharing").startswith(
        "https://drive.usercontent.google.com/download?id=XYZ"
    )
    assert direct_url("https://example.org/a.zip") == "https://example.org/a.zip"


def _weak(root, url, *extra):
    return ["ffhq-wrinkle", "--root", str(root), "--masks", "weak", "--mirror", url, *extra]


def _fetched_images(since=0):
    return sorted(path for path, _ in RangeHandler.requests[since:] if path.startswith("/images1024x1024/"))


def _weak_masks(root):
    return sorted(p.relative_to(root / "weak_wrinkle_masks").as_posix() for p in (root / "weak_wrinkle_masks").rglob("*") if p.is_file())


def test_weak_limit_takes_the_smallest_ids_their_images_only_and_extends(remote, tmp_path):
    site, url = remote
    root = tmp_path / "ffhq-wrinkle"
    assert prepare.main(_weak(root, url, "--weak-limit", "2")) == 0
    assert _weak_masks(root) == ["00000/00002.png", "00000/00777.png"]
    assert (root / "weak_wrinkle_masks" / "00000" / "00777.png").read_bytes() == weak_png("00777")
    assert _fetched_images() == ["/images1024x1024/00000/00002.png", "/images1024x1024/00000/00777.png"]
    fetched = {path for path, _ in RangeHandler.requests}
    assert "/face_parsed_labels.zip" not in fetched and "/manual_wrinkle_masks.zip" not in fetched  # weak masks need neither
    assert not list(root.rglob("*.part"))
    # what the ffhq_wrinkle source reads with masks: weak
    samples = ffhq_wrinkle_samples(root, root / "images1024x1024", masks="weak")
    assert [s.id for s in samples] == ["00002", "00777"]
    for sample in samples:
        image, mask, _skin = load_sample(sample, None)
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32)
    # a rerun fetches nothing; a larger limit adds the next id's mask and image only
    before = len(RangeHandler.requests)
    assert prepare.main(_weak(root, url, "--weak-limit", "2")) == 0
    assert len(RangeHandler.requests) == before
    assert prepare.main(_weak(root, url, "--weak-limit", "3")) == 0
    assert RangeHandler.requests[before:] == [("/images1024x1024/01000/01500.png", None)]
    assert _weak_masks(root) == ["00000/00002.png", "00000/00777.png", "01000/01500.png"]
    assert (root / "images1024x1024" / "01000" / "01500.png").read_bytes() == (site / "images1024x1024/01000/01500.png").read_bytes()
    # with the metadata on disk the estimate knows the average image size and which images are missing
    metadata = json.loads((root / "ffhq-dataset-v2.json").read_text())
    average = round(np.mean([item["image"]["file_size"] for item in metadata.values()]))
    needs = prepare.space_needed(root, root / "images1024x1024", ["weak_wrinkle_masks"], 5, url, metadata)
    assert needs[-1][:2] == (root / "images1024x1024", 2 * average)


Usage = namedtuple("Usage", "total used free")


def test_weak_masks_without_the_free_space_stop_before_anything_is_written(remote, tmp_path, monkeypatch, capsys):
    site, url = remote
    root = tmp_path / "ffhq-wrinkle"
    monkeypatch.setattr(prepare.shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 1000, 1000))
    assert run_cli(prepare.main, _weak(root, url, "--weak-limit", "2")) == 1
    err = capsys.readouterr().err.strip()
    zip_size = (site / "weak_wrinkle_masks.zip").stat().st_size
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {root}: not enough free space: needs about ")
    assert "1.0 kB free" in err and f"weak_wrinkle_masks.zip: {zip_size / 1000:.1f} kB" in err, err
    assert f"2 FFHQ images of about {prepare.FFHQ_IMAGE_BYTES / 1e6:.1f} MB: {2 * prepare.FFHQ_IMAGE_BYTES / 1e6:.1f} MB" in err, (
        err
    )  # no metadata yet: the stated average
    assert not root.exists() and RangeHandler.requests == []


@pytest.mark.parametrize(
    ("extra", "message"), [(["--weak-limit", "0"], "at least 1"), (["--masks", "manual", "--weak-limit", "2"], "only with")]
)
def test_a_weak_limit_that_cannot_apply_is_a_one_line_error(remote, tmp_path, capsys, extra, message):
    _, url = remote
    root = tmp_path / "ffhq-wrinkle"
    assert run_cli(prepare.main, [*_weak(root, url), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--weak-limit" in err and message in err
    assert not root.exists()


def test_a_weak_image_that_does_not_verify_is_refused_and_fetched_on_the_next_run(remote, tmp_path, capsys):
    site, url = remote
    root = tmp_path / "ffhq-wrinkle"
    served = site / "images1024x1024" / "00000" / "00777.png"
    good = served.read_bytes()
    served.write_bytes(bytes(b ^ 0xFF for b in good))  # same size, wrong MD5
    assert prepare.main(_weak(root, url, "--weak-limit", "2")) == 3
    assert "00777.png: MD5" in capsys.readouterr().err
    dest = root / "images1024x1024" / "00000" / "00777.png"
    assert not dest.exists() and not dest.with_name("00777.png.part").exists()
    assert (root / "images1024x1024" / "00000" / "00002.png").is_file() and (root / "weak_wrinkle_masks/00000/00777.png").is_file()
    served.write_bytes(good)
    assert prepare.main(_weak(root, url, "--weak-limit", "2")) == 0
    assert dest.read_bytes() == good
