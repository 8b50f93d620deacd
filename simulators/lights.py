"""Light at the sample over wall-clock time, integrated over each exposure window.

Every light source's power setpoint and the illumination gate (shutter) are step functions
of wall-clock time (epoch seconds, the ``time.time()`` clock). A frame receives, per source,
the time average of ``power(t) · gate(t)`` over its exposure window ``[t0, t1]``; a change in
mid-exposure therefore counts in proportion to the time it was in force.

Invariants: a timeline's entries stay sorted by time, so a value recorded late with an
earlier stamp (a frame-locked sequence step applied at an exposure start that has already
passed) lands where it belongs; the current setpoint is the entry with the latest stamp; a
zero-length window (``t0 == t1``, a frame rendered without a real exposure) reads the
current setpoints. History older than
``keep_s`` before the newest entry is dropped (the value in force at the cut is kept).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping

__all__ = ["LightPath", "StepTimeline"]


class StepTimeline:
    """A value that holds from its time stamp until the next one (wall-clock seconds)."""

    def __init__(self, value: float, t_s: float = -math.inf, keep_s: float = 120.0) -> None:
        self._t: list[float] = [float(t_s)]
        self._v: list[float] = [float(value)]
        self.keep_s = float(keep_s)

    @property
    def latest(self) -> float:
        """The value with the latest time stamp (the setpoint now)."""
        return self._v[-1]

    def set(self, value: float, t_s: float) -> None:
        """Record ``value`` in force from ``t_s`` on (until the next later entry)."""
        i = bisect.bisect_right(self._t, t_s)
        self._t.insert(i, float(t_s))
        self._v.insert(i, float(value))
        if len(self._t) > 512:
            self._trim()

    def value_at(self, t_s: float) -> float:
        i = bisect.bisect_right(self._t, t_s) - 1
        return self._v[max(i, 0)]

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        """Time stamps strictly inside ``(t0, t1)``."""
        lo = bisect.bisect_right(self._t, t0)
        hi = bisect.bisect_left(self._t, t1)
        return self._t[lo:hi]

    def _trim(self) -> None:
        cut = self._t[-1] - self.keep_s
        i = bisect.bisect_right(self._t, cut) - 1
        if i > 0:
            del self._t[:i]
            del self._v[:i]


class LightPath:
    """Power setpoints of named light sources and one gate (1 open, 0 closed) in front of all."""

    def __init__(self, sources: Iterable[str], powers_mw: Mapping[str, float] | None = None) -> None:
        p = powers_mw or {}
        self.power = {s: StepTimeline(p.get(s, 0.0)) for s in sources}
        self.gate = StepTimeline(1.0)

    def set_power(self, source: str, power_mw: float, t_s: float) -> None:
        self.power[source].set(power_mw, t_s)

    def set_gate(self, open_: bool, t_s: float) -> None:
        if float(open_) != self.gate.latest:
            self.gate.set(float(open_), t_s)

    def setpoints(self) -> dict[str, float]:
        """Current power setpoint of every source (mW), gate not applied."""
        return {s: tl.latest for s, tl in self.power.items()}

    def at_sample(self, t_s: float) -> dict[str, float]:
        """Power reaching the sample at one instant (mW)."""
        g = self.gate.value_at(t_s)
        return {s: tl.value_at(t_s) * g for s, tl in self.power.items()}

    def received(self, t0: float, t1: float) -> tuple[dict[str, float], dict[str, bool]]:
        """Mean power at the sample over ``[t0, t1]`` per source (mW), and whether it was
        constant over the whole window (no change of setpoint or gate inside it)."""
        if t1 <= t0:  # a collapsed window reads the settings in force now
            g = self.gate.latest
            now = {s: tl.latest * g for s, tl in self.power.items()}
            return now, dict.fromkeys(now, True)
        gate_bp = self.gate.breakpoints(t0, t1)
        g0 = self.gate.value_at(t0)
        mean: dict[str, float] = {}
        constant: dict[str, bool] = {}
        for s, tl in self.power.items():
            own_bp = tl.breakpoints(t0, t1)
            if not own_bp and not gate_bp:  # the common case: nothing changed in the window
                mean[s] = tl.value_at(t0) * g0
                constant[s] = True
                continue
            bps = sorted({t0, *gate_bp, *own_bp})
            edges = [*bps, t1]
            acc = 0.0
            first: float | None = None
            same = True
            for a, b in itertools.pairwise(edges):
                v = tl.value_at(a) * self.gate.value_at(a)
                acc += v * (b - a)
                if first is None:
                    first = v
                elif v != first:
                    same = False
            mean[s] = first if same and first is not None else acc / (t1 - t0)  # exact when constant
            constant[s] = same
        return mean, constant
