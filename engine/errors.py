"""The project's one base class for expected failures, and the one-line form of file-system faults.

An expected failure is bad input or a missing resource, never a bug: its message is one line that
names the file or the config option and says what to do. The CLIs print it as `error: <message>` and
exit 1; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path

# File-system faults that say something about the machine, not about the code: reported in one line.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE, errno.ENFILE})


class WrinkleError(Exception):
    """An expected failure; the message names the file or option and the way out."""


class OutputError(WrinkleError):
    """A file or folder that cannot be written (disk full, read-only, a file where a folder should be)."""


def describe_os_error(err: OSError, path: str | Path | None = None) -> str:
    """`path: cause` in words ("No space left on device"), for a one-line message."""
    where = path if path is not None else err.filename
    cause = err.strerror or str(err) or type(err).__name__
    cause = cause[:1].lower() + cause[1:] if not cause[1:2].isupper() else cause  # "No space ..." -> "no space ..."
    return f"{where}: {cause}" if where else cause


class UnknownNameError(WrinkleError, KeyError):
    """A name that is not one of a family's (encoder, cache mode, split, ...); the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError's own str() would show the message in quotes
        return str(self.args[0]) if self.args else ""
