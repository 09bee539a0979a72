"""Command-line plumbing shared by the four CLIs: logging set-up and one-line errors with exit codes."""

from __future__ import annotations

import csv
import logging
import os
import sys
from pathlib import Path
from typing import Callable

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


def list_inputs(input_dir: Path) -> list[Path]:
    """Every visible regular file directly in `input_dir`, sorted: batch CLIs give each a status row."""
    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input: not a folder: {input_dir}")
    return sorted(p for p in input_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def write_summary(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write a batch's summary.csv atomically (temporary file, then rename); missing cells stay empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in columns} for row in rows)
    os.replace(tmp, path)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a CLI's main; expected failures print `error: <one line>` and exit 1, Ctrl-C exits 130."""
    from checkpoint import CheckpointError
    from config import ConfigError
    from data.image_io import ImageReadError
    from data.sources import DataError
    from unet.unet_model import WeightsError

    expected = (ConfigError, CheckpointError, DataError, ImageReadError, WeightsError, FileNotFoundError, KeyError, RuntimeError)
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except expected as err:
        logging.getLogger(__name__).debug("failure details", exc_info=True)  # shown with --verbose
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message.splitlines()[0] if message else type(err).__name__}", file=sys.stderr)
        return EXIT_ERROR
