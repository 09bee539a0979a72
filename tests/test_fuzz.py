"""Property-based fuzzing of the two parsers of outside input: the config loader and the image readers.

Each property states the whole contract: a result of the documented type, or the project's expected
error (ConfigError, ImageReadError) with a one-line message; any other exception is a bug. Runs are
derandomized (the same examples on every machine, so CI is reproducible) and bounded to a few seconds.
"""

from __future__ import annotations

import contextlib
import datetime
import struct
import typing
import zlib
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from config import Config, ConfigError, config_from_dict, load_config
from data.image_io import MAX_IMAGE_PIXELS, ImageReadError, read_binary_mask, read_rgb

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None)


# ----------------------------------------------------------------------------------------------
# Config loader
# ----------------------------------------------------------------------------------------------


def _schema_names() -> tuple[list[str], list[str]]:
    """Section names and every field name of the real schema, so examples hit real keys often."""
    sections, fields = list(Config.model_fields), set()
    todo = [info.annotation for info in Config.model_fields.values()]
    while todo:
        for name, info in todo.pop().model_fields.items():
            fields.add(name)
            todo.extend(t for t in (info.annotation, *typing.get_args(info.annotation)) if isinstance(t, type) and issubclass(t, BaseModel))
    return sections, sorted(fields)


SECTIONS, FIELDS = _schema_names()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, 10**30, 10**400, -(10**400)]),  # beyond int64, beyond float range
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "cpu", "skin", "files", "resnet18", "imagenet", "3e-4", "1e999", "nan", "", "\n", "~"]),
    st.dates(),
    st.datetimes(),
)
keys = st.one_of(
    st.sampled_from(SECTIONS + FIELDS), st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none(), st.floats(allow_nan=False)
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12)
sections = st.dictionaries(st.sampled_from(FIELDS) | keys, values, max_size=5)
documents = st.one_of(
    st.dictionaries(st.sampled_from(SECTIONS), sections, max_size=4),  # the schema's shape, wrong-typed values inside
    st.dictionaries(keys, values, max_size=4),
    values,
)

KEY_PARTS = ["sources", "0", "1", "99", "-1", "²", "9" * 5000, ""]  # list indices real, out of range, not ASCII, huge
override_keys = st.lists(st.one_of(st.sampled_from(SECTIONS + FIELDS + KEY_PARTS), st.text(max_size=6)), min_size=1, max_size=4)
override_keys = override_keys.map(".".join)
VALUES = ["3", "1e-4", "null", "[1, 2]", "{a: 1}", "{1: 2}", "true", "'", "[", "2024-13-45", "9" * 5000, "!!float x", ".nan", "", "&a [*a]"]
override_values = st.one_of(st.sampled_from(VALUES), st.text(max_size=10))
overrides = st.one_of(
    st.tuples(override_keys, st.sampled_from(["=", " = ", "==", ""]), override_values).map("".join),
    st.text(max_size=20),
)

# YAML text no dumper writes: aliases and recursion, bad dates, huge numbers, deep nesting, tags, junk.
YAML_SNIPPETS = [
    "train:\n  epochs: &n 3\n  batch_size: *n\n",
    "a: &a [*a]\n",
    "train: &t {epochs: 1}\neval: *t\n",
    "train:\n  epochs: 2024-13-45\n",
    "train:\n  grad_clip: " + "9" * 5000 + "\n",
    "optim:\n  lr: " + "9" * 400 + "\n",
    "data:\n  sources: " + "[" * 600 + "]" * 600 + "\n",
    "model:\n  decoder_channels: " + "[" * 30 + "1" + "]" * 30 + "\n",
    "optim:\n  lr: !!float x\n",
    "optim:\n  lr: !!python/object/apply:os.system [echo]\n",
    "? [1, 2]\n: x\n",
    "train:\n\tepochs: 1\n",
    "train: {epochs: 1\n",
    "%YAML 9.9\n---\na: 1\n",
    "--- 1\n--- 2\n",
    "\x00\x01",
    "train:\n  epochs: !!binary zz\n",
    "data:\n  sources: !!set {a, b}\n",
    "'" + "x" * 10 + "\n",
]


def _assert_config_or_one_line_error(path: Path | None, overrides: list[str]) -> None:
    """The loader's contract: a Config, or a ConfigError whose message is one non-empty line."""
    try:
        cfg = load_config(path, overrides)
    except ConfigError as err:
        message = str(err)
        assert message and len(message.splitlines()) == 1, repr(message)
        assert len(message) < 2000, f"message of {len(message)} characters"
        return
    assert isinstance(cfg, Config)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(document=documents, alias=st.booleans(), cut=st.none() | st.integers(0, 400), items=st.lists(overrides, max_size=2))
def test_config_file_fuzz(fuzz_dir: Path, document: object, alias: bool, cut: int | None, items: list[str]) -> None:
    if alias and isinstance(document, dict) and len(document) >= 2:  # one object twice: the dumper writes an anchor and an alias
        first, second = list(document)[:2]
        document[second] = document[first]
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    if cut is not None:
        text = text[:cut]  # mid-token, mid-indentation, mid-quote
    path = fuzz_dir / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    _assert_config_or_one_line_error(path, items)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200), st.sampled_from(YAML_SNIPPETS).map(str.encode), st.text(max_size=200).map(lambda t: t.encode("utf-16"))
    )
)
@example(data="# é\n".encode("latin-1"))
@example(data=b"\xef\xbb\xbftrain:\n  epochs: 2\n")
def test_config_file_bytes_fuzz(fuzz_dir: Path, data: bytes) -> None:
    path = fuzz_dir / "fuzz_bytes.yaml"
    path.write_bytes(data)
    _assert_config_or_one_line_error(path, [])


@FUZZ
@given(items=st.lists(overrides, max_size=4))
@example(items=["train={1: 2}", "train.epochs=3"])
@example(items=["data.sources.²=x"])
@example(items=["a\nb=1"])
def test_config_overrides_fuzz(items: list[str]) -> None:
    _assert_config_or_one_line_error(None, items)


# ----------------------------------------------------------------------------------------------
# Image and mask readers
# ----------------------------------------------------------------------------------------------

ENCODINGS = [".png", ".jpg", ".bmp", ".tiff", ".webp"]
SIGNATURES = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8X", b"GIF89a"]
SIGNATURES += [b"\x00\x00\x00\x18ftypheic"]
SMALL_SIZES = st.tuples(st.integers(0, 40), st.integers(0, 40)) | st.sampled_from([(1, 1), (0, 0), (1, 60000), (60000, 1), (255, 256)])
# Every pair claims more than the limit (15000^2 = 225 MP > 200 MP), within every format's field width.
HUGE_SIZES = st.tuples(st.integers(15000, 16383), st.integers(15000, 16383)) | st.sampled_from(
    [(40000, 40000), (60000, 60000), (65535, 65535), (2**31 - 1, 2)]
)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _header(fmt: str, width: int, height: int) -> bytes:
    """A well-formed header of `fmt` that claims width x height pixels, without (most of) the pixels."""
    if fmt == "png":
        ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    if fmt == "bmp":
        return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    if fmt == "jpeg":
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height & 0xFFFF, width & 0xFFFF, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
        app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        return b"\xff\xd8" + app0 + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    if fmt == "tiff":
        entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
        entries += [(273, 4, 1, 8), (277, 3, 1, 1), (279, 4, 1, 1)]  # strip offset, samples per pixel, strip bytes
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00\x00\x00\x00"
        return b"II*\x00" + struct.pack("<I", 8) + ifd
    if fmt == "webp":
        canvas = (max(width, 1) - 1).to_bytes(3, "little") + (max(height, 1) - 1).to_bytes(3, "little")
        vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + canvas
        return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    if fmt == "gif":
        return b"GIF89a" + struct.pack("<HHBBB", width & 0xFFFF, height & 0xFFFF, 0, 0, 0) + b";"
    raise ValueError(fmt)


def _assert_read_contract(path: Path) -> None:
    """Both readers: an array of the documented shape and type, or a one-line ImageReadError naming the file."""
    for reader in (read_rgb, read_binary_mask):
        try:
            array = reader(path)
        except ImageReadError as err:
            message = str(err)
            assert str(path) in message and len(message.splitlines()) == 1, repr(message)
            continue
        assert isinstance(array, np.ndarray)
        if reader is read_rgb:
            assert array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8, (array.shape, array.dtype)
        else:
            assert array.ndim == 2 and array.dtype == bool, (array.shape, array.dtype)


@FUZZ
@given(
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    channels=st.sampled_from([1, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    suffix=st.sampled_from(ENCODINGS),
    seed=st.integers(0, 2**16),
    damage=st.sampled_from(["none", "truncate", "flip", "flip_header"]),
)
def test_encoded_images_fuzz(
    fuzz_dir: Path, height: int, width: int, channels: int, dtype: type, suffix: str, seed: int, damage: str
) -> None:
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    array = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    try:
        ok, encoded = cv2.imencode(suffix, array)
    except cv2.error:  # a layout this encoder does not write
        return
    if not ok:
        return
    data = bytearray(encoded.tobytes())
    if damage == "truncate":
        data = data[: int(rng.integers(0, len(data)))]
    elif damage in ("flip", "flip_header"):
        span = min(len(data), 64) if damage == "flip_header" else len(data)
        for at in rng.integers(0, span, int(rng.integers(1, 8))):
            data[at] ^= 1 << int(rng.integers(0, 8))
    path = fuzz_dir / f"encoded{suffix}"
    path.write_bytes(bytes(data))
    _assert_read_contract(path)
    if damage == "none":  # an intact file reads, at its own size
        assert read_rgb(path).shape == (height, width, 3)
        assert read_binary_mask(path).shape == (height, width)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=300)).map(b"".join),  # a known start, then junk
    )
)
def test_random_bytes_fuzz(fuzz_dir: Path, data: bytes) -> None:
    path = fuzz_dir / "random.png"
    path.write_bytes(data)
    _assert_read_contract(path)


@FUZZ
@given(
    fmt=st.sampled_from(["png", "bmp", "jpeg", "tiff", "webp", "gif"]),
    size=SMALL_SIZES,
    tail=st.binary(max_size=64),
    cut=st.none() | st.integers(0, 80),
)
def test_small_claimed_sizes_fuzz(fuzz_dir: Path, fmt: str, size: tuple[int, int], tail: bytes, cut: int | None) -> None:
    path = fuzz_dir / f"claims.{fmt}"
    path.write_bytes((_header(fmt, *size) + tail)[:cut])  # cut: a header that stops part-way
    _assert_read_contract(path)


@FUZZ
@given(fmt=st.sampled_from(["png", "bmp", "jpeg", "tiff", "webp"]), size=HUGE_SIZES, tail=st.binary(max_size=64))
def test_huge_claimed_sizes_are_refused_before_decoding(fuzz_dir: Path, fmt: str, size: tuple[int, int], tail: bytes) -> None:
    width, height = size
    assume(fmt not in ("jpeg", "webp") or max(size) <= 65535)  # JPEG's 16-bit size fields
    assert width * height > MAX_IMAGE_PIXELS
    path = fuzz_dir / f"huge.{fmt}"
    path.write_bytes(_header(fmt, width, height) + tail)
    with mock.patch.object(cv2, "imdecode", side_effect=AssertionError("decoded a header over the limit")):
        for reader in (read_rgb, read_binary_mask):
            with pytest.raises(ImageReadError, match=f"image too large: {width}x{height} pixels"):
                reader(path)


def test_fuzz_claims_are_checked_against_the_real_decoder(fuzz_dir: Path) -> None:
    """The synthetic headers above are real enough for OpenCV: a 1x1 claim of each decodable format
    reaches the decoder (it may then find the pixels missing), so the huge claims test the probe."""
    for fmt in ("png", "bmp", "jpeg", "tiff", "webp"):
        path = fuzz_dir / f"one.{fmt}"
        path.write_bytes(_header(fmt, 3, 2))
        with mock.patch.object(cv2, "imdecode", wraps=cv2.imdecode) as decode, contextlib.suppress(ImageReadError):
            read_rgb(path)
        assert decode.called, fmt


def test_dates_survive_as_wrong_types(fuzz_dir: Path) -> None:
    """A date is text in YAML 1.2 (the config loader's); a date object from plain data is refused, not crashed on."""
    path = fuzz_dir / "date.yaml"
    path.write_text(yaml.safe_dump({"experiment": {"name": datetime.date(2024, 1, 2)}}))
    assert load_config(path).experiment.name == "2024-01-02"
    with pytest.raises(ConfigError, match="experiment.name: expected a string, got datetime.date"):
        config_from_dict({"experiment": {"name": datetime.date(2024, 1, 2)}})
