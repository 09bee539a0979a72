"""Tiled prediction: an image larger than the model's input, read in overlapping windows and blended.

The windows are `tile` x `tile` pixels, `overlap` pixels apart at most (the last row and column of
windows are moved back inside the image, so every pixel is covered and no window is padded). Each
window's probabilities are weighted by a separable ramp, 1 in the middle and falling linearly to a
small positive floor over `overlap` pixels at each edge, and the weighted sum is divided by the summed
weights: seams fade over the overlap, and a pixel covered by one window only keeps that window's value.

Memory is bounded by the tile, not the image: the model sees at most max(`tiles_per_batch`, N) windows
at a time (each C x tile x tile; one window per image by default: four 512 px windows at once would
hold as many pixels as a whole 1024 px face), and the only image-sized buffers are the two float32
accumulators (N x H x W and H x W).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EDGE_FLOOR = 1e-3  # the weight at a window's outer edge: positive, so image borders (one window) stay defined


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows of `tile` pixels covering 0..length with at least `overlap` pixels shared
    between neighbours; one window at 0 when the image is no longer than the tile."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tiles need tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    step = tile - overlap
    origins = list(range(0, length - tile, step))
    return origins + [length - tile]


def blend_weight(tile: int, overlap: int, device: torch.device | None = None) -> torch.Tensor:
    """tile x tile weights: the outer product of a ramp rising from EDGE_FLOOR to 1 over `overlap` pixels
    at both ends (1 everywhere when `overlap` is 0)."""
    position = torch.arange(tile, dtype=torch.float32, device=device)
    if overlap == 0:
        ramp = torch.ones(tile, device=device)
    else:
        distance = torch.minimum(position, tile - 1 - position)  # pixels from the nearest edge
        ramp = ((distance + 1) / (overlap + 1)).clamp(EDGE_FLOOR, 1.0)
    return ramp[:, None] * ramp[None, :]


def tiled_probabilities(
    predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int, tiles_per_batch: int = 1
) -> torch.Tensor:
    """N x H x W probabilities of the N x C x H x W input `x`, from `predict` (N' x C x tile x tile ->
    N' x tile x tile probabilities) run on overlapping windows; `x` itself when it fits one window."""
    batch, _, height, width = x.shape
    if height <= tile and width <= tile:
        return predict(x)
    rows, cols = tile_origins(height, tile, overlap), tile_origins(width, tile, overlap)
    windows = [(top, left) for top in rows for left in cols]
    tile_h, tile_w = min(tile, height), min(tile, width)
    weight = blend_weight(tile, overlap, x.device)[:tile_h, :tile_w]
    total = torch.zeros(batch, height, width, dtype=torch.float32, device=x.device)
    weights = torch.zeros(height, width, dtype=torch.float32, device=x.device)
    per_call = max(tiles_per_batch // batch, 1)  # windows per call, whole images each: batch * per_call inputs
    for start in range(0, len(windows), per_call):
        group = windows[start : start + per_call]
        crops = torch.cat([x[:, :, top : top + tile_h, left : left + tile_w] for top, left in group])
        probs = predict(crops).float().view(len(group), batch, tile_h, tile_w)
        for (top, left), window_probs in zip(group, probs):
            total[:, top : top + tile_h, left : left + tile_w] += window_probs * weight
            weights[top : top + tile_h, left : left + tile_w] += weight
    return total / weights
