"""bioimage.io processing operations in numpy: the arithmetic bioimageio.core performs.

A :class:`Processor` applies one tensor's list of operations (``engine.json``
``preprocessing``, or an output's ``postprocessing``) to a ``(C, H, W)`` frame, seen as a
``(batch=1, channel, y, x)`` sample:

* per-sample statistics (``axes`` without ``batch``) are taken over the whole frame,
  before it is cut into tiles, so tiling never changes them;
* per-dataset statistics (``batch`` in ``axes``) are running statistics over every frame
  the processor has seen, this one included: mean and s.d. merged exactly (Welford),
  percentiles as the mean of the frames' percentiles — what bioimageio.core computes when
  it is given no initial dataset statistics (its ``MeanQuantilesCalculator``);
* s.d. is the population s.d. (ddof 0); percentiles interpolate linearly; ``eps`` as given.

The engine runtime applies it on the host for every backend (ONNX Runtime, torch,
TensorRT): the network always receives the same input, whichever runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from smartscope.engines.bundle import (
    Binarize,
    Clip,
    FixedZeroMeanUnitVariance,
    ScaleLinear,
    ScaleRange,
    Sigmoid,
    ZeroMeanUnitVariance,
)

__all__ = ["Processor"]

_AXIS = {"batch": 0, "channel": 1, "y": 2, "x": 3}


def _per_channel(v: float | list[float]) -> np.ndarray:
    """A value broadcast over (batch, channel, y, x): one, or one per channel."""
    arr = np.asarray(v, np.float64)
    return arr.reshape(1, -1, 1, 1) if arr.ndim else arr


class _Running:
    """Per-dataset statistics of one operation, over every frame seen."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self.quantiles: np.ndarray | None = None

    def moments(self, x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        x = x.astype(np.float64)
        mean_b = x.mean(axis=axes, keepdims=True)
        n_b = x.size // mean_b.size
        m2_b = ((x - mean_b) ** 2).sum(axis=axes, keepdims=True)
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
        else:
            n = self.n + n_b
            d = mean_b - self.mean
            self.m2 = self.m2 + m2_b + d**2 * self.n * n_b / n
            self.mean = (self.n * self.mean + n_b * mean_b) / n
            self.n = n
        return self.mean, np.sqrt(self.m2 / self.n)

    def percentiles(self, x: np.ndarray, qs: Sequence[float], axes: tuple[int, ...]) -> np.ndarray:
        est = np.percentile(x.astype(np.float64), qs, axis=axes, keepdims=True)
        n_b = x.size // est[0].size
        if self.quantiles is None:
            self.quantiles, self.n = est, n_b
        else:
            self.quantiles = (self.n * self.quantiles + n_b * est) / (self.n + n_b)
            self.n += n_b
        return self.quantiles


class Processor:
    """One tensor's bioimage.io operations, with the running state per-dataset ones need."""

    def __init__(self, ops: Sequence[Any]) -> None:
        self.ops = list(ops)
        self._running = [_Running() for _ in self.ops]

    def __bool__(self) -> bool:
        return bool(self.ops)

    def reset(self) -> None:
        """Forget the per-dataset statistics (a new data set)."""
        self._running = [_Running() for _ in self.ops]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` (C, H, W) -> (C, H, W) float32 after every operation, in order."""
        x = np.asarray(frame, np.float32)[None]
        for op, run in zip(self.ops, self._running, strict=True):
            x = self._apply(op, run, x)
        return np.ascontiguousarray(x[0], dtype=np.float32)

    @staticmethod
    def _axes(op: ZeroMeanUnitVariance | ScaleRange) -> tuple[tuple[int, ...], bool]:
        return tuple(sorted(_AXIS[a] for a in op.axes)), "batch" in op.axes

    def _apply(self, op: Any, run: _Running, x: np.ndarray) -> np.ndarray:
        if isinstance(op, ZeroMeanUnitVariance):
            axes, dataset = self._axes(op)
            if dataset:
                mean, std = run.moments(x, axes)
            else:
                mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
                std = x.std(axis=axes, keepdims=True, dtype=np.float64)
            return ((x - mean) / (std + op.eps)).astype(np.float32)
        if isinstance(op, FixedZeroMeanUnitVariance):
            return ((x - _per_channel(op.mean)) / (_per_channel(op.std) + op.eps)).astype(np.float32)
        if isinstance(op, ScaleRange):
            axes, dataset = self._axes(op)
            qs = [op.min_percentile, op.max_percentile]
            if dataset:
                lo, hi = run.percentiles(x, qs, axes)
            else:
                lo, hi = np.percentile(x.astype(np.float64), qs, axis=axes, keepdims=True)
            return ((x - lo) / (hi - lo + op.eps)).astype(np.float32)
        if isinstance(op, ScaleLinear):
            return (x * _per_channel(op.gain) + _per_channel(op.offset)).astype(np.float32)
        if isinstance(op, Clip):
            return np.clip(x, op.min, op.max).astype(np.float32)
        if isinstance(op, Binarize):
            return (x > _per_channel(op.threshold)).astype(np.float32)
        if isinstance(op, Sigmoid):
            return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
        raise TypeError(f"unknown processing operation {op!r}")
