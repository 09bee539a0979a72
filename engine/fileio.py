"""Files: written so that a crash, a full disk or Ctrl-C never leaves a half-written one behind, and
digested (md5 / sha256) for downloads and model checks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from engine.errors import OutputError, describe_os_error


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process and thread (so parallel writers never meet)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", fsync: bool = False, newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on success rename it over `path`, on any failure
    remove it. OS errors (disk full, read-only folder, a folder in the way) become one-line
    `OutputError`s naming `path`; `fsync` also flushes the data to the disk before the rename."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "b" not in mode
        with open(tmp, mode, encoding="utf-8" if text else None, newline=newline if text else None) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder, not a file", str(path))
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"cannot write {describe_os_error(err, path)}") from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes, fsync: bool = False) -> None:
    """`path.write_bytes(data)`, atomically."""
    with atomic_write(path, "wb", fsync) as handle:
        handle.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """`path.write_text(text)` (UTF-8), atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
