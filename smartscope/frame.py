"""The unit that flows through smartscope: one camera frame and its timeline."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smartscope.state import DriverState

__all__ = ["DriverState", "Frame", "frame_time_s", "now_s"]


def now_s() -> float:
    """The one clock every timestamp uses: wall-clock epoch seconds (µs resolution).

    Camera timestamps reported by Micro-Manager are wall-clock too, so all stamps are
    comparable without a conversion step.
    """
    return time.time()


@dataclass(slots=True)
class Frame:
    """One raw camera frame.

    ``index`` counts frames in the run from 0 (the position of the frame in the raw
    stack on disk). ``state`` is the driver state the frame was taken in; ``transition``
    marks a frame whose exposure straddled a change (its light was a mix of the old and
    the new setting: stored and analysed, never used as controller evidence). ``axes``
    holds the frame's multi-dimensional indices (``{"t": 3, "p": 1, "c": 0, "z": 4}``, the
    keys of a useq-schema ``MDAEvent.index``; empty for a plain stream) and ``series`` the
    image series it is stored in (one per stage position); ``series_sizes`` the number of
    channels and z planes of that series where the driver knows them (an MDA plan's
    position, a burst), so a store can place the frame by its indices. ``times``
    collects stamps along the way, keyed ``camera``, ``dequeued``, ``stored``,
    ``stage:<name>``, ``decided`` and ``applied``. ``metadata["mm"]`` holds the camera's
    own metadata where the driver has it.
    """

    index: int
    image: np.ndarray  # (Y, X) uint16 as the camera delivered it
    camera_time_s: float
    channel: str = ""
    state: DriverState | None = None
    transition: bool = False  # an action took effect during this frame's exposure
    axes: dict[str, int] = field(default_factory=dict)  # MDA indices: t, p, g, c, z (useq keys)
    series: str = ""  # the image series (OME Image) it belongs to: one per position, "" = one series
    series_sizes: dict[str, int] = field(default_factory=dict)  # {"c": 2, "z": 5}; {} = unknown
    metadata: dict[str, Any] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)

    def stamp(self, key: str) -> float:
        t = now_s()
        self.times[key] = t
        return t

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.image.shape[:2]
        return int(h), int(w)

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """The frame's ROI in sensor pixels (the whole frame when the state has none)."""
        if self.state is not None and self.state.roi is not None:
            return self.state.roi
        h, w = self.shape
        return (0, 0, w, h)


def frame_time_s(frame: Frame) -> float:
    """The frame's acquisition time: the simulator's clock when the camera reports one
    (``SimTime_s``), else the camera timestamp. Frames of an MDA run (``metadata["mda"]``)
    always use the camera timestamp: its snapped frames carry no camera metadata, and one
    run must keep one clock."""
    md = frame.metadata.get("mm")
    if isinstance(md, Mapping) and "SimTime_s" in md and "mda" not in frame.metadata:
        return float(md["SimTime_s"])
    return float(frame.camera_time_s)
