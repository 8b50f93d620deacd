"""First controller: keep a frame statistic inside a band by scaling exposure or power.

The statistic (e.g. the 99th percentile in ADU) minus the camera offset is taken as
proportional to the light collected, so the correction is multiplicative:
``new = current · (target − offset) / (value − offset)``, with ``target`` the band's
geometric centre, bounded to ``max_step_ratio`` per decision. After asking, the
controller waits until a frame taken with the new setting arrives (or 30 frames pass,
if safety clamped the request to the current value) and then ``settle_frames`` more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from smartscope.actions import ActionRequest, SetExposure, SetLaserPower
from smartscope.config.controllers import ExposureBandConfig
from smartscope.controllers.base import ControllerBase, Observation

_MAX_WAIT_FRAMES = 30


class ExposureBandController(ControllerBase):
    def __init__(self, cfg: ExposureBandConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._asked_at: int | None = None  # frame index of the last request
        self._value_when_asked: float | None = None
        self._settle_left = 0

    def _current(self, obs: Observation) -> float:
        if self.cfg.actuator == "exposure":
            return obs.state.exposure_ms
        assert self.cfg.laser is not None
        return float(obs.state.lasers[self.cfg.laser])

    def update(self, obs: Observation) -> Sequence[ActionRequest]:
        current = self._current(obs)
        if self._asked_at is not None:
            changed = not math.isclose(current, self._value_when_asked or 0.0, rel_tol=1e-6)
            waited = obs.frame.index - self._asked_at
            if not changed and waited < _MAX_WAIT_FRAMES:
                return []
            self._asked_at = None
            self._settle_left = self.cfg.settle_frames
        if self._settle_left > 0:
            self._settle_left -= 1
            return []
        value = obs.value(self.cfg.stage, self.cfg.statistic)
        if self.cfg.low <= value <= self.cfg.high:
            return []
        off = self.cfg.offset_adu
        target = math.sqrt(self.cfg.low * self.cfg.high)
        signal = max(value - off, 1e-3)
        ratio = (target - off) / signal
        step = self.cfg.max_step_ratio
        ratio = min(step, max(1.0 / step, ratio))
        new = current * ratio
        if current <= 0:
            new = 1.0  # nothing to scale from: start at a small, stated value
        self._asked_at = obs.frame.index
        self._value_when_asked = current
        direction = "above" if value > self.cfg.high else "below"
        reason = (
            f"{self.cfg.statistic}={value:.0f} {direction} band "
            f"[{self.cfg.low:g}, {self.cfg.high:g}]: {self.cfg.actuator} x{ratio:.3g}"
        )
        action = (
            SetExposure(exposure_ms=new)
            if self.cfg.actuator == "exposure"
            else SetLaserPower(laser=self.cfg.laser or "", power_mw=new)
        )
        return [
            self.ask(
                action, reason, obs, statistic=self.cfg.statistic, value=value, current=current, ratio=ratio
            )
        ]
