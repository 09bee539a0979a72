"""The image readers' header check: sizes over the limit and unsupported formats are refused before
decoding, in one line naming the file; every supported variant still reads at its own size."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
from PIL import Image

from data.image_io import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_MEGAPIXELS,
    MAX_IMAGE_PIXELS,
    UNSUPPORTED_SUFFIXES,
    ImageReadError,
    read_binary_mask,
    read_rgb,
    unsupported_format,
)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims width x height RGB pixels."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def _pillow_bytes(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _never_decode():
    return mock.patch.object(cv2, "imdecode", side_effect=AssertionError("cv2.imdecode called on a refused file"))


def test_a_tiny_png_claiming_a_huge_size_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(40000, 40000))
    assert path.stat().st_size < 100
    with _never_decode():
        for reader in (read_rgb, read_binary_mask):
            with pytest.raises(ImageReadError) as err:
                reader(path)
            assert str(err.value) == (
                f"{path}: image too large: 40000x40000 pixels (limit {MAX_IMAGE_MEGAPIXELS} megapixels); downscale it below the limit first"
            )


@pytest.mark.parametrize("size", [(20000, 20000), (200_001, 1000)])
def test_sizes_just_over_the_limit_are_refused_too(tmp_path, size):
    """Below OpenCV's own 2**30-pixel assertion, where it would allocate gigabytes and then find no data."""
    path = tmp_path / "big.png"
    path.write_bytes(_png_claiming(*size))
    with _never_decode(), pytest.raises(ImageReadError, match=f"image too large: {size[0]}x{size[1]} pixels"):
        read_rgb(path)


@pytest.mark.parametrize("size", [(10000, 10000), (16320, 12240)])  # a 100 MP photo, a 200 MP phone sensor
def test_real_photo_sizes_reach_the_decoder(tmp_path, size):
    path = tmp_path / "photo.png"
    path.write_bytes(_png_claiming(*size))
    assert size[0] * size[1] <= MAX_IMAGE_PIXELS
    with mock.patch.object(cv2, "imdecode", return_value=np.zeros((2, 2, 3), np.uint8)) as decode:
        read_rgb(path)
    decode.assert_called_once()


def test_a_top_down_bmp_claiming_a_huge_size_is_refused(tmp_path):
    """A negative BMP height means "stored top row first", not a small image."""
    header = struct.pack("<IiiHHIIiiII", 40, 40000, -40000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path = tmp_path / "topdown.bmp"
    path.write_bytes(b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + header)
    with _never_decode(), pytest.raises(ImageReadError, match="image too large: 40000x40000 pixels"):
        read_rgb(path)


def test_an_opencv_assertion_becomes_an_image_read_error(tmp_path):
    """A 1,100,000 x 1 BMP is within the pixel limit but over OpenCV's 2**20 width: OpenCV asserts
    (cv2.error) instead of returning None."""
    header = struct.pack("<IiiHHIIiiII", 40, 1_100_000, 1, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path = tmp_path / "wide.bmp"
    path.write_bytes(b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + header)
    with pytest.raises(ImageReadError, match="wide.bmp: not a readable BMP image") as err:
        read_rgb(path)
    assert isinstance(err.value.__cause__, cv2.error)


def test_a_tiled_tiff_with_huge_tiles_is_refused(tmp_path):
    """A TIFF's decoder allocates whole tiles: a 4x4 image in 65535x65535 tiles counts as the tiles."""
    entries = [(256, 3, 1, 4), (257, 3, 1, 4), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (277, 3, 1, 1)]
    entries += [(322, 4, 1, 65535), (323, 4, 1, 65535)]  # TileWidth, TileLength
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    path = tmp_path / "tiles.tif"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd)
    with _never_decode(), pytest.raises(ImageReadError, match="image too large: 65535x65535 pixels"):
        read_rgb(path)


def _heic_like() -> bytes:
    """The start of an HEIC file: an ISO base media `ftyp` box with the heic brand (enough to name it)."""
    return struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 40


@pytest.mark.parametrize(
    "name, make, fmt",
    [
        ("anim.gif", lambda a: _pillow_bytes(a, "GIF"), "GIF"),
        ("renamed_gif.png", lambda a: _pillow_bytes(a, "GIF"), "GIF"),
        ("phone.heic", lambda a: _heic_like(), "HEIC"),
        ("web.avif", lambda a: _pillow_bytes(a, "AVIF"), "AVIF"),
        ("scan.jp2", lambda a: _pillow_bytes(a, "JPEG2000"), "JPEG 2000"),
        # Named by Pillow, no signature of ours. 16 px: Pillow 12 (the one gradio allows) writes an 8 px
        # image as a 6-byte ICO with no icon in it, which no reader identifies.
        ("icon.png", lambda a: _pillow_bytes(np.resize(a, (16, 16, 3)), "ICO"), "ICO"),
        ("layers.psd", lambda a: b"8BPS\x00\x01" + b"\x00" * 40, "PSD"),
    ],
)
def test_unsupported_formats_are_named(tmp_path, name, make, fmt):
    path = tmp_path / name
    path.write_bytes(make(np.full((8, 8, 3), 90, np.uint8)))
    with _never_decode():
        for reader in (read_rgb, read_binary_mask):
            with pytest.raises(ImageReadError) as err:
                reader(path)
            assert str(err.value) == f"{path}: unsupported image format {fmt} (use PNG, JPEG, BMP, TIFF or WebP)"
    assert unsupported_format(path) == fmt


def test_unsupported_format_is_none_for_supported_and_unknown_files(tmp_path):
    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes())
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    assert [unsupported_format(tmp_path / n) for n in ("a.png", "notes.png", "empty.png")] == [None, None, None]
    with pytest.raises(OSError):
        unsupported_format(tmp_path / "missing.png")


def test_unsupported_suffixes_list_common_formats_and_no_supported_one():
    assert {".gif", ".heic", ".heif", ".avif"} <= set(UNSUPPORTED_SUFFIXES)
    assert not set(UNSUPPORTED_SUFFIXES) & set(IMAGE_SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in UNSUPPORTED_SUFFIXES)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "not a readable image (the file is empty)"),
        (b"hello, world", "not a readable image (corrupt, truncated or unsupported format; use PNG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not a readable PNG image (its header is corrupt or truncated)"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "not a readable JPEG image (its header is corrupt or truncated)"),
    ],
)
def test_unreadable_files_name_the_file_in_one_line(tmp_path, content, fragment):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        read_rgb(path)
    assert str(err.value) == f"{path}: {fragment}" or str(err.value).startswith(f"{path}: {fragment}")
    assert "\n" not in str(err.value)


def _variants() -> dict[str, bytes]:
    """One file per supported layout whose header the probe must read right (size 37 x 23)."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (23, 37, 3), dtype=np.uint8)
    gray = rgb[..., 0].copy()
    files = {f"cv{ext}": cv2.imencode(ext, rgb)[1].tobytes() for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp")}
    files["cv16.tiff"] = cv2.imencode(".tiff", rgb.astype(np.uint16) * 257)[1].tobytes()
    files["cv16.png"] = cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes()
    files["palette.png"] = _pillow_bytes_mode(rgb, "P", "PNG")
    files["cmyk.jpg"] = _pillow_bytes_mode(rgb, "CMYK", "JPEG")
    files["progressive.jpg"] = _pillow_bytes(rgb, "JPEG", progressive=True)
    # SOF behind 100 kB of metadata (EXIF, ICC): the frame header is past any fixed-size header window
    files["icc.jpg"] = _pillow_bytes(rgb, "JPEG", icc_profile=bytes(rng.integers(0, 255, 100_000, dtype=np.uint8)))
    files["gray.bmp"] = _pillow_bytes(gray, "BMP")
    files["topdown.bmp"] = _top_down_bmp(rgb)
    files["pillow.tiff"] = _pillow_bytes(rgb, "TIFF", compression="tiff_lzw")
    files["bigendian.tiff"] = _pillow_bytes_mode(rgb, "I;16B", "TIFF")
    files["lossless.webp"] = _pillow_bytes(rgb, "WEBP", lossless=True)  # VP8L
    files["lossy.webp"] = _pillow_bytes(rgb, "WEBP", quality=80)  # VP8
    files["alpha.webp"] = _pillow_bytes(np.dstack([rgb, gray]), "WEBP")  # VP8X
    return files


def _pillow_bytes_mode(rgb: np.ndarray, mode: str, fmt: str) -> bytes:
    image = Image.fromarray(rgb)
    image = image.convert("L").convert(mode) if mode.startswith("I;16") else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _top_down_bmp(rgb: np.ndarray) -> bytes:
    """A BMP stored top row first, which its header says with a negative height."""
    height, width = rgb.shape[:2]
    stride = (width * 3 + 3) // 4 * 4
    rows = b"".join(rgb[y, :, ::-1].tobytes().ljust(stride, b"\x00") for y in range(height))
    header = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(rows), 0, 0, 54) + header + rows


@pytest.mark.parametrize("name", sorted(_variants()))
def test_every_supported_variant_still_reads(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(_variants()[name])
    image = read_rgb(path)
    assert image.shape == (23, 37, 3) and image.dtype == np.uint8
    assert read_binary_mask(path).shape == (23, 37)


def test_header_probe_costs_little_next_to_decoding(tmp_path):
    """The probe reads a few header bytes; it must stay a small fraction of decoding (measured: well
    under 1% for a 1024x1024 PNG or JPEG). Bound loosely so a busy CI machine cannot fail it."""
    from data import image_io

    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8), (9, 9), 3)
    for ext in (".png", ".jpg"):
        buffer = cv2.imencode(ext, photo)[1]
        view = memoryview(buffer)
        start = time.perf_counter()
        for _ in range(20):
            image_io._check_header(Path("x" + ext), view)
        probe = (time.perf_counter() - start) / 20
        start = time.perf_counter()
        for _ in range(3):
            cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        decode = (time.perf_counter() - start) / 3
        assert probe < 0.05 * decode, (ext, probe, decode)
