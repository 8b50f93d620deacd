"""The unit that flows through smartscope: one camera frame and its timeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Frame", "now_s"]


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
    stack on disk). ``times`` collects stamps along the way, keyed ``camera``,
    ``dequeued``, ``stored``, ``stage:<name>``, ``decided`` and ``applied``.
    """

    index: int
    image: np.ndarray  # (Y, X) uint16 as the camera delivered it
    camera_time_s: float
    channel: str = ""
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
