"""Activation-density controller: steer the 405 nm laser to hold the emitter density.

The density of active emitters is roughly ``k_act(P405) · N_off · τ_on``; as the pool
``N_off`` bleaches, the power needed for the same density grows (multiplicatively), so
the controller works in log-power: a PI law on ``e = ln(target) − ln(density)``

    u = ln P = I + kp·e,   I ← I + ki·e        (every ``update_every`` frames)

where the density is an exponential moving average over ``smoothing_frames`` frames of
the localization stage's ``density_per_um2`` (single frames hold few emitters).
Limits: P in [min_power_mw, max_power_mw], at most ×``max_step_ratio`` per decision.
Anti-windup by back-calculation: whenever the output is limited — by these limits or by
the safety layer (the applied power in the driver state differs from the last request) —
the integrator is reset so that ``I + kp·e`` equals the power actually in force.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from smartscope.actions import ActionRequest, SetLaserPower
from smartscope.config.controllers import SMLMDensityConfig
from smartscope.controllers.base import ControllerBase, Observation

__all__ = ["SMLMDensityController"]


class SMLMDensityController(ControllerBase):
    """Implements :class:`smartscope.controllers.base.Controller`."""

    def __init__(self, cfg: SMLMDensityConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.density_ema: float | None = None
        self.integrator: float | None = None  # ln(mW)
        self._last_request_mw: float | None = None
        self._frames_since_decision = 0
        self._last_frame: int | None = None

    def _current_power(self, obs: Observation) -> float:
        lasers = obs.state.lasers
        if self.cfg.laser not in lasers:
            raise KeyError(
                f"controller {self.name!r}: laser {self.cfg.laser!r} not in driver state "
                f"lasers {sorted(lasers)}"
            )
        return float(lasers[self.cfg.laser])

    def observe(self, density: float) -> float:
        """Fold one frame's density into the EMA; returns the new estimate."""
        a = 1.0 / self.cfg.smoothing_frames
        d = max(float(density), 0.0)
        self.density_ema = d if self.density_ema is None else (1 - a) * self.density_ema + a * d
        return self.density_ema

    def update(self, obs: Observation) -> Sequence[ActionRequest]:
        cfg = self.cfg
        res = obs.results.get(cfg.stage)
        if res is None or cfg.value not in res.values:
            return []  # the stage had nothing this frame (e.g. a network still buffering)
        if self._last_frame is not None and obs.frame.index <= self._last_frame:
            return []
        self._last_frame = obs.frame.index
        density = self.observe(res.values[cfg.value])
        self._frames_since_decision += 1
        if self._frames_since_decision < cfg.update_every:
            return []
        self._frames_since_decision = 0
        assert self.density_ema is not None
        current = self._current_power(obs)
        lo, hi = math.log(cfg.min_power_mw), math.log(cfg.max_power_mw)
        floor = cfg.density_floor_fraction * cfg.target_density_per_um2
        err = math.log(cfg.target_density_per_um2) - math.log(max(density, floor))
        u_now = math.log(min(max(current, cfg.min_power_mw), cfg.max_power_mw))
        if current <= 0:
            u_now = math.log(cfg.initial_power_mw or cfg.min_power_mw)
        outside_authority = self._last_request_mw is not None and not math.isclose(
            current, self._last_request_mw, rel_tol=1e-3, abs_tol=1e-9
        )
        if self.integrator is None or outside_authority:
            # bumpless start / anti-windup: the integrator continues from what is in force
            self.integrator = u_now - cfg.kp * err
        self.integrator += cfg.ki * err
        u = self.integrator + cfg.kp * err
        step = math.log(cfg.max_step_ratio)
        u_lim = min(max(u, u_now - step, lo), u_now + step, hi)
        if u_lim != u:  # back-calculation: never integrate beyond what can be applied
            self.integrator = u_lim - cfg.kp * err
        new = math.exp(u_lim)
        if abs(err) < cfg.deadband or math.isclose(new, current, rel_tol=1e-3):
            self._last_request_mw = current
            return []
        self._last_request_mw = new
        reason = (
            f"density {density:.3g}/µm² vs target {cfg.target_density_per_um2:.3g}/µm²: "
            f"{cfg.laser} {current:.3g} → {new:.3g} mW"
        )
        return [
            self.ask(
                SetLaserPower(laser=cfg.laser, power_mw=new),
                reason,
                obs,
                density_per_um2_ema=density,
                density_per_um2_frame=float(res.values[cfg.value]),
                target_density_per_um2=cfg.target_density_per_um2,
                log_error=err,
                integrator_ln_mw=self.integrator,
                power_before_mw=current,
                limited=u_lim != u,
            )
        ]
