"""The two MediaPipe model files the face-mesh backend runs under LiteRT: where they are, how to get them.

    python -m face.mesh_models              # put them in models/face_mesh/ (run by `make install`)
    python -m face.mesh_models --check      # exit 0 when they are in place

MediaPipe's wheels carry `face_detection_short_range.tflite` (BlazeFace) and `face_landmark.tflite`
(468-point mesh), Apache-2.0. Installing mediapipe itself would pin numpy<2 and protobuf<5, which
clash with the rest of the stack, so the set-up downloads the wheel from PyPI without its
dependencies, takes the two files out, checks their SHA-256 and never imports mediapipe. The files
are the same in every wheel of the release, so one fixed wheel (CPython 3.12, manylinux x86_64) is
downloaded whatever Python runs pip: 0.10.21 has no wheel for Python 3.13 and later. Their SHA-256
is checked again each time they are loaded from the folder (about 1 ms).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from engine.errors import WrinkleError
from engine.fileio import file_digest, write_bytes_atomic

MEDIAPIPE_WHEEL = "mediapipe==0.10.21"  # the last release with the legacy face_mesh graph
# One wheel that exists, whatever Python runs pip (left alone, pip picks the running one's: none for 3.13+).
WHEEL_TAGS = ("--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--platform", "manylinux_2_28_x86_64")
MODEL_FILES = {
    "face_detection_short_range.tflite": (
        "mediapipe/modules/face_detection/",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "face_landmark.tflite": ("mediapipe/modules/face_landmark/", "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
}
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "models" / "face_mesh"
ENV_DIR = "WRINKLE_FACE_MESH_DIR"  # overrides the default folder


class MeshModelsError(WrinkleError):
    """A face-mesh model file that cannot be had or used; the message names it and the way out."""


class MeshModelsMissing(MeshModelsError, FileNotFoundError):
    """The face-mesh model files are not where they were looked for."""


class MeshModelsCorrupt(MeshModelsError, ValueError):
    """A model file (or the wheel it comes from) that is not the expected one: truncated, damaged, foreign."""


class MeshModelsFetchError(MeshModelsError, RuntimeError):
    """Downloading the mediapipe wheel failed."""


def default_dir() -> Path:
    """models/face_mesh/ in the project, or $WRINKLE_FACE_MESH_DIR."""
    return Path(os.environ[ENV_DIR]) if os.environ.get(ENV_DIR) else DEFAULT_DIR


def _is_default(folder: Path) -> bool:
    """Whether `python -m face.mesh_models` without --dir writes to `folder`."""
    return folder.resolve() == default_dir().resolve()


def refetch_help(folder: Path) -> str:
    """The way out for a damaged model file in `folder`: the command that writes good copies there."""
    where = "" if _is_default(folder) else f" --dir {folder}"
    return f"run `python -m face.mesh_models{where}` to fetch the models again"


def _installed_mediapipe_dir() -> Path | None:
    """The folder of an installed mediapipe package, found without importing it."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


def check_digests(paths: dict[str, Path]) -> None:
    """Raise `MeshModelsCorrupt` for a file whose SHA-256 is not the expected one. About 1 ms for
    the two files (1.4 MB); a file with damaged weights still loads in LiteRT and would give wrong
    landmarks without a word, so this is the only check that sees it."""
    for name, path in paths.items():
        actual = file_digest(path, "sha256")
        if actual != MODEL_FILES[name][1]:
            raise MeshModelsCorrupt(
                f"{path}: not the expected {name} ({path.stat().st_size} bytes, SHA-256 {actual[:12]}..., "
                f"expected {MODEL_FILES[name][1][:12]}...: truncated or damaged); {refetch_help(path.parent)}"
            )


def find_models(model_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of the two model files: in `model_dir` (default: `default_dir()`), their SHA-256
    checked, else inside an installed mediapipe package (whose version may differ, so not checked);
    raises `MeshModelsMissing` saying how to get them, `MeshModelsCorrupt` for a damaged file."""
    folder = Path(model_dir) if model_dir else default_dir()
    if all((folder / name).is_file() for name in MODEL_FILES):
        found = {name: folder / name for name in MODEL_FILES}
        check_digests(found)
        return found
    site = _installed_mediapipe_dir()
    if site is not None and all((site / sub / name).is_file() for name, (sub, _) in MODEL_FILES.items()):
        return {name: site / sub / name for name, (sub, _) in MODEL_FILES.items()}
    command = "`python -m face.mesh_models` (or `make install`)" if _is_default(folder) else f"`python -m face.mesh_models --dir {folder}`"
    raise MeshModelsMissing(
        f"face-mesh models not found in {folder}: run {command}, which takes them from the {MEDIAPIPE_WHEEL} wheel on PyPI"
    )


def extract_from_wheel(wheel: Path, target: Path) -> None:
    """Copy the two model files out of a mediapipe wheel into `target`, checking their SHA-256;
    each file is checked in memory and written atomically, so a failure leaves nothing half-written."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise MeshModelsCorrupt(
            f"{wheel}: not a readable wheel ({err}); pass a {MEDIAPIPE_WHEEL} wheel, or leave out --wheel to download it"
        ) from None
    with archive:
        for name, (sub, expected) in MODEL_FILES.items():
            try:
                data = archive.read(sub + name)
            except KeyError:
                raise MeshModelsCorrupt(
                    f"{wheel}: has no {sub + name}; pass a {MEDIAPIPE_WHEEL} wheel, or leave out --wheel to download it"
                ) from None
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise MeshModelsCorrupt(
                    f"{wheel}: {name} has SHA-256 {actual}, expected {expected}; use the {MEDIAPIPE_WHEEL} wheel from PyPI"
                )
            write_bytes_atomic(target / name, data)


def pip_download_command(dest: str | Path) -> list[str]:
    """The pip command that downloads the one pinned mediapipe wheel (no dependencies) into `dest`."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        *WHEEL_TAGS,
        "-d",
        str(dest),
        MEDIAPIPE_WHEEL,
    ]


def fetch(target: Path) -> None:
    """Download the mediapipe wheel (no dependencies, not installed) and extract the models."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(pip_download_command(tmp), check=True)
        except subprocess.CalledProcessError as err:  # pip has printed why above
            raise MeshModelsFetchError(
                f"`pip download {MEDIAPIPE_WHEEL}` failed (exit status {err.returncode}; pip's message is above): check the "
                f"connection to PyPI, or download that wheel elsewhere and pass it with `python -m face.mesh_models --wheel FILE`"
            ) from None
        wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
        if not wheels:
            raise MeshModelsFetchError(
                f"`pip download {MEDIAPIPE_WHEEL}` gave no wheel; download it elsewhere and pass it with --wheel FILE"
            )
        extract_from_wheel(wheels[0], target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help=f"target folder (default {DEFAULT_DIR} or ${ENV_DIR})")
    parser.add_argument("--wheel", type=Path, help="extract from this already downloaded mediapipe wheel")
    parser.add_argument("--check", action="store_true", help="only check that the models are in place")
    args = parser.parse_args(argv)
    target = args.dir or default_dir()
    try:
        try:
            found = find_models(target)
        except (MeshModelsMissing, MeshModelsCorrupt):
            if args.check:
                raise
            found = None  # fetched (again) below; a damaged file is replaced
        if found is None or args.wheel:
            extract_from_wheel(args.wheel, target) if args.wheel else fetch(target)
            found = find_models(target)
    except MeshModelsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in found.values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
