"""Downloading files that resume, verify and never leave a half-written result.

A file is fetched into `<dest>.part`, continued with an HTTP Range request after an interruption,
checked against its expected size and MD5, and only then renamed to `dest`. Sources may be http(s)
URLs, Google Drive `uc?id=` links, `file://` URLs or local paths (a local mirror of the remote).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from engine.errors import WrinkleError
from engine.fileio import file_digest

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "wrinkle-segmentation-data-prepare/1"


class FetchError(WrinkleError):
    """A download that failed or did not verify; the message names the file."""


def direct_url(url: str) -> str:
    """Google Drive share links -> the direct download endpoint that skips the virus-scan page."""
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc in ("drive.google.com", "docs.google.com"):
        query = urllib.parse.parse_qs(parsed.query)
        file_id = query.get("id", [None])[0]
        if file_id is None and "/file/d/" in parsed.path:
            file_id = parsed.path.split("/file/d/")[1].split("/")[0]
        if file_id:
            return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"
    return url


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if "://" not in url:
        return Path(url)
    return None


def _copy_from(stream, part: Path, mode: str) -> None:
    with open(part, mode) as out:
        shutil.copyfileobj(stream, out, CHUNK)


def _download_once(url: str, part: Path) -> None:
    """Append the rest of `url` to `part` (from its current size on)."""
    offset = part.stat().st_size if part.exists() else 0
    local = _local_path(url)
    if local is not None:
        if not local.is_file():
            raise FetchError(f"{url}: no such file")
        with open(local, "rb") as source:
            source.seek(offset)
            _copy_from(source, part, "ab")
        return
    request = urllib.request.Request(direct_url(url), headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if "text/html" in response.headers.get("Content-Type", "") and "drive" in url:
                raise FetchError(f"{url}: Google Drive answered with a web page (download quota exceeded, or the file is not public)")
            resumed = response.status == 206
            if offset and not resumed:
                log.info("%s: the server cannot resume; starting over", url)
            _copy_from(response, part, "ab" if resumed else "wb")
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range not satisfiable: the part is already complete
            return
        raise FetchError(f"{url}: HTTP {err.code} {err.reason}") from err


def remote_size(url: str) -> int | None:
    """The size in bytes that `url` would download, when its source says so (a local file's size, the
    Content-Length of an HTTP HEAD request); None when it does not or cannot be asked. Downloads nothing."""
    local = _local_path(url)
    if local is not None:
        return local.stat().st_size if local.is_file() else None
    request = urllib.request.Request(direct_url(url), method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            length = response.headers.get("Content-Length", "")
            if "text/html" in response.headers.get("Content-Type", "") or not length.isdigit():
                return None  # a web page (Google Drive's quota or sign-in page), or no size given
            return int(length)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError):
        return None


def fetch(url: str, dest: str | Path, size: int | None = None, md5: str | None = None, attempts: int = 3) -> Path:
    """Download `url` to `dest`, resuming `dest.part` and verifying size and MD5 when given.

    An existing `dest` that verifies is kept. A verification failure deletes the partial file and
    raises FetchError; nothing is ever left at `dest` that did not verify.
    """
    dest = Path(dest)
    if dest.is_file() and (size is None or dest.stat().st_size == size) and (md5 is None or file_digest(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _download_once(url, part)
            break
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            if attempt == attempts:
                raise FetchError(f"{url}: download failed after {attempt} attempts ({err})") from err
            log.warning("%s: %s; retrying (the partial file is kept)", url, err)
            time.sleep(2**attempt)
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        if actual_size > size:
            part.unlink()
        raise FetchError(
            f"{dest.name}: got {actual_size} bytes, expected {size}" + (" (run again to resume)" if actual_size < size else "")
        )
    if md5 is not None:
        actual = file_digest(part)
        if actual != md5:
            part.unlink()
            raise FetchError(f"{dest.name}: MD5 {actual} does not match the published {md5}; the download was deleted")
    os.replace(part, dest)
    return dest
