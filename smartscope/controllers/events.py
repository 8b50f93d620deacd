"""Event-triggered acquisition: a hysteresis trigger between a slow and a fast mode.

The trigger (:class:`EventTriggerController`, ``kind: event_trigger``) reads an event
score from a detector stage (:mod:`smartscope.models.events.stage`: the classical loss map
or the learned heat map): switch to the fast mode after ``min_on_frames`` consecutive
frames at or above ``on_threshold``; back to the slow mode once the score stayed below
``off_threshold`` and the burst has lasted ``min_burst_s`` (or ``max_burst_s`` passed);
after a burst no new one starts for ``cooldown_s``. Switches are typed actions with the
detector output as evidence: ``StartBurst``/``StopBurst`` (the driver's interval),
optionally the camera's own frame-timer property (``pacing: camera`` — the virtual
camera's ``Interval_ms`` sets the simulated clock), an ROI around the event and per-mode
laser powers.

In an MDA plan with several stage positions, :class:`EventAcquireController`
(``kind: event_acquire``) triggers per position: the frames of each position (their
``axes["p"]``) feed that position's own count of frames above ``on_threshold``; a
trigger asks for an ``AcquireAt`` there (burst, z-stack, channels) and the other
positions keep the plan's schedule. Frames of the bursts themselves do not trigger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from smartscope.actions import (
    AcquireAt,
    Action,
    ActionRequest,
    ClearROI,
    SetLaserPower,
    SetProperty,
    SetROI,
    StartBurst,
    StopBurst,
)
from smartscope.config.controllers import EventAcquireConfig, EventTriggerConfig
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.exceptions import InvalidValue
from smartscope.frame import frame_time_s

__all__ = ["EventAcquireController", "EventTriggerController", "Hysteresis"]


# ============================================================================ trigger


@dataclass
class Hysteresis:
    """Burst on/off decisions on a score stream (pure logic, no I/O).

    ``step(t_s, score)`` returns ``"on"`` or ``"off"`` when the mode should switch, else
    ``None``. See :class:`smartscope.config.EventTriggerConfig` for the meaning of the thresholds.
    """

    on_threshold: float
    off_threshold: float
    min_on_frames: int = 1
    min_burst_s: float = 0.0
    max_burst_s: float | None = None
    cooldown_s: float = 0.0
    active: bool = False
    _above: int = 0
    _since: float = 0.0
    _ended: float | None = None

    def __post_init__(self) -> None:
        if self.off_threshold > self.on_threshold:
            raise InvalidValue(
                f"off_threshold ({self.off_threshold}) must not exceed on_threshold ({self.on_threshold})"
            )
        if self.min_on_frames < 1:
            raise InvalidValue(f"min_on_frames={self.min_on_frames} must be >= 1")

    def step(self, t_s: float, score: float) -> Literal["on", "off"] | None:
        if not self.active:
            self._above = self._above + 1 if score >= self.on_threshold else 0
            cooling = self._ended is not None and t_s - self._ended < self.cooldown_s
            if self._above >= self.min_on_frames and not cooling:
                self.active, self._since, self._above = True, t_s, 0
                return "on"
            return None
        lasted = t_s - self._since
        too_long = self.max_burst_s is not None and lasted >= self.max_burst_s
        if too_long or (score < self.off_threshold and lasted >= self.min_burst_s):
            self.active, self._ended = False, t_s
            return "off"
        return None


class EventTriggerController(ControllerBase):
    """Implements :class:`smartscope.controllers.base.Controller` (see the module doc)."""

    def __init__(self, cfg: EventTriggerConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.hyst = Hysteresis(
            on_threshold=cfg.on_threshold,
            off_threshold=cfg.off_threshold,
            min_on_frames=cfg.min_on_frames,
            min_burst_s=cfg.min_burst_s,
            max_burst_s=cfg.max_burst_s,
            cooldown_s=cfg.cooldown_s,
        )
        self.switches: list[dict[str, Any]] = []
        self._seen_in_force = False  # a frame of our burst has arrived

    def _fast_actions(self, obs: Observation, y_px: float, x_px: float) -> list[Action]:
        c = self.cfg
        acts: list[Action] = []
        if c.pacing == "camera":
            acts += [
                StartBurst(interval_ms=0.0),
                SetProperty(
                    device=c.interval_property[0], property=c.interval_property[1], value=c.fast_interval_ms
                ),
            ]
        else:
            acts.append(StartBurst(interval_ms=c.fast_interval_ms))
        acts += [SetLaserPower(laser=k, power_mw=v) for k, v in c.fast_lasers_mw.items()]
        if c.roi_size_px is not None and y_px >= 0:
            roi = obs.frame.roi
            width, height = roi[0] + roi[2], roi[1] + roi[3]
            s = min(c.roi_size_px, width, height)
            x0 = int(min(max(round(x_px - s / 2), 0), width - s))
            y0 = int(min(max(round(y_px - s / 2), 0), height - s))
            acts.append(SetROI(x=x0, y=y0, width=s, height=s))
        return acts

    def _slow_actions(self) -> list[Action]:
        c = self.cfg
        acts: list[Action] = [StopBurst()]
        if c.pacing == "camera":
            acts.append(
                SetProperty(
                    device=c.interval_property[0], property=c.interval_property[1], value=c.slow_interval_ms
                )
            )
        acts += [SetLaserPower(laser=k, power_mw=v) for k, v in c.slow_lasers_mw.items()]
        if c.roi_size_px is not None:
            acts.append(ClearROI())
        return acts

    def update(self, obs: Observation) -> Sequence[ActionRequest]:
        c = self.cfg
        score = obs.value(c.stage, c.value)
        out = obs.results[c.stage].values
        y_px, x_px = float(out.get("event_y_px", -1.0)), float(out.get("event_x_px", -1.0))
        t = frame_time_s(obs.frame)
        burst_now = obs.state.burst
        if self.hyst.active and burst_now:
            self._seen_in_force = True
        elif self.hyst.active and self._seen_in_force:
            # the burst ended outside this controller (a person's StopBurst, a counted burst,
            # safety): follow it, and put the slow-mode settings back
            self.hyst.active, self.hyst._ended, self._seen_in_force = False, t, False
            evidence = {"score": score, "t_s": t, "stage": c.stage, "burst_in_state": burst_now}
            self.switches.append(
                {"t_s": t, "frame_index": obs.frame.index, "to": "off (external)", **evidence}
            )
            reason = "burst ended outside the trigger: slow-mode settings restored"
            acts = [a for a in self._slow_actions() if not isinstance(a, StopBurst)]
            return [self.ask(a, reason, obs, **evidence) for a in acts]
        switch = self.hyst.step(t, score)
        if switch is None:
            return []
        evidence = {"score": score, "y_px": y_px, "x_px": x_px, "t_s": t, "stage": c.stage}
        self.switches.append({"t_s": t, "frame_index": obs.frame.index, "to": switch, **evidence})
        self._seen_in_force = False
        if switch == "on":
            reason = (
                f"{c.value}={score:.2f} ≥ on {c.on_threshold:g}: fast mode at ({y_px:.0f}, {x_px:.0f}) px"
            )
            actions = self._fast_actions(obs, y_px, x_px)
        else:
            reason = f"{c.value}={score:.2f} < off {c.off_threshold:g} (or burst limit): slow mode"
            actions = self._slow_actions()
        return [self.ask(a, reason, obs, **evidence) for a in actions]


class EventAcquireController(ControllerBase):
    """Implements :class:`smartscope.controllers.base.Controller` (see the module doc)."""

    def __init__(self, cfg: EventAcquireConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._above: dict[int, int] = {}
        self._busy_until: dict[int, float] = {}
        self.triggers: list[dict[str, Any]] = []

    def update(self, obs: Observation) -> Sequence[ActionRequest]:
        c = self.cfg
        frame = obs.frame
        if "p" not in frame.axes or obs.state.burst:
            return []  # not a plan position's frame, or a burst frame: no evidence for a trigger
        p = frame.axes["p"]
        score = obs.value(c.stage, c.value)
        t = frame_time_s(frame)
        self._above[p] = self._above.get(p, 0) + 1 if score >= c.on_threshold else 0
        if self._above[p] < c.min_on_frames or t < self._busy_until.get(p, -math.inf):
            return []
        self._above[p] = 0
        self._busy_until[p] = t + c.burst_frames * c.burst_interval_ms / 1e3 + c.cooldown_s
        out = obs.results[c.stage].values
        evidence = {
            "score": score,
            "position": p,
            "t_s": t,
            "stage": c.stage,
            "y_px": float(out.get("event_y_px", -1.0)),
            "x_px": float(out.get("event_x_px", -1.0)),
        }
        self.triggers.append({"frame_index": frame.index, **evidence})
        action = AcquireAt(
            position=p,
            n_frames=c.burst_frames,
            interval_ms=c.burst_interval_ms,
            z_offsets_um=c.z_offsets_um,
            channels=c.channels,
        )
        reason = f"{c.value}={score:.2f} ≥ on {c.on_threshold:g} at position {p}: burst there"
        return [self.ask(action, reason, obs, **evidence)]
