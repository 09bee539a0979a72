"""Reading and writing images and masks: RGB out of any common format, binary masks, atomic writes.

Every read looks at the file's header before decoding it: the format comes from the file's first bytes
(never from its suffix) and must be one of PNG, JPEG, BMP, TIFF or WebP; the size the header claims must
stay within `MAX_IMAGE_MEGAPIXELS`. So a GIF renamed `.png` is named as a GIF, and a PNG of 65 bytes that
claims 40000x40000 pixels is refused in a line instead of making OpenCV allocate gigabytes or fail an
internal assertion.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np

from engine.errors import WrinkleError
from engine.fileio import write_bytes_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Suffixes of image formats people do bring (phone photos, web images, camera raw files) that the readers
# refuse, so that a folder listing can say "unsupported format" instead of "not an image file".
UNSUPPORTED_SUFFIXES = (
    ".gif",
    ".heic",
    ".heif",
    ".avif",
    ".jxl",
    ".jp2",
    ".j2k",
    ".ico",
    ".psd",
    ".svg",
    ".pbm",
    ".pgm",
    ".ppm",
    ".pnm",
    ".exr",
    ".hdr",
    ".tga",
    ".dng",
    ".cr2",
    ".cr3",
    ".nef",
    ".arw",
    ".orf",
    ".raf",
    ".rw2",
)
SUPPORTED_FORMATS_HINT = "use PNG, JPEG, BMP, TIFF or WebP"

# The most pixels (width x height, in millions) a header may claim. It holds every real photo, a 200 MP
# phone sensor's 16320x12240 included, while bounding what one decode allocates: at the limit, 1.2 GB for
# the 16-bit BGR buffer OpenCV fills and 0.6 GB for the RGB result.
MAX_IMAGE_MEGAPIXELS = 200
MAX_IMAGE_PIXELS = MAX_IMAGE_MEGAPIXELS * 1_000_000


class ImageReadError(WrinkleError, ValueError):
    """An image or mask file that cannot be decoded; the message names the file."""


# ----------------------------------------------------------------------------------------------
# Header probe: the format from the first bytes, the claimed size from the header, no pixel decoded.
# A reader of our own rather than Pillow's Image.open for the formats we decode: Image.open raises
# DecompressionBombError above 179 MP before it tells the size, warns above 89 MP (and warning filters
# are process-wide, while data.check reads in threads), and its WebP opener builds a whole libwebp
# decoder. Pillow only names formats that the signatures below do not know.
# ----------------------------------------------------------------------------------------------

_UNSUPPORTED_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"8BPS", "PSD"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
)
_HEIF_BRANDS = {  # ISO base media file brands (the `ftyp` box) of still-image formats
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"hevm": "HEIC",
    b"hevs": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
}
_NAMING_BYTES = 1 << 16  # enough for every signature, and for every header Pillow reads to name a format
_SUPPORTED_PILLOW_NAMES = {"PNG", "JPEG", "MPO", "BMP", "DIB", "TIFF", "WEBP"}
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): they carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}  # markers without a length


def _supported_format(data: bytes) -> str | None:
    """The decodable format the first bytes announce, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _unsupported_format(data: bytes) -> str | None:
    """The name of a recognised image format that is not decoded here, or None."""
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[4:8] == b"ftyp":  # HEIC, HEIF, AVIF: the major brand, then the compatible ones
        box_end = min(int.from_bytes(data[:4], "big"), len(data), 4096)
        brands = [data[8:12]] + [data[i : i + 4] for i in range(16, box_end - 3, 4)]
        for brand in brands:
            if brand in _HEIF_BRANDS:
                return _HEIF_BRANDS[brand]
        return None
    return _pillow_format(data)


def _pillow_format(data: bytes) -> str | None:
    """Pillow's name for the format (ICO, PPM, TGA...), when Pillow identifies the bytes as an image."""
    from PIL import Image  # only for files no signature above knows: keeps the common path free of it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning and the like: only the name is wanted
            with Image.open(io.BytesIO(data)) as image:
                name = image.format
    except Exception:  # noqa: BLE001 -- any plugin's failure on foreign bytes means "not identified", not a bug here
        return None
    return None if name is None or name.upper() in _SUPPORTED_PILLOW_NAMES else name


def _jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """Width and height from the first start-of-frame segment, walking the segments from SOI."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA:  # scan data before any frame header
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _tiff_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """Width and height from the first image file directory (the page OpenCV decodes); a tile larger
    than the image counts as the size, since the decoder allocates a whole tile."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")  # BigTIFF: 64-bit offsets and counts, 20-byte entries
    try:
        if big:
            (offset,) = struct.unpack(order + "Q", data[8:16])
            (count,) = struct.unpack(order + "Q", data[offset : offset + 8])
            first, entry = offset + 8, 20
        else:
            (offset,) = struct.unpack(order + "I", data[4:8])
            (count,) = struct.unpack(order + "H", data[offset : offset + 2])
            first, entry = offset + 2, 12
    except struct.error:  # offset past the end: a truncated file
        return None
    tags: dict[int, int] = {}
    for i in range(min(count, (len(data) - first) // entry)):
        at = first + i * entry
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        value = data[at + (12 if big else 8) : at + entry]
        if tag in (256, 257, 322, 323):  # ImageWidth, ImageLength, TileWidth, TileLength
            if kind == 3:  # SHORT
                tags[tag] = struct.unpack(order + "H", value[:2])[0]
            elif kind == 4:  # LONG
                tags[tag] = struct.unpack(order + "I", value[:4])[0]
            elif kind == 16 and big:  # LONG8
                tags[tag] = struct.unpack(order + "Q", value[:8])[0]
    if 256 not in tags or 257 not in tags:
        return None
    return max(tags[256], tags.get(322, 0)), max(tags[257], tags.get(323, 0))


def _header_size(fmt: str, data: bytes | memoryview) -> tuple[int, int] | None:
    """The width and height a supported format's header claims; None when the header is cut or bad."""
    if fmt == "PNG":
        return struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" and len(data) >= 24 else None
    if fmt == "JPEG":
        return _jpeg_size(data)
    if fmt == "TIFF":
        return _tiff_size(data)
    if fmt == "BMP":
        if len(data) < 26:
            return None
        if int.from_bytes(data[14:18], "little") == 12:  # OS/2 core header: 16-bit sizes
            return struct.unpack("<HH", data[18:22])
        width, height = struct.unpack("<ii", data[18:26])  # height < 0: stored top-down
        return abs(width), abs(height)
    if fmt == "WebP":  # the first chunk: lossy (VP8), lossless (VP8L) or extended (VP8X, canvas size)
        chunk = data[12:16]
        if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X" and len(data) >= 30:
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _check_header(path: Path, data: bytes | memoryview) -> str:
    """The file's format after checking its header: ImageReadError for an unsupported format, a
    header that cannot be read, or a size over MAX_IMAGE_MEGAPIXELS. `data` is the whole file: a JPEG's
    frame header may follow large EXIF or ICC segments, a TIFF's directory is often at the end."""
    fmt = _supported_format(bytes(data[:16]))
    if fmt is None:
        other = _unsupported_format(bytes(data[:_NAMING_BYTES]))
        if other is not None:
            raise ImageReadError(f"{path}: unsupported image format {other} ({SUPPORTED_FORMATS_HINT})")
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or unsupported format; {SUPPORTED_FORMATS_HINT})")
    size = _header_size(fmt, data)
    if size is None:
        raise ImageReadError(f"{path}: not a readable {fmt} image (its header is corrupt or truncated)")
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        limit = f"limit {MAX_IMAGE_MEGAPIXELS} megapixels"
        raise ImageReadError(f"{path}: image too large: {width}x{height} pixels ({limit}); downscale it below the limit first")
    return fmt


def unsupported_format(path: str | Path) -> str | None:
    """The name of the recognised but unsupported image format of the file at `path` (GIF, HEIC, AVIF,
    JPEG 2000, PSD, ICO...), judged by its content whatever its suffix; None for a supported or an
    unrecognised file. For batch CLIs that sort inputs before reading them; OSError when unreadable."""
    with open(path, "rb") as handle:
        data = handle.read(_NAMING_BYTES)
    return None if _supported_format(data) is not None else _unsupported_format(data)


def _decode(path: Path, flags: int) -> np.ndarray:
    """Check the header, then decode with OpenCV; every failure is an ImageReadError naming the file."""
    try:
        buffer = np.fromfile(path, dtype=np.uint8)  # np.fromfile copes with non-ASCII paths, unlike imread
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from err
    if not buffer.size:
        raise ImageReadError(f"{path}: not a readable image (the file is empty)")
    fmt = _check_header(path, memoryview(buffer))  # a view: the header walk copies nothing
    try:
        array = cv2.imdecode(buffer, flags)
    except cv2.error as err:  # OpenCV's own checks (e.g. a width over 2**20) assert instead of returning None
        raise ImageReadError(f"{path}: not a readable {fmt} image (corrupt, truncated or an unsupported variant)") from err
    if array is None:
        raise ImageReadError(f"{path}: not a readable {fmt} image (corrupt, truncated or an unsupported variant)")
    return array


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB, H x W x 3, turned upright per its EXIF orientation (phone photos
    are often stored sideways): alpha is dropped, grayscale repeated, 16-bit scaled. An unreadable file,
    an unsupported format or a header over MAX_IMAGE_MEGAPIXELS is a one-line ImageReadError."""
    path = Path(path)
    array = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # IMREAD_COLOR applies EXIF orientation
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {array.dtype}")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def read_binary_mask(path: str | Path, threshold: int | None = None) -> np.ndarray:
    """Read a mask as bool, H x W.

    Masks come as grayscale 0/1 or 0/255 (both occur in published data sets), 16-bit, palette images
    (read through their palette, as "L" would) and colour images such as red on black: a pixel's value
    is its brightest channel, so a coloured mark counts whatever its hue (luminance would put pure red
    at 76 and read it as background). With `threshold` None, a mask whose maximum is 1 is read as `> 0`
    and any other as `> 127`, which also absorbs stray values such as a background of 2; pass a
    threshold to force one rule. Files are checked as for `read_rgb`.
    """
    path = Path(path)
    array = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # palette expanded, gray repeated, EXIF applied as for images
    if array.dtype == np.uint16:
        array = array // 257
    elif array.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {array.dtype} for a mask")
    value = array.max(axis=2) if array.ndim == 3 else array
    if threshold is None:
        threshold = 0 if value.max() <= 1 else 127
    return value > threshold


def read_gray(path: str | Path) -> np.ndarray:
    """Read an 8-bit map (e.g. a texture map, FFHQ-Wrinkle's weak masks) as uint8 H x W, values as stored
    (16-bit scaled, colour taken as its brightest channel, as `read_binary_mask` reads a pixel)."""
    path = Path(path)
    array = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {array.dtype} for a map")
    return array.max(axis=2) if array.ndim == 3 else array


def find_face_mask(face_mask_dir: Path, stem: str) -> Path:
    """The skin mask for `stem` (a name below the folder, without suffix) in `face_mask_dir` (any image suffix)."""
    for suffix in IMAGE_SUFFIXES:
        candidate = face_mask_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise ImageReadError(f"{face_mask_dir}: no face mask named {stem}.*")


def read_rgb_with_face_mask(path: Path, face_mask_dir: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """An image (RGB) and its skin mask (bool), the file named `stem` in `face_mask_dir`; a missing or
    unreadable mask, or one of another size, is an ImageReadError naming it."""
    image = read_rgb(path)
    mask_path = find_face_mask(face_mask_dir, stem)
    skin = read_binary_mask(mask_path)
    if skin.shape != image.shape[:2]:
        raise ImageReadError(f"{mask_path}: face mask is {skin.shape[1]}x{skin.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
    return image, skin


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write an RGB or single-channel uint8 array as PNG, atomically (OutputError naming `path` on failure)."""
    path = Path(path)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, encoded.tobytes())


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder` (by suffix), sorted by name; hidden files are ignored."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an RGB image: area averaging when shrinking, bilinear when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] > height or image.shape[1] > width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, height: int, width: int, thin: bool = True) -> np.ndarray:
    """Resize a boolean mask.

    Shrinking a `thin`-structure mask (wrinkles) marks a pixel when any part of its footprint was set,
    so a 1-px line at 1024 stays a line at 512; a region mask (`thin=False`, skin) takes the majority.
    Enlarging uses nearest neighbour.
    """
    if mask.shape[:2] == (height, width):
        return mask.astype(bool)
    shrinking = mask.shape[0] > height or mask.shape[1] > width
    if shrinking:
        coverage = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        return coverage > 1e-6 if thin else coverage >= 0.5
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
