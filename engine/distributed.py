"""This process's place in a `torchrun` job, seeding, and a checksum for comparing ranks' weights."""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from engine.checkpoint import model_state
from engine.inference import resolve_device


class Distributed:
    """This process's place in a `torchrun` job (a single process when not launched by torchrun)."""

    def __init__(self, device_name: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_name)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_agree(self, flag: bool, device: torch.device) -> bool:
        """True when `flag` is true on every rank (one all-reduce; every rank must call it)."""
        if not self.enabled:
            return flag
        vote = torch.tensor([0.0 if flag else 1.0], device=device)
        dist.all_reduce(vote)
        return vote.item() == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def weights_checksum(model: nn.Module) -> str:
    """SHA-1 of all parameters and buffers, for checking that ranks hold identical weights."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model_state(model).items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()
