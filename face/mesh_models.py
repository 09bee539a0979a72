"""The two MediaPipe model files the face-mesh backend runs under LiteRT: where they are, how to get them.

    python -m face.mesh_models              # put them in models/face_mesh/ (run by `make install`)
    python -m face.mesh_models --check      # exit 0 when they are in place

MediaPipe's wheels carry `face_detection_short_range.tflite` (BlazeFace) and `face_landmark.tflite`
(468-point mesh), Apache-2.0. Installing mediapipe itself would pin numpy<2 and protobuf<5, which
clash with the rest of the stack, so the set-up downloads the wheel from PyPI without its
dependencies, takes the two files out, checks their SHA-256 and never imports mediapipe.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from data.fetch import file_digest

MEDIAPIPE_WHEEL = "mediapipe==0.10.21"  # the last release with the legacy face_mesh graph
MODEL_FILES = {
    "face_detection_short_range.tflite": ("mediapipe/modules/face_detection/", "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "face_landmark.tflite": ("mediapipe/modules/face_landmark/", "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
}
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "models" / "face_mesh"
ENV_DIR = "WRINKLE_FACE_MESH_DIR"  # overrides the default folder


class MeshModelsMissing(FileNotFoundError):
    """The face-mesh model files are not where they were looked for."""


def default_dir() -> Path:
    """models/face_mesh/ in the project, or $WRINKLE_FACE_MESH_DIR."""
    return Path(os.environ[ENV_DIR]) if os.environ.get(ENV_DIR) else DEFAULT_DIR


def _installed_mediapipe_dir() -> Path | None:
    """The folder of an installed mediapipe package, found without importing it."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).parent


def find_models(model_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of the two model files: in `model_dir` (default: `default_dir()`), else inside an
    installed mediapipe package; raises `MeshModelsMissing` saying how to get them."""
    folder = Path(model_dir) if model_dir else default_dir()
    if all((folder / name).is_file() for name in MODEL_FILES):
        return {name: folder / name for name in MODEL_FILES}
    site = _installed_mediapipe_dir()
    if site is not None and all((site / sub / name).is_file() for name, (sub, _) in MODEL_FILES.items()):
        return {name: site / sub / name for name, (sub, _) in MODEL_FILES.items()}
    raise MeshModelsMissing(
        f"face-mesh models not found in {folder}: run `python -m face.mesh_models` (or `make install`), "
        f"which takes them from the {MEDIAPIPE_WHEEL} wheel on PyPI"
    )


def extract_from_wheel(wheel: Path, target: Path) -> None:
    """Copy the two model files out of a mediapipe wheel into `target`, checking their SHA-256;
    each file is written to a temporary name and renamed, so a failure leaves nothing half-written."""
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name, (sub, expected) in MODEL_FILES.items():
            partial = target / f".{name}.partial"
            with archive.open(sub + name) as source, open(partial, "wb") as out:
                out.write(source.read())
            actual = file_digest(partial, "sha256")
            if actual != expected:
                partial.unlink()
                raise ValueError(f"{wheel}: {name} has SHA-256 {actual}, expected {expected}")
            os.replace(partial, target / name)


def fetch(target: Path) -> None:
    """Download the mediapipe wheel (no dependencies, not installed) and extract the models."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, MEDIAPIPE_WHEEL]
        subprocess.run(command, check=True)
        wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download {MEDIAPIPE_WHEEL} produced no wheel")
        extract_from_wheel(wheels[0], target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help=f"target folder (default {DEFAULT_DIR} or ${ENV_DIR})")
    parser.add_argument("--wheel", type=Path, help="extract from this already downloaded mediapipe wheel")
    parser.add_argument("--check", action="store_true", help="only check that the models are in place")
    args = parser.parse_args(argv)
    target = args.dir or default_dir()
    try:
        found = find_models(target)
    except MeshModelsMissing as err:
        if args.check:
            print(err, file=sys.stderr)
            return 1
        found = None
    if found is None or args.wheel:
        extract_from_wheel(args.wheel, target) if args.wheel else fetch(target)
        found = find_models(target)
    for path in found.values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
