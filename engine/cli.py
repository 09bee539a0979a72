"""Command-line plumbing shared by the four CLIs: logging set-up and one-line errors with exit codes."""

from __future__ import annotations

import csv
import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ENVIRONMENT_ERRNOS, OutputError, WrinkleError, describe_os_error
from engine.fileio import atomic_write

if TYPE_CHECKING:
    import numpy as np

    from engine.output_folder import OutputFolder

EXIT_OK = 0
EXIT_ERROR = 1  # nothing (more) could be done: bad config, checkpoint or data
EXIT_PARTIAL = 3  # a batch finished, but some input files could not be processed (see summary.csv)


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr (stdout carries the result: a path), quiet third-party chatter; `quiet`: warnings only."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home on import otherwise
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("PIL", "matplotlib", "urllib3", "huggingface_hub", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class InputError(WrinkleError):
    """An input folder that cannot be processed as a whole (missing, or no image files in it)."""


def list_inputs(input_dir: Path, recursive: bool = False, option: str = "--input") -> list[Path]:
    """Every visible non-folder entry in `input_dir` (with `recursive`, in its sub-folders too), sorted;
    broken links included, so batch CLIs give each a status row (see `input_problem`). A folder with
    no image file in it is an error that says so, naming the command's `option`."""
    from data.image_io import IMAGE_SUFFIXES, UNSUPPORTED_SUFFIXES

    if not input_dir.is_dir():
        raise InputError(f"{option}: not a folder: {input_dir}")
    entries = []
    for folder, dirs, files in os.walk(input_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        entries += [Path(folder) / name for name in files if not name.startswith(".")]
        # os.walk lists links to folders as folders; with followlinks=False they are not entered
    entries = sorted(entries, key=lambda p: p.relative_to(input_dir).as_posix())
    if not any(p.suffix.lower() in IMAGE_SUFFIXES + UNSUPPORTED_SUFFIXES for p in entries):
        subfolders = [p for p in input_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        where = "in it or its sub-folders" if recursive else "directly in it"
        hint = f"; its {len(subfolders)} sub-folders are not searched unless --recursive is given" if subfolders and not recursive else ""
        raise InputError(f"{option} {input_dir}: no image files ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) {where}{hint}")
    return entries


def face_mask_folder(face_mask_dir: str | Path | None) -> Path | None:
    """--face-masks as a Path (None when not given); a one-line error when it is not a folder."""
    if face_mask_dir is None:
        return None
    if not Path(face_mask_dir).is_dir():
        raise InputError(f"--face-masks: not a folder: {face_mask_dir}")
    return Path(face_mask_dir)


def input_problem(path: Path) -> tuple[str, str] | None:
    """(status, message) for a listed entry that cannot be an input image; None for an image file."""
    from data.image_io import IMAGE_SUFFIXES, UNSUPPORTED_SUFFIXES

    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "error", "symbolic link loop"
        return "error", f"broken symbolic link: its target {os.readlink(path)} does not exist"
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_SUFFIXES:
        return "error", f"unsupported image format {suffix[1:].upper()} (use PNG, JPEG, BMP, TIFF or WebP)"
    if suffix not in IMAGE_SUFFIXES:
        return "skipped", "not an image file"
    return None


def input_status(path: Path, input_dir: Path, taken: dict[str, Path]) -> tuple[str, tuple[str, str] | None]:
    """An input entry's output name (its path below `input_dir`, without suffix) and, when it cannot be
    processed, its (status, message): a problem of the entry itself, or a name an earlier file took."""
    name = path.relative_to(input_dir).with_suffix("").as_posix()
    problem = input_problem(path)
    if problem is None and name in taken:
        problem = ("name_clash", f"same name as {taken[name].relative_to(input_dir).as_posix()}; its outputs would collide")
    return name, problem


def write_summary(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write a batch's summary.csv atomically (temporary file, then rename); missing cells stay empty."""
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in columns} for row in rows)


def write_batch(output: OutputFolder, images: dict[str, np.ndarray], rows: list[dict], columns: list[str]) -> None:
    """Write a batch's PNGs (relative path -> array), then summary.csv with `rows`: all of it or, when a
    write fails (disk full, read-only), none of this batch's images, so the folder stays consistent:
    every image has its summary row and its companions (a mask its overlay)."""
    from data.image_io import write_png

    written: list[Path] = []
    try:
        for relative, array in images.items():
            target = output.path(relative)
            write_png(target, array)
            written.append(target)
        write_summary(output.path("summary.csv"), rows, columns)
    except OutputError:
        for target in written:
            target.unlink(missing_ok=True)
        raise


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a CLI's main. Expected failures (`WrinkleError`) and file-system faults of the machine (disk
    full, read-only, permission) print `error: <one line>` and exit 1; Ctrl-C exits 130; anything
    else is a bug and keeps its traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (WrinkleError, OSError) as err:
        if isinstance(err, OSError) and not isinstance(err, WrinkleError) and err.errno not in ENVIRONMENT_ERRNOS:
            raise
        logging.getLogger(__name__).debug("failure details", exc_info=True)  # shown with --verbose
        message = describe_os_error(err) if isinstance(err, OSError) and not isinstance(err, WrinkleError) else str(err)
        print(f"error: {message.splitlines()[0] if message else type(err).__name__}", file=sys.stderr)
        return EXIT_ERROR
