"""Typed actions: everything a controller (or a person) may ask the microscope to do.

Actions are frozen pydantic models discriminated by ``kind``; an :class:`ActionRequest`
wraps one with the why (reason, source, the engine output behind it). Safety turns a
request into an :class:`AuditRecord` (applied, clamped or refused) and the loop writes
every record to ``actions.jsonl``.

Plan actions (:class:`AcquireAt`, :class:`SkipPosition`, :class:`SetPositionInterval`)
change what an MDA run images next; a driver without an MDA plan refuses them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

from smartscope.base_model import FrozenModel
from smartscope.exceptions import InvalidValue

# What one action or request may carry: a controller, a person or a remote client can send
# them, so nothing in them is unbounded (sizes of sequences and free text, n_frames).
MAX_NAME_CHARS = 256
MAX_VALUE_CHARS = 4096
MAX_REASON_CHARS = 2000
MAX_EVIDENCE_BYTES = 16384
MAX_MIRROR_MODES = 1000
MAX_FRAMES = 2**31 - 1  # what Micro-Manager's sequence calls take (a C int)

Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]


class _Action(FrozenModel):
    """Frozen; NaN and infinity cannot be expressed (an action with them does not validate)."""


class SetExposure(_Action):
    kind: Literal["exposure"] = "exposure"
    exposure_ms: float = Field(gt=0)


class SetLaserPower(_Action):
    kind: Literal["laser_power"] = "laser_power"
    laser: Name = Field(description="laser name as configured under microscope.lasers")
    power_mw: float = Field(ge=0)


class SetLaserSequence(_Action):
    """A frame-locked power schedule, run by the hardware: frame k of the stream after it is
    armed gets ``powers_mw[k % len(powers_mw)]`` (e.g. ``(0, 5)``: 405 nm on every other
    frame), at full camera speed, until another power action for that laser. Needs a power
    property Micro-Manager reports as sequenceable; anything else refuses it (a sequence is
    never imitated in software). Arming it restarts the camera's sequence once, so the first
    frame of the schedule is known exactly."""

    kind: Literal["laser_sequence"] = "laser_sequence"
    laser: Name
    powers_mw: tuple[float, ...] = Field(min_length=2, max_length=100_000)

    @model_validator(mode="after")
    def _non_negative(self) -> SetLaserSequence:
        if any(p < 0 for p in self.powers_mw):
            raise InvalidValue("powers_mw: every power must be >= 0 mW")
        return self


class SetProperty(_Action):
    kind: Literal["property"] = "property"
    device: Name
    property: Name
    value: Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)] | float | int


class SetROI(_Action):
    kind: Literal["roi"] = "roi"
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class ClearROI(_Action):
    kind: Literal["clear_roi"] = "clear_roi"


class SetInterval(_Action):
    kind: Literal["interval"] = "interval"
    interval_ms: float = Field(ge=0, description="0 streams as fast as the camera goes")


class SetMirror(_Action):
    kind: Literal["mirror"] = "mirror"
    zernike_rad: tuple[float, ...] = Field(
        max_length=MAX_MIRROR_MODES,
        description="deformable-mirror amplitudes, Noll order starting at j=1, rad RMS",
    )


class SetZ(_Action):
    kind: Literal["z"] = "z"
    z_um: float


class StartBurst(_Action):
    kind: Literal["start_burst"] = "start_burst"
    interval_ms: float = Field(ge=0)
    n_frames: int | None = Field(
        default=None, gt=0, le=MAX_FRAMES, description="None: until StopBurst (limits.max_burst_frames)"
    )


class StopBurst(_Action):
    kind: Literal["stop_burst"] = "stop_burst"


# ---- plan actions: change what an MDA run (acquisition.mda) images next


class AcquireAt(_Action):
    """Image a place now, outside the plan: a fast burst, a z-stack, more channels.

    The place is a stage position of the plan (``position``, its index ``p``: its x, y and
    z) or an absolute ``xy_um``; ``z_um`` moves the focus there (default: the position's z,
    else the focus stays). Each of ``n_frames`` timepoints, ``interval_ms`` apart, takes
    every channel at every plane ``z_um + z_offsets_um``. The frames form an image series
    of their own (``p<p>-burst<n>``; ``at<n>`` for an ``xy_um`` target). Untouched
    positions keep their schedule. Only an MDA run can do it.
    """

    kind: Literal["acquire_at"] = "acquire_at"
    position: int | None = Field(default=None, ge=0, description="stage position index p of the plan")
    xy_um: tuple[float, float] | None = Field(default=None, description="absolute stage x, y (µm)")
    z_um: float | None = Field(default=None, description="focus at the stack centre (µm)")
    z_offsets_um: tuple[float, ...] = Field(
        default=(0.0,), min_length=1, max_length=1000, description="planes relative to z_um (µm)"
    )
    channels: tuple[Name, ...] = Field(
        default=(), max_length=64, description="presets of channel_group; () = the plan's channels"
    )
    channel_group: Name | None = Field(default=None, description="None: the plan's channel group")
    n_frames: int = Field(default=1, ge=1, le=100_000, description="timepoints")
    interval_ms: float = Field(default=0.0, ge=0, description="0: as fast as the hardware goes")

    @model_validator(mode="after")
    def _has_a_place(self) -> AcquireAt:
        if self.position is None and self.xy_um is None:
            raise InvalidValue("AcquireAt needs a position (plan index) or xy_um")
        return self


class SkipPosition(_Action):
    """Stop imaging a stage position of the plan (``skip=False``: image it again from its
    next due timepoint). Timepoints that come due while it is skipped are dropped."""

    kind: Literal["skip_position"] = "skip_position"
    position: int = Field(ge=0)
    skip: bool = True


class SetPositionInterval(_Action):
    """Re-time one stage position's remaining timepoints: the next one ``interval_ms`` after
    its last, then every ``interval_ms``. ``None`` restores the plan's spacing (from its last
    timepoint on). The position keeps the plan's number of timepoints; others are untouched."""

    kind: Literal["position_interval"] = "position_interval"
    position: int = Field(ge=0)
    interval_ms: float | None = Field(default=None, ge=0)


Action = Annotated[
    SetExposure
    | SetLaserPower
    | SetLaserSequence
    | SetProperty
    | SetROI
    | ClearROI
    | SetInterval
    | SetMirror
    | SetZ
    | StartBurst
    | StopBurst
    | AcquireAt
    | SkipPosition
    | SetPositionInterval,
    Field(discriminator="kind"),
]
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)


class ActionRequest(FrozenModel):
    """An action with the reasons behind it, as a controller or a person asks for it."""

    action: Action
    reason: str = Field(max_length=MAX_REASON_CHARS)
    source: str = Field(
        max_length=MAX_NAME_CHARS, description="controller name, 'user', 'safety', or 'remote:<peer>'"
    )
    frame_index: int | None = Field(default=None, description="frame the decision looked at")
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description=f"engine outputs behind it; at most {MAX_EVIDENCE_BYTES} bytes as JSON",
    )
    decided_time_s: float | None = None

    @field_validator("evidence")
    @classmethod
    def _capped(cls, v: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(v, default=str))
        if size > MAX_EVIDENCE_BYTES:
            raise ValueError(f"{size} bytes as JSON; at most {MAX_EVIDENCE_BYTES}")
        return v


Verdict = Literal["applied", "clamped", "refused", "failed"]


class AuditRecord(FrozenModel):
    """What became of a request: one line of ``actions.jsonl``."""

    seq: int
    request: ActionRequest
    verdict: Verdict
    applied: Action | None = Field(description="the action sent to hardware (after clamping)")
    note: str = ""
    applied_time_s: float | None = None
    first_frame_index: int | None = Field(
        default=None, description="first raw frame acquired with this action in force"
    )
