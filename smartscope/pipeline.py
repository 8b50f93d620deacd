"""Analysis stages and the pipeline that runs them on the newest frame.

A :class:`Stage` turns a frame (and what earlier stages produced) into a
:class:`StageOutput`: images to save beside the raw data, scalar values controllers read,
and optional table rows (localizations, events). Engines from ``smartscope.engines`` are
stages; so are the small built-ins here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from smartscope.exceptions import InvalidValue, SmartscopeError
from smartscope.frame import Frame


class StageError(SmartscopeError, RuntimeError):
    """A stage failed or produced unusable output (NaN, wrong shape)."""


class StageSkipped(SmartscopeError, RuntimeError):
    """A stage could not analyse this frame but nothing is wrong with the run.

    E.g. a remote worker did not answer in time. The loop counts the frame as skipped
    (like a frame analysis never reached), never as failed, and goes on.
    """


@dataclass(slots=True)
class StageOutput:
    images: dict[str, np.ndarray] = field(default_factory=dict)  # float32, (Y, X) or (C, Y, X)
    values: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    channel_names: dict[str, list[str]] = field(default_factory=dict)  # image key -> a name per channel

    def check_finite(self, stage: str) -> None:
        for key, val in self.values.items():
            if not math.isfinite(val):
                raise StageError(f"stage {stage!r} returned non-finite value {key}={val}")
        for key, img in self.images.items():
            if not np.isfinite(img).all():
                raise StageError(f"stage {stage!r} returned non-finite pixels in image {key!r}")


@runtime_checkable
class Stage(Protocol):
    name: str

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput: ...

    def close(self) -> None: ...


class IdentityStage:
    """Passes the frame through untouched; the baseline for loop overhead."""

    def __init__(self, name: str = "identity") -> None:
        self.name = name

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        return StageOutput()

    def close(self) -> None:
        pass


class FrameStatsStage:
    """Frame statistics controllers steer on: mean, percentiles, saturated fraction."""

    def __init__(self, name: str = "stats", saturation_adu: int = 65535) -> None:
        self.name = name
        self.saturation_adu = saturation_adu

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        img = frame.image
        # a strided subsample keeps this O(1 ms) at 2048^2 and is exact enough for control
        step = max(1, int(math.sqrt(img.size / 65536)))
        sub = img[::step, ::step].astype(np.float32)
        p1, p50, p99 = np.percentile(sub, [1, 50, 99])
        return StageOutput(
            values={
                "mean_adu": float(sub.mean()),
                "p1_adu": float(p1),
                "median_adu": float(p50),
                "p99_adu": float(p99),
                "max_adu": float(sub.max()),
                "saturated_fraction": float((sub >= self.saturation_adu).mean()),
            }
        )

    def close(self) -> None:
        pass


class Pipeline:
    """Runs stages in order; stamps ``stage:<name>`` on the frame after each."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise InvalidValue(f"pipeline stage names must be unique, got {names}")
        self.stages = list(stages)

    def run(self, frame: Frame) -> dict[str, StageOutput]:
        results: dict[str, StageOutput] = {}
        for stage in self.stages:
            try:
                out = stage.process(frame, results)
            except (StageError, StageSkipped):
                raise
            except Exception as exc:
                raise StageError(f"stage {stage.name!r} raised {type(exc).__name__}: {exc}") from exc
            out.check_finite(stage.name)
            results[stage.name] = out
            frame.stamp(f"stage:{stage.name}")
        return results

    def close(self) -> None:
        for stage in self.stages:
            stage.close()


class FaultStage:
    """Fails on purpose at ``at_frame`` (raise, NaN output, or hang): for fault drills."""

    def __init__(self, name: str, at_frame: int, mode: str) -> None:
        self.name = name
        self.at_frame = at_frame
        self.mode = mode
        self._release = threading.Event()

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        if frame.index < self.at_frame:
            return StageOutput(values={"ok": 1.0})
        if self.mode == "raise":
            raise RuntimeError(f"injected fault at frame {frame.index}")
        if self.mode == "nan":
            return StageOutput(values={"ok": float("nan")})
        self._release.wait(timeout=3600)  # "hang": until close()
        return StageOutput(values={"ok": 1.0})

    def close(self) -> None:
        self._release.set()
