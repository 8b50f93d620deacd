"""Overlapping tiles blended with linear ramps, so large frames show no seams.

Every tile has the engine's tile size (the last one along an axis is shifted back to end
at the frame border, so all tiles share one shape: good for TensorRT profiles and CUDA
graphs). Each tile's output is weighted by a separable ramp (see :func:`ramp_weights`):
~0 over the outer quarter of the overlap, where the network sees the tile's zero padding,
then linear up to 1; the weighted sum is divided by the summed weights.
Axes shorter than a tile are padded (reflect) to the engine's size multiple.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["pad_to_multiple", "ramp_weights", "run_tiled", "tile_starts"]

_EPS = 1e-6
RunFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts covering ``[0, size)`` with ``tile``-px tiles overlapping >= ``overlap`` px."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than tile {tile}")
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def ramp_weights(length: int, overlap: int, low_side: bool, high_side: bool) -> np.ndarray:
    """1-D blending weights of one tile.

    On each side flagged (a neighbour overlaps there) the weight is ~0 over the outer
    quarter of the overlap (where zero padding corrupts the network's output), rises
    linearly over the middle half, and is 1 beyond. Two neighbours overlapping by
    ``overlap`` px thus hand over smoothly, with weights summing to 1.
    """
    w = np.ones(length, dtype=np.float32)
    if overlap <= 0:
        return w
    d = np.arange(length, dtype=np.float32) + 0.5  # distance from the low edge
    quarter = overlap / 4.0
    half = overlap / 2.0
    rise = np.clip((d - quarter) / half, _EPS, 1.0).astype(np.float32)
    if low_side:
        w = np.minimum(w, rise)
    if high_side:
        w = np.minimum(w, rise[::-1])
    return w


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad the last two axes up to a multiple; returns the padded array and (H, W)."""
    h, w = image.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return image, (h, w)
    mode = "reflect" if ph < h and pw < w else "edge"
    pad = [(0, 0)] * (image.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(image, pad, mode=mode), (h, w)  # type: ignore[call-overload]


def _run_whole(run: RunFn, image: np.ndarray, multiple: int) -> dict[str, np.ndarray]:
    padded, (h, w) = pad_to_multiple(image, multiple)
    out = run(padded[None].astype(np.float32, copy=False))
    return {k: v[0, :, :h, :w] for k, v in out.items()}


def run_tiled(
    run: RunFn,
    image: np.ndarray,
    *,
    tile: int,
    overlap: int,
    multiple: int = 1,
    max_batch: int = 4,
) -> dict[str, np.ndarray]:
    """Apply ``run`` (``(N, C, h, w) -> {name: (N, C', h, w)}``) to a ``(C, H, W)`` image.

    Frames no larger than a tile run whole (padded to ``multiple``).
    """
    if image.ndim != 3:
        raise ValueError(f"run_tiled expects (C, H, W), got shape {image.shape}")
    _c, h, w = image.shape
    if h <= tile and w <= tile:
        return _run_whole(run, image, multiple)
    # an axis shorter than a tile is padded to the multiple and covered by one tile
    padded, _ = pad_to_multiple(image, multiple)
    ph, pw = padded.shape[-2:]
    th, tw = min(tile, ph), min(tile, pw)
    ys = tile_starts(ph, th, overlap)
    xs = tile_starts(pw, tw, overlap)
    ramp = overlap
    boxes = [(y, x) for y in ys for x in xs]
    acc: dict[str, np.ndarray] = {}
    wsum = np.zeros((ph, pw), dtype=np.float32)
    wy = {y: ramp_weights(th, ramp, y > 0, y + th < ph) for y in ys}
    wx = {x: ramp_weights(tw, ramp, x > 0, x + tw < pw) for x in xs}
    for i in range(0, len(boxes), max_batch):
        chunk = boxes[i : i + max_batch]
        batch = np.stack([padded[:, y : y + th, x : x + tw] for y, x in chunk]).astype(np.float32, copy=False)
        outs = run(batch)
        for j, (y, x) in enumerate(chunk):
            wt = wy[y][:, None] * wx[x][None, :]
            for name, arr in outs.items():
                if name not in acc:
                    acc[name] = np.zeros((arr.shape[1], ph, pw), dtype=np.float32)
                acc[name][:, y : y + th, x : x + tw] += arr[j] * wt
            wsum[y : y + th, x : x + tw] += wt
    return {k: (v / wsum)[:, :h, :w] for k, v in acc.items()}
