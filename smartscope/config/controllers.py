"""Controllers: one config model per ``kind``, and the union that lists them all.

A controller config says what to build; :mod:`smartscope.registry` builds it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from smartscope.config.base import FrozenModel
from smartscope.exceptions import InvalidValue

__all__ = [
    "ControllerConfig",
    "EventAcquireConfig",
    "EventTriggerConfig",
    "ExposureBandConfig",
    "ModalAOConfig",
    "SMLMDensityConfig",
    "SNRDoseConfig",
]


class ExposureBandConfig(FrozenModel):
    """Keep a frame statistic inside [low, high] by scaling exposure or laser power."""

    kind: Literal["exposure_band"] = "exposure_band"
    name: str = "exposure_band"
    stage: str = "stats"
    statistic: str = "p99_adu"
    low: float = Field(gt=0)
    high: float = Field(gt=0)
    actuator: Literal["exposure", "laser_power"] = "exposure"
    laser: str | None = Field(default=None, description="laser name for actuator laser_power")
    max_step_ratio: float = Field(
        default=2.0, gt=1, description="largest multiplicative change in one decision"
    )
    settle_frames: int = Field(default=2, ge=0, description="frames to ignore once an action is in force")
    offset_adu: float = Field(
        default=0.0, ge=0, description="camera offset: the statistic's value with no light"
    )

    @model_validator(mode="after")
    def _check(self) -> ExposureBandConfig:
        if self.low >= self.high:
            raise InvalidValue(f"low ({self.low}) must be below high ({self.high})")
        if self.actuator == "laser_power" and not self.laser:
            raise InvalidValue("actuator 'laser_power' needs 'laser'")
        return self


class SMLMDensityConfig(FrozenModel):
    """Density controller config (``kind: smlm_density``)."""

    kind: Literal["smlm_density"] = "smlm_density"
    name: str = "smlm_density"
    stage: str = Field(default="smlm", description="SMLM stage whose density_per_um2 is steered")
    value: str = "density_per_um2"
    laser: str = Field(default="405", description="activation laser name under microscope.lasers")
    target_density_per_um2: float = Field(gt=0)
    min_power_mw: float = Field(default=0.01, gt=0)
    max_power_mw: float = Field(default=100.0, gt=0)
    initial_power_mw: float | None = Field(
        default=None, gt=0, description="power to start from when the laser is off (default: min)"
    )
    kp: float = Field(default=0.3, ge=0, description="proportional gain, ln(power) per ln(density)")
    ki: float = Field(default=0.15, ge=0, description="integral gain per decision")
    smoothing_frames: float = Field(default=20.0, ge=1, description="EMA time constant of the density")
    update_every: int = Field(default=10, ge=1, description="frames between decisions")
    max_step_ratio: float = Field(default=1.5, gt=1, description="largest power change per decision")
    deadband: float = Field(default=0.05, ge=0, description="|ln error| below which nothing is asked")
    density_floor_fraction: float = Field(
        default=0.05, gt=0, le=1, description="densities below this × target count as this (no ln 0)"
    )

    @model_validator(mode="after")
    def _check(self) -> SMLMDensityConfig:
        if self.min_power_mw >= self.max_power_mw:
            raise InvalidValue(
                f"min_power_mw ({self.min_power_mw}) must be below max_power_mw ({self.max_power_mw})"
            )
        if self.initial_power_mw is not None and not (
            self.min_power_mw <= self.initial_power_mw <= self.max_power_mw
        ):
            raise InvalidValue("initial_power_mw must lie within [min_power_mw, max_power_mw]")
        return self


class EventTriggerConfig(FrozenModel):
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
            raise InvalidValue(
                f"off_threshold ({self.off_threshold}) must not exceed on_threshold ({self.on_threshold})"
            )
        if self.fast_interval_ms > self.slow_interval_ms:
            raise InvalidValue(
                f"fast_interval_ms ({self.fast_interval_ms}) must not exceed slow_interval_ms "
                f"({self.slow_interval_ms})"
            )
        if set(self.fast_lasers_mw) != set(self.slow_lasers_mw):
            raise InvalidValue("fast_lasers_mw and slow_lasers_mw must name the same lasers")
        return self


class EventAcquireConfig(FrozenModel):
    """Per-position event trigger for an MDA plan (``kind: event_acquire``): when a stage
    position's detector score stays at or above ``on_threshold`` for ``min_on_frames`` of
    its frames, that position gets an ``AcquireAt`` (a fast burst, a z-stack, other
    channels) while the other positions keep their schedule."""

    kind: Literal["event_acquire"] = "event_acquire"
    name: str = "event_acquire"
    stage: str = Field(default="events", description="detector stage")
    value: str = "event_score"
    on_threshold: float = 7.0
    min_on_frames: int = Field(default=1, ge=1, description="consecutive frames of a position ≥ on_threshold")
    burst_frames: int = Field(default=20, ge=1, le=100_000, description="timepoints of the burst")
    burst_interval_ms: float = Field(default=100.0, ge=0, description="0: as fast as the hardware goes")
    z_offsets_um: tuple[float, ...] = Field(default=(0.0,), min_length=1, description="planes of the burst")
    channels: tuple[str, ...] = Field(default=(), description="presets of the burst; (): the plan's")
    cooldown_s: float = Field(default=2.0, ge=0, description="no new burst at a position this soon after one")


class ModalAOConfig(FrozenModel):
    """Modal sensorless AO (``kind: modal_ao``)."""

    kind: Literal["modal_ao"] = "modal_ao"
    name: str = "modal_ao"
    modes: tuple[int, ...] = Field(
        default=(4, 5, 6, 7, 8, 9, 10, 11),
        description="Noll indices corrected (tip/tilt only move the image)",
    )
    bias_rad: float = Field(default=1.0, gt=0, description="bias amplitude of the first pass")
    bias_decay: float = Field(default=0.7, gt=0, le=1, description="bias factor from one pass to the next")
    passes: int = Field(default=5, ge=1)
    max_step_factor: float = Field(default=1.0, gt=0, description="largest step per pass, in biases")
    metric: Literal["sharpness", "lowfreq"] = "sharpness"
    offset_adu: float = Field(default=100.0, ge=0, description="camera offset subtracted before the metric")
    stroke_rad: float = Field(default=3.0, gt=0, description="mirror stroke limit per mode")
    base_rad: tuple[float, ...] = Field(
        default=(), description="mirror shape the correction adds to (flat / system correction), Noll j=1.."
    )
    settle_frames: int = Field(default=0, ge=0, description="frames ignored after the mirror changed")
    max_backtracks: int = Field(
        default=2, ge=0, description="halvings of a pass's update when it made the metric worse"
    )

    @model_validator(mode="after")
    def _check(self) -> ModalAOConfig:
        if not self.modes or len(set(self.modes)) != len(self.modes) or min(self.modes) < 1:
            raise InvalidValue(f"modes must be distinct Noll indices >= 1, got {self.modes}")
        if self.bias_rad > self.stroke_rad:
            raise InvalidValue(f"bias_rad ({self.bias_rad}) exceeds stroke_rad ({self.stroke_rad})")
        return self

    @property
    def n_terms(self) -> int:
        return max(max(self.modes), len(self.base_rad))

    def images_per_pass(self) -> int:
        return 2 * len(self.modes) + 1


class SNRDoseConfig(FrozenModel):
    """SNR-targeting dose controller (``kind: snr_dose``)."""

    kind: Literal["snr_dose"] = "snr_dose"
    name: str = "snr_dose"
    stage: str = Field(default="denoise", description="stage that reports the SNR")
    value: str = "snr"
    laser: str = Field(description="laser name under microscope.lasers")
    target_snr: float = Field(gt=0)
    headroom: float = Field(default=0.25, gt=0, description="band above target where nothing changes")
    gamma: float = Field(default=1.5, gt=0, description="SNR ∝ power^(1/γ)… exponent of the inverse law")
    min_power_mw: float = Field(default=0.1, gt=0)
    max_power_mw: float = Field(default=50.0, gt=0)
    max_step_ratio: float = Field(default=1.5, gt=1)
    smoothing_frames: float = Field(default=3.0, ge=1, description="EMA time constant, analysed frames")
    settle_frames: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SNRDoseConfig:
        if self.min_power_mw >= self.max_power_mw:
            raise InvalidValue(
                f"min_power_mw ({self.min_power_mw}) must be below max_power_mw ({self.max_power_mw})"
            )
        return self


ControllerConfig = Annotated[
    ExposureBandConfig
    | SMLMDensityConfig
    | EventTriggerConfig
    | EventAcquireConfig
    | ModalAOConfig
    | SNRDoseConfig,
    Field(discriminator="kind"),
]
