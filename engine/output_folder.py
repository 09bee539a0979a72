"""Output folders that never lose a user's files: a command writes only where it is allowed to.

A command that writes a folder (predict.py, evaluate.py, face_parsing_extraction.py) records every
file it writes in a hidden list, `.wrinkle-output`, before writing it. A folder is accepted when it
is new or empty; a folder holding a previous run of the same command only with `--overwrite`, and
then only that run's files are replaced (or removed, when this run does not write them again). A
file the command did not write is never replaced, with or without `--overwrite`, and an output
folder that is, or lies inside, or contains an input folder is refused unless `--overwrite` is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from engine.errors import OutputError, describe_os_error
from engine.fileio import write_text_atomic

MANIFEST = ".wrinkle-output"  # first line {"command": ...}; then one JSON-quoted relative path a line


def _visible_files(root: Path) -> list[str]:
    """Relative paths of the non-hidden files (and links) below `root`, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder).relative_to(root)
        found += [(base / name).as_posix() for name in sorted(files) if not name.startswith(".")]
    return found


def _read_manifest(path: Path) -> tuple[str | None, set[str]]:
    """The command and the files recorded in a manifest; (None, empty) when unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        command = json.loads(lines[0])["command"]
        return str(command), {json.loads(line) for line in lines[1:] if line.strip()}
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None, set()


def _related(a: Path, b: Path) -> bool:
    """True when the folders are the same or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


class OutputFolder:
    """The folder one run of `command` writes into; `path(name)` claims a file before it is written."""

    def __init__(
        self, root: str | Path, command: str, option: str = "--output", overwrite: bool = False, inputs: Iterable[str | Path] = ()
    ):
        self.root, self.command, self.option = Path(root), command, option
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"{option} {self.root}: is a file, not a folder; choose a folder name")
        resolved = self.root.resolve()
        for folder in inputs:
            if _related(resolved, Path(folder).resolve()) and not overwrite:
                raise OutputError(
                    f"{option} {self.root} and the input folder {folder} overlap; choose a separate output folder "
                    "(--overwrite writes there anyway, never replacing a file this command did not write)"
                )
        previous_command, previous = _read_manifest(self.root / MANIFEST)
        existing = _visible_files(self.root) if self.root.is_dir() else []
        if previous_command not in (None, command) and existing:
            raise OutputError(f"{option} {self.root}: holds the output of {previous_command}, not of {command}; choose another folder")
        self.previous = previous if previous_command == command else set()
        self.foreign = set(existing) - self.previous
        if existing and not overwrite:
            what = (
                f"the output of an earlier {command} run"
                if not self.foreign
                else f"files {command} did not write (e.g. {sorted(self.foreign)[0]})"
            )
            raise OutputError(
                f"{option} {self.root}: holds {what}; choose a new or empty folder, or pass --overwrite "
                f"(which replaces only files of an earlier {command} run)"
            )
        self.written: set[str] = set()
        if previous_command != command:
            write_text_atomic(self.root / MANIFEST, json.dumps({"command": command}) + "\n")

    def path(self, relative: str | Path) -> Path:
        """The full path of output file `relative`, recorded as this command's before anything is written;
        a file there that this command did not write is refused."""
        name = Path(relative).as_posix()
        target = self.root / name
        if name in self.foreign and name not in self.written:
            raise OutputError(
                f"{target}: refusing to replace a file {self.command} did not write; move it away or choose another {self.option}"
            )
        if name not in self.written and name not in self.previous:
            try:
                with open(self.root / MANIFEST, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(name) + "\n")
            except OSError as err:
                raise OutputError(f"cannot write {describe_os_error(err)}") from err
        self.written.add(name)
        return target

    def finish(self) -> None:
        """After a complete run: remove the earlier run's files that this run did not write again, and
        record just this run's files."""
        for name in sorted(self.previous - self.written):
            (self.root / name).unlink(missing_ok=True)
        lines = [json.dumps({"command": self.command})] + [json.dumps(name) for name in sorted(self.written)]
        write_text_atomic(self.root / MANIFEST, "\n".join(lines) + "\n")
