"""Timing shared by the benchmarks: the median of a model's forward passes, measured as inference runs them."""

from __future__ import annotations

import statistics
import time


def median_forward_s(model, size: int = 512, reps: int = 5, channels_last: bool = False) -> float:
    """Median seconds of one eval-mode, no-grad forward of a 1 x C x size x size image (C: the model's
    `in_channels`, 3 unless it takes the texture channel too), after a warm-up."""
    import torch

    x = torch.rand(1, getattr(model, "in_channels", 3), size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)
