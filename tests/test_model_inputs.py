"""Model files the face pipeline runs on: damaged face-mesh models, a missing LiteRT, and fetching the
models (pinned wheel, pip failures) are one-line errors that say what to do. No network is used."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.errors import WrinkleError
from face import mesh_models
from face.mesh_models import DEFAULT_DIR, ENV_DIR, MEDIAPIPE_WHEEL, MODEL_FILES, MeshModelsCorrupt, MeshModelsMissing, find_models

DETECTOR, LANDMARKS = "face_detection_short_range.tflite", "face_landmark.tflite"


@pytest.fixture
def no_installed_mediapipe(monkeypatch):
    """find_models looks only in the folder given, not in an installed mediapipe package."""
    monkeypatch.setattr(mesh_models, "_installed_mediapipe_dir", lambda: None)


@pytest.fixture
def model_copy(tmp_path, no_installed_mediapipe) -> Path:
    """A copy of the real model files (models/face_mesh/, from `python -m face.mesh_models`) to damage."""
    if not all((DEFAULT_DIR / name).is_file() for name in MODEL_FILES):
        pytest.skip(f"face-mesh models not in {DEFAULT_DIR}: run `python -m face.mesh_models`")
    folder = tmp_path / "face_mesh"
    folder.mkdir()
    for name in MODEL_FILES:
        shutil.copyfile(DEFAULT_DIR / name, folder / name)
    return folder


def one_line(err: BaseException) -> str:
    message = str(err)
    assert isinstance(err, WrinkleError) and message and "\n" not in message
    return message


@pytest.mark.parametrize("damage", ["truncated", "empty", "zeroed"])
def test_damaged_model_file_is_one_line_error_naming_it(model_copy, monkeypatch, damage):
    """A damaged model is caught before LiteRT loads it; "zeroed" (a run of weights overwritten)
    still loads in LiteRT and would give wrong landmarks silently: only the SHA-256 sees it."""
    pytest.importorskip("ai_edge_litert")
    from face.mesh import FaceMesh

    path = model_copy / LANDMARKS
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "zeroed": data[:100_000] + bytes(1000) + data[101_000:]}[damage])
    with pytest.raises(MeshModelsCorrupt) as info:
        FaceMesh(model_copy)
    message = one_line(info.value)
    assert str(path) in message and f"python -m face.mesh_models --dir {model_copy}`" in message
    monkeypatch.setenv(ENV_DIR, str(model_copy))  # the default folder: the plain command fixes it
    with pytest.raises(MeshModelsCorrupt, match=r"run `python -m face\.mesh_models` to fetch the models again"):
        FaceMesh()


def test_unreadable_model_from_an_unchecked_place_is_one_line_error(tmp_path, monkeypatch):
    """Files inside an installed mediapipe package are not hash-checked (its version may differ);
    LiteRT's own refusal becomes the one-line error."""
    pytest.importorskip("ai_edge_litert")
    from face.mesh import FaceMesh

    site = tmp_path / "site"
    for name, (sub, _) in MODEL_FILES.items():
        (site / sub).mkdir(parents=True)
        (site / sub / name).write_bytes(b"<html>not a model</html>")
    monkeypatch.setattr(mesh_models, "_installed_mediapipe_dir", lambda: site)
    with pytest.raises(MeshModelsCorrupt) as info:
        FaceMesh(tmp_path / "empty")
    message = one_line(info.value)
    assert "not a usable TFLite model" in message and str(site) in message and "python -m face.mesh_models" in message


def test_missing_models_and_litert_are_wrinkle_errors(tmp_path, monkeypatch, no_installed_mediapipe):
    with pytest.raises(MeshModelsMissing) as info:
        find_models(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)  # still, for callers that catch that
    assert f"python -m face.mesh_models --dir {tmp_path / 'nowhere'}`" in one_line(info.value)  # fetches to where it looked
    from face.mesh import FaceMesh

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails as if not installed
    with pytest.raises(RuntimeError) as litert:
        FaceMesh(tmp_path)
    assert "pip install -r requirements.txt" in one_line(litert.value)


def test_check_reports_a_damaged_model_and_a_fetch_replaces_it(model_copy, monkeypatch, capsys):
    good = (model_copy / DETECTOR).read_bytes()
    (model_copy / DETECTOR).write_bytes(good[:1000])
    assert mesh_models.main(["--dir", str(model_copy), "--check"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {model_copy / DETECTOR}: not the expected")

    def pip_download(command, check):  # a wheel holding the good files, as PyPI's does
        dest = Path(command[command.index("-d") + 1])
        with zipfile.ZipFile(dest / "mediapipe-0.10.21-cp312-cp312-manylinux_2_28_x86_64.whl", "w") as wheel:
            for name, (sub, _) in MODEL_FILES.items():
                wheel.writestr(sub + name, good if name == DETECTOR else (DEFAULT_DIR / name).read_bytes())
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(mesh_models.subprocess, "run", pip_download)
    assert mesh_models.main(["--dir", str(model_copy)]) == 0
    assert (model_copy / DETECTOR).read_bytes() == good
    assert mesh_models.main(["--dir", str(model_copy), "--check"]) == 0


def test_fetch_asks_pip_for_a_wheel_that_exists_whatever_python_runs(tmp_path, monkeypatch):
    """mediapipe 0.10.21 has no wheel for Python 3.13+; the models in it are the same in every wheel,
    so the one for CPython 3.12 on manylinux_2_28_x86_64 is asked for explicitly."""
    commands = []

    def pip_download(command, check):
        commands.append(command)
        (Path(command[command.index("-d") + 1]) / "mediapipe-0.10.21-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
        return subprocess.CompletedProcess(command, 0)

    extracted = []
    monkeypatch.setattr(mesh_models.subprocess, "run", pip_download)
    monkeypatch.setattr(mesh_models, "extract_from_wheel", lambda wheel, target: extracted.append((wheel.name, target)))
    with monkeypatch.context() as running:
        running.setattr(sys, "version_info", (3, 13, 1, "final", 0))
        mesh_models.fetch(tmp_path / "models")
    (command,) = commands
    assert command[:4] == [sys.executable, "-m", "pip", "download"] and command[-1] == MEDIAPIPE_WHEEL
    pinned = tuple(command[command.index(flag) + 1] for flag in ("--python-version", "--implementation", "--abi", "--platform"))
    assert pinned == ("3.12", "cp", "cp312", "manylinux_2_28_x86_64")
    assert "--no-deps" in command and "--only-binary=:all:" in command
    assert extracted == [("mediapipe-0.10.21-cp312-cp312-manylinux_2_28_x86_64.whl", tmp_path / "models")]


def test_pip_failure_is_one_line_error_from_main(tmp_path, monkeypatch, capsys, no_installed_mediapipe):
    def pip_fails(command, check):
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(mesh_models.subprocess, "run", pip_fails)
    assert mesh_models.main(["--dir", str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: `pip download {MEDIAPIPE_WHEEL}` failed (exit status 1")
    assert "--wheel" in err and "Traceback" not in err


def test_a_wheel_that_is_not_one_is_one_line_error(tmp_path, capsys):
    (tmp_path / "mediapipe.whl").write_bytes(b"<html>Not Found</html>")
    assert mesh_models.main(["--dir", str(tmp_path / "models"), "--wheel", str(tmp_path / "mediapipe.whl")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'mediapipe.whl'}: not a readable wheel")
