"""Limits every action is vetted against, the safe state, and the watchdog's patience."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from smartscope.actions import SetProperty
from smartscope.config.base import FrozenModel
from smartscope.exceptions import InvalidValue

__all__ = ["LimitsConfig", "SafeStateConfig", "WatchdogConfig"]


class LimitsConfig(FrozenModel):
    exposure_ms: tuple[float, float] = (0.1, 2000.0)
    interval_ms_min: float = Field(default=0.0, ge=0)
    max_exposure_ratio_per_s: float | None = Field(
        default=None, gt=1, description="largest factor exposure may change by in 1 s"
    )
    laser_max_mw: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="per-laser ceiling below the device's own"
    )
    max_power_change_mw_per_s: float | None = Field(default=None, gt=0)
    allowed_values: dict[str, list[str]] = Field(
        default_factory=dict,
        description="'Device.Property' -> the only values actions may set",
    )
    mirror_max_rad: float = Field(default=3.0, gt=0, description="per-mode stroke limit")
    z_um: tuple[float, float] | None = None
    xy_um: tuple[tuple[float, float], tuple[float, float]] | None = Field(
        default=None,
        description="stage travel allowed: ((x_min, x_max), (y_min, y_max)) in µm; plan positions "
        "and AcquireAt targets outside it are refused",
    )
    on_violation: Literal["clamp", "refuse"] = "clamp"
    max_plan_events: int = Field(
        default=1_000_000,
        ge=1,
        description="largest MDA plan, in events (counted from the plan's sizes, never by expanding it)",
    )
    max_burst_frames: int = Field(
        default=10_000,
        ge=1,
        description="largest AcquireAt (frames x planes x channels) or counted StartBurst",
    )

    @model_validator(mode="after")
    def _order(self) -> LimitsConfig:
        lo, hi = self.exposure_ms
        if not 0 < lo < hi:
            raise InvalidValue(f"exposure_ms must be (min, max) with 0 < min < max, got {lo, hi}")
        if self.z_um is not None and not self.z_um[0] < self.z_um[1]:
            raise InvalidValue(f"z_um must be (min, max) with min < max, got {self.z_um}")
        if self.xy_um is not None and not all(lo < hi for lo, hi in self.xy_um):
            raise InvalidValue(
                f"xy_um must be ((x_min, x_max), (y_min, y_max)) with min < max, got {self.xy_um}"
            )
        return self


class SafeStateConfig(FrozenModel):
    """What a fault, stall, Ctrl-C or the end of a run switches to. Lasers always go to 0."""

    lasers_off: Literal[True] = Field(
        default=True, description="always true: every configured laser goes to 0 mW, whatever else fails"
    )
    close_shutter: bool = True
    properties: list[SetProperty] = Field(
        default_factory=list, description="extra property settings applied on a fault"
    )


class WatchdogConfig(FrozenModel):
    camera_start_s: float = Field(
        default=10.0,
        gt=0,
        description="time a camera may take from (re)starting to its first frame (sCMOS: 0.1-1 s)",
    )
    camera_stall_s: float = Field(
        default=3.0, gt=0, description="no frame for this long (beyond the interval) = stall"
    )
    pipeline_stall_s: float = Field(default=10.0, gt=0)
