"""Typed actions: everything a controller (or a person) may ask the microscope to do.

Actions are frozen pydantic models discriminated by ``kind``; an :class:`ActionRequest`
wraps one with the why (reason, source, the engine output behind it). Safety turns a
request into an :class:`AuditRecord` (applied, clamped or refused) and the loop writes
every record to ``actions.jsonl``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Action(BaseModel):
    """Frozen; NaN and infinity cannot be expressed (an action with them does not validate)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SetExposure(_Action):
    kind: Literal["exposure"] = "exposure"
    exposure_ms: float = Field(gt=0)


class SetLaserPower(_Action):
    kind: Literal["laser_power"] = "laser_power"
    laser: str = Field(description="laser name as configured under microscope.lasers")
    power_mw: float = Field(ge=0)


class SetProperty(_Action):
    kind: Literal["property"] = "property"
    device: str
    property: str
    value: str | float | int


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
        description="deformable-mirror amplitudes, Noll order starting at j=1, rad RMS"
    )


class SetZ(_Action):
    kind: Literal["z"] = "z"
    z_um: float


class StartBurst(_Action):
    kind: Literal["start_burst"] = "start_burst"
    interval_ms: float = Field(ge=0)
    n_frames: int | None = Field(default=None, gt=0, description="None: until StopBurst")


class StopBurst(_Action):
    kind: Literal["stop_burst"] = "stop_burst"


Action = Annotated[
    SetExposure
    | SetLaserPower
    | SetProperty
    | SetROI
    | ClearROI
    | SetInterval
    | SetMirror
    | SetZ
    | StartBurst
    | StopBurst,
    Field(discriminator="kind"),
]
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)


class ActionRequest(BaseModel):
    """An action with the reasons behind it, as a controller or a person asks for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    reason: str
    source: str = Field(description="controller name, 'user', 'safety', or 'remote:<peer>'")
    frame_index: int | None = Field(default=None, description="frame the decision looked at")
    evidence: dict[str, Any] = Field(default_factory=dict)
    decided_time_s: float | None = None


Verdict = Literal["applied", "clamped", "refused", "failed"]


class AuditRecord(BaseModel):
    """What became of a request: one line of ``actions.jsonl``."""

    model_config = ConfigDict(frozen=True)

    seq: int
    request: ActionRequest
    verdict: Verdict
    applied: Action | None = Field(description="the action sent to hardware (after clamping)")
    note: str = ""
    applied_time_s: float | None = None
    first_frame_index: int | None = Field(
        default=None, description="first raw frame acquired with this action in force"
    )
