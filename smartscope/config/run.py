"""The whole run configuration, and the checks that span its sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from smartscope.config.acquisition import AcquisitionConfig
from smartscope.config.base import FrozenModel
from smartscope.config.controllers import ControllerConfig
from smartscope.config.microscope import MicroscopeConfig
from smartscope.config.remote import RemoteConfig
from smartscope.config.safety import LimitsConfig, SafeStateConfig, WatchdogConfig
from smartscope.config.stages import StageConfig, StatsStageConfig
from smartscope.config.storage import StorageConfig

__all__ = ["PipelineConfig", "SmartscopeConfig"]


class PipelineConfig(FrozenModel):
    stages: list[StageConfig] = Field(default_factory=lambda: list[StageConfig]([StatsStageConfig()]))
    on_error: Literal["stop", "skip"] = Field(
        default="stop",
        description="stop: safe state and end the run; skip: count the frame as failed "
        "and go on (controllers see nothing from it)",
    )
    save_outputs: bool = True


class SmartscopeConfig(FrozenModel):
    microscope: MicroscopeConfig = Field(default_factory=MicroscopeConfig)
    acquisition: AcquisitionConfig = Field(default_factory=AcquisitionConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    controllers: list[ControllerConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    safe_state: SafeStateConfig = Field(default_factory=SafeStateConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    remote: RemoteConfig | None = Field(
        default=None, description="stream the run and accept control over ZMQ (loopback by default)"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _cross_checks(self) -> SmartscopeConfig:
        stage_names = [s.name for s in self.pipeline.stages]
        if len(set(stage_names)) != len(stage_names):
            raise ValueError(f"pipeline.stages: names must be unique, got {stage_names}")
        for i, ctl in enumerate(self.controllers):
            stage = getattr(ctl, "stage", None)
            if stage not in (None, *stage_names):
                raise ValueError(
                    f"controllers[{i}].stage: {stage!r} is not a pipeline stage (have {stage_names})"
                )
            laser = getattr(ctl, "laser", None)
            if laser is not None and laser not in self.microscope.lasers:
                raise ValueError(f"controllers[{i}].laser: {laser!r} is not in microscope.lasers")
        lo, hi = self.limits.exposure_ms
        if not lo <= self.acquisition.exposure_ms <= hi:
            raise ValueError(
                f"acquisition.exposure_ms: {self.acquisition.exposure_ms} is outside "
                f"limits.exposure_ms {lo}..{hi}"
            )
        for name in self.limits.laser_max_mw:
            if name not in self.microscope.lasers:
                raise ValueError(f"limits.laser_max_mw: unknown laser {name!r}")
        for name, mw in self.acquisition.lasers_mw.items():
            laser = self.microscope.lasers.get(name)
            if laser is None:
                raise ValueError(f"acquisition.lasers_mw: unknown laser {name!r}")
            ceiling = min(laser.max_power_mw, self.limits.laser_max_mw.get(name, laser.max_power_mw))
            if not 0 <= mw <= ceiling:
                raise ValueError(f"acquisition.lasers_mw.{name}: {mw} mW outside 0..{ceiling} mW")
        return self
