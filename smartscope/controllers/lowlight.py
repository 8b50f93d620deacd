"""Low-light dose control: the least laser power that keeps the denoised output's SNR on target.

The controller reads an SNR value (by default ``snr`` of a restoration
:class:`~smartscope.engines.stage.EngineStage`: signal of the denoised frame over the noise
the engine removed), smooths it with an exponential moving average of ``smoothing_frames``
analysed frames, and scales the laser power multiplicatively:

    P ← P · (target / snr)^(1/γ),   bounded to ×[1/max_step_ratio, max_step_ratio]

with ``γ`` the SNR-vs-power exponent (1: read-noise limited, 2: shot-noise limited;
default 1.5). It asks only outside the band ``[target, target·(1 + headroom)]`` —
above it light is wasted (lower), below it quality is lost (raise: e.g. the dye bleaches)
— and after a change waits for a frame acquired with the new power, then
``settle_frames`` more, before deciding again. Power stays within
``[min_power_mw, max_power_mw]`` (and the safety layer's limits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from smartscope.actions import ActionRequest, SetLaserPower
from smartscope.config.controllers import SNRDoseConfig
from smartscope.controllers.base import ControllerBase, Observation

__all__ = ["SNRDoseController"]


class SNRDoseController(ControllerBase):
    """Implements :class:`smartscope.controllers.base.Controller`; see the module doc."""

    def __init__(self, cfg: SNRDoseConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.ema: float | None = None
        self.asked: float | None = None  # power requested, not yet seen in force
        self.settle = 0
        self.n_since = 0  # frames averaged since the last change

    def update(self, obs: Observation) -> Sequence[ActionRequest]:
        c = self.cfg
        power = float(obs.state.lasers[c.laser])
        if self.asked is not None:
            if not math.isclose(power, self.asked, rel_tol=1e-6, abs_tol=1e-9):
                return []  # taken before the new power was in force
            self.asked, self.ema, self.settle = None, None, c.settle_frames
        if self.settle > 0:
            self.settle -= 1
            return []
        snr = obs.value(c.stage, c.value)
        a = 1.0 / c.smoothing_frames
        self.ema = snr if self.ema is None else self.ema + a * (snr - self.ema)
        self.n_since += 1
        hi = c.target_snr * (1 + c.headroom)
        if self.n_since < c.smoothing_frames or c.target_snr <= self.ema <= hi:
            return []  # average a few frames first; inside the band nothing changes
        ratio = (c.target_snr * (1 + 0.5 * c.headroom) / max(self.ema, 1e-6)) ** (1 / c.gamma)
        ratio = min(c.max_step_ratio, max(1 / c.max_step_ratio, ratio))
        new = min(c.max_power_mw, max(c.min_power_mw, power * ratio if power > 0 else c.min_power_mw))
        if math.isclose(new, power, rel_tol=1e-3):
            return []  # at a limit
        self.asked = new
        self.n_since = 0
        direction = "below target" if self.ema < c.target_snr else "above the band (light wasted)"
        reason = (
            f"{c.value} {self.ema:.2f} {direction} [{c.target_snr:g}, {hi:.3g}]: power x{new / power:.3g}"
        )
        return [
            self.ask(
                SetLaserPower(laser=c.laser, power_mw=new),
                reason,
                obs,
                snr=snr,
                snr_ema=self.ema,
                power_mw=power,
                ratio=new / power if power > 0 else float("inf"),
            )
        ]
