"""Test set-up: nothing phones home, the shared real data is found or its tests are skipped."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

# Before anything imports albumentations or wandb.
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real faces, masks, photos); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (only present on the project's machines)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _keep_process_settings():
    """Restore process-wide settings after each test: PyTorch's thread count (a CLI run in-process with
    --threads sets it, and a later in-process training would then compute otherwise than its subprocess
    twin) and the recursion limit (importing gradio raises it to 3000, and the config tests' deeply
    nested YAML would then parse instead of being refused)."""
    import torch

    threads, recursion_limit = torch.get_num_threads(), sys.getrecursionlimit()
    yield
    torch.set_num_threads(threads)
    sys.setrecursionlimit(recursion_limit)


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running the CLIs in a subprocess from the project root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def python() -> str:
    return sys.executable


def fixture_shapes(filename: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every key of a released state dict, from tests/fixtures/<filename> (one
    `name<TAB>comma-separated shape` line per key, `#` comments)."""
    text = (Path(__file__).parent / "fixtures" / filename).read_text()
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return {name: tuple(int(n) for n in shape.split(",") if n) for name, shape in rows}


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """A state dict with these names and shapes (a published model's, from a fixture) and random values
    small enough for a finite forward pass: the published weights themselves are never downloaded."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            weights[name] = torch.randint(1, 1000, shape, generator=gen)
        elif name.endswith("running_var"):
            weights[name] = 0.5 + torch.rand(shape, generator=gen)
        else:
            weights[name] = scale * torch.randn(shape, generator=gen)
    return weights
