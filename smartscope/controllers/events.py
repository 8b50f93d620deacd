"""Event-triggered acquisition: a classical event detector and a hysteresis trigger.

Detector (:class:`ClassicalEventDetector`, stage ``kind: event_detector``): a fission
event shows as a local *loss* of signal on a mitochondrion (the tube constricts, then
parts). Each frame is offset-corrected and smoothed with a Gaussian of ``sigma_px``; a
reference image follows the sample with an exponential moving average of time constant
``reference_tau_s`` (on the frame clock, so fast and slow modes age it alike). The loss
map ``(ref − cur) / sqrt(ref + var0)`` is shot-noise normalised, then made a robust
z-score over the frame (median / MAD), so the score does not depend on brightness. The
stage reports ``event_score`` (the map's maximum away from the border), its location in
full-sensor pixels (``event_y_px``/``event_x_px``, ROI offset added), and a row per frame
whose score reaches ``row_min_score``.

Trigger (:class:`EventTriggerController`, ``kind: event_trigger``): hysteresis on the
score — switch to the fast mode after ``min_on_frames`` consecutive frames at or above
``on_threshold``; back to the slow mode once the score stayed below ``off_threshold`` and
the burst has lasted ``min_burst_s`` (or ``max_burst_s`` passed); after a burst no new
one starts for ``cooldown_s``. Switches are typed actions with the detector output as
evidence: ``StartBurst``/``StopBurst`` (the driver's interval), optionally the camera's
own frame-timer property (``pacing: camera`` — the virtual camera's ``Interval_ms``
sets the simulated clock), an ROI around the event and per-mode laser powers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage as ndi

from smartscope.actions import (
    Action,
    ActionRequest,
    ClearROI,
    SetLaserPower,
    SetProperty,
    SetROI,
    StartBurst,
    StopBurst,
)
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.frame import Frame
from smartscope.pipeline import StageOutput

__all__ = [
    "ClassicalEventDetector",
    "EventDetectorConfig",
    "EventTriggerConfig",
    "EventTriggerController",
    "Hysteresis",
    "frame_time_s",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def frame_time_s(frame: Frame) -> float:
    """The frame's acquisition time: the simulator's clock when the camera reports one
    (``SimTime_s``), else the camera timestamp."""
    md = frame.metadata.get("mm")
    if isinstance(md, Mapping) and "SimTime_s" in md:
        return float(md["SimTime_s"])
    return float(frame.camera_time_s)


# ============================================================================ detector


class EventDetectorConfig(_Frozen):
    """Classical event detector stage (``kind: event_detector``)."""

    kind: Literal["event_detector"] = "event_detector"
    name: str = "events"
    offset_adu: float = Field(default=100.0, ge=0, description="camera offset subtracted first")
    sigma_px: float = Field(default=1.5, gt=0, description="Gaussian smoothing before comparison")
    reference_tau_s: float = Field(default=5.0, gt=0, description="memory of the reference image")
    noise_floor_adu2: float = Field(default=4.0, gt=0, description="variance added to the reference")
    border_px: int = Field(default=4, ge=0, description="edge band ignored for the maximum")
    row_min_score: float = Field(default=6.0, description="frames at/above this score get an event row")
    emit_heatmap: bool = Field(default=False, description="save the score map as a stage image")

    def build(self) -> ClassicalEventDetector:
        return ClassicalEventDetector(self)


class ClassicalEventDetector:
    """Implements :class:`smartscope.pipeline.Stage` (see the module doc)."""

    def __init__(self, cfg: EventDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._ref: np.ndarray | None = None
        self._t: float = 0.0
        self._roi: tuple[int, ...] = ()

    def reset(self) -> None:
        self._ref = None

    def score_map(self, smoothed: np.ndarray) -> np.ndarray:
        """Robust z-score of the local loss against the reference (needs a reference)."""
        assert self._ref is not None
        ref = self._ref
        loss = (ref - smoothed) / np.sqrt(np.maximum(ref, 0.0) + self.cfg.noise_floor_adu2)
        med = float(np.median(loss))
        mad = 1.4826 * float(np.median(np.abs(loss - med)))
        return ((loss - med) / max(mad, 1e-6)).astype(np.float32)

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        img = frame.image.astype(np.float32) - np.float32(self.cfg.offset_adu)
        smoothed = ndi.gaussian_filter(img, self.cfg.sigma_px, mode="nearest")
        t = frame_time_s(frame)
        state = frame.metadata.get("state", {})
        roi = tuple(int(v) for v in state.get("roi", (0, 0, img.shape[1], img.shape[0])))
        if self._ref is None or self._ref.shape != smoothed.shape or roi != self._roi:
            # first frame, or the field changed (ROI): start a new reference
            self._ref, self._t, self._roi = smoothed, t, roi
            return StageOutput(values={"event_score": 0.0, "event_y_px": -1.0, "event_x_px": -1.0})
        zmap = self.score_map(smoothed)
        b = self.cfg.border_px
        inner = zmap[b : zmap.shape[0] - b, b : zmap.shape[1] - b] if b else zmap
        k = int(np.argmax(inner))
        iy, ix = divmod(k, inner.shape[1])
        score = float(inner[iy, ix])
        y_px = float(iy + b + (roi[1] if len(roi) == 4 else 0))
        x_px = float(ix + b + (roi[0] if len(roi) == 4 else 0))
        dt = max(t - self._t, 0.0)
        alpha = 1.0 - math.exp(-dt / self.cfg.reference_tau_s) if dt > 0 else 0.5
        self._ref = self._ref + np.float32(alpha) * (smoothed - self._ref)
        self._t = t
        out = StageOutput(values={"event_score": score, "event_y_px": y_px, "event_x_px": x_px})
        if score >= self.cfg.row_min_score:
            out.rows.append({"t_s": t, "score": score, "y_px": y_px, "x_px": x_px})
        if self.cfg.emit_heatmap:
            out.images["score"] = zmap
        return out

    def close(self) -> None:
        self._ref = None


# ============================================================================ trigger


@dataclass
class Hysteresis:
    """Burst on/off decisions on a score stream (pure logic, no I/O).

    ``step(t_s, score)`` returns ``"on"`` or ``"off"`` when the mode should switch, else
    ``None``. See :class:`EventTriggerConfig` for the meaning of the thresholds.
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
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must not exceed on_threshold ({self.on_threshold})"
            )
        if self.min_on_frames < 1:
            raise ValueError(f"min_on_frames={self.min_on_frames} must be >= 1")

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


class EventTriggerConfig(_Frozen):
    """Hysteresis trigger between a slow and a fast acquisition mode (``kind: event_trigger``)."""

    kind: Literal["event_trigger"] = "event_trigger"
    name: str = "event_trigger"
    stage: str = Field(default="events", description="detector stage")
    value: str = "event_score"
    on_threshold: float = 7.0
    off_threshold: float = 5.0
    min_on_frames: int = Field(default=1, ge=1, description="consecutive frames ≥ on_threshold to start")
    min_burst_s: float = Field(default=5.0, ge=0, description="shortest burst")
    max_burst_s: float | None = Field(default=30.0, gt=0, description="longest burst (None: no limit)")
    cooldown_s: float = Field(default=2.0, ge=0, description="no new burst this soon after one ends")
    pacing: Literal["driver", "camera"] = Field(
        default="driver",
        description="driver: StartBurst(interval=fast_interval_ms) on the driver's time-lapse; "
        "camera: the camera's frame timer (interval_property) sets the rate, the driver streams",
    )
    slow_interval_ms: float = Field(default=1000.0, ge=0)
    fast_interval_ms: float = Field(default=100.0, ge=0)
    interval_property: tuple[str, str] = Field(
        default=("Camera", "Interval_ms"), description="(device, property) of the camera frame timer"
    )
    slow_lasers_mw: dict[str, float] = Field(default_factory=dict, description="powers restored after")
    fast_lasers_mw: dict[str, float] = Field(default_factory=dict, description="powers during a burst")
    roi_size_px: int | None = Field(default=None, gt=0, description="square ROI around the event")

    @model_validator(mode="after")
    def _check(self) -> EventTriggerConfig:
        if self.off_threshold > self.on_threshold:
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must not exceed on_threshold ({self.on_threshold})"
            )
        if self.fast_interval_ms > self.slow_interval_ms:
            raise ValueError(
                f"fast_interval_ms ({self.fast_interval_ms}) must not exceed slow_interval_ms "
                f"({self.slow_interval_ms})"
            )
        if set(self.fast_lasers_mw) != set(self.slow_lasers_mw):
            raise ValueError("fast_lasers_mw and slow_lasers_mw must name the same lasers")
        return self

    def build(self) -> EventTriggerController:
        return EventTriggerController(self)


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
            roi = obs.state.get("roi") or [0, 0, obs.frame.image.shape[1], obs.frame.image.shape[0]]
            width, height = int(roi[0]) + int(roi[2]), int(roi[1]) + int(roi[3])
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
        burst_now = bool(obs.state.get("burst", False))
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
