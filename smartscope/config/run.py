"""The whole run configuration, and the checks that span its sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from smartscope.config.acquisition import AcquisitionConfig
from smartscope.config.base import FrozenModel
from smartscope.config.controllers import ControllerConfig
from smartscope.config.mda import extent_problems, plan_problems, plan_size, size_problem
from smartscope.config.microscope import MicroscopeConfig
from smartscope.config.remote import RemoteConfig
from smartscope.config.safety import LimitsConfig, SafeStateConfig, WatchdogConfig
from smartscope.config.stages import StageConfig, StatsStageConfig
from smartscope.config.storage import StorageConfig
from smartscope.exceptions import InvalidValue

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
            raise InvalidValue(f"pipeline.stages: names must be unique, got {stage_names}")
        for i, ctl in enumerate(self.controllers):
            stage = getattr(ctl, "stage", None)
            if stage not in (None, *stage_names):
                raise InvalidValue(
                    f"controllers[{i}].stage: {stage!r} is not a pipeline stage (have {stage_names})"
                )
            if ctl.kind == "event_acquire" and self.acquisition.sequence is None:
                raise InvalidValue(
                    f"controllers[{i}]: event_acquire images positions of an MDA plan; give acquisition.mda"
                )
            laser = getattr(ctl, "laser", None)
            if laser is not None and laser not in self.microscope.lasers:
                raise InvalidValue(f"controllers[{i}].laser: {laser!r} is not in microscope.lasers")
        lo, hi = self.limits.exposure_ms
        if not lo <= self.acquisition.exposure_ms <= hi:
            raise InvalidValue(
                f"acquisition.exposure_ms: {self.acquisition.exposure_ms} is outside "
                f"limits.exposure_ms {lo}..{hi}"
            )
        for name, mw in self.limits.laser_max_mw.items():
            if name not in self.microscope.lasers:
                raise InvalidValue(f"limits.laser_max_mw: unknown laser {name!r}")
            if mw > self.microscope.lasers[name].max_power_mw:
                device_max = self.microscope.lasers[name].max_power_mw
                raise InvalidValue(
                    f"limits.laser_max_mw.{name}: {mw:g} mW is above "
                    f"microscope.lasers.{name}.max_power_mw ({device_max:g} mW)"
                )
        self._check_laser_writes()
        self._check_mda()
        for name, mw in self.acquisition.lasers_mw.items():
            laser = self.microscope.lasers.get(name)
            if laser is None:
                raise InvalidValue(f"acquisition.lasers_mw: unknown laser {name!r}")
            ceiling = min(laser.max_power_mw, self.limits.laser_max_mw.get(name, laser.max_power_mw))
            if not 0 <= mw <= ceiling:
                raise InvalidValue(f"acquisition.lasers_mw.{name}: {mw} mW outside 0..{ceiling} mW")
        return self

    def _check_mda(self) -> None:
        """An MDA plan: one source, nothing beside it that it decides, inside the limits."""
        acq = self.acquisition
        seq = acq.sequence
        if seq is None:
            return
        field = "acquisition.mda" if acq.mda is not None else "acquisition.mda_file"
        if acq.mda is not None and acq.mda_file is not None:
            raise InvalidValue("acquisition.mda_file: give the plan inline (mda) or as a file, not both")
        if self.microscope.driver == "replay":
            raise InvalidValue(f"{field}: an MDA plan needs a microscope (driver pymmcore-plus), not replay")
        if self.microscope.driver == "pycromanager":
            raise InvalidValue(
                f"{field}: microscope.driver pycromanager cannot run an MDA plan (it has no pymmcore-plus "
                "MDA engine to run it through, nor event-level control for plan actions); use "
                "microscope.driver: pymmcore-plus with the same .cfg"
            )
        if acq.channels:
            raise InvalidValue(f"acquisition.channels: the MDA plan ({field}) brings its own channels")
        if acq.interval_ms:
            raise InvalidValue(f"acquisition.interval_ms: the MDA plan's time_plan ({field}) sets the timing")
        # never expanded here: its size and extent come from each axis's own plan
        if plan_size(seq) == 0:
            raise InvalidValue(
                f"{field}: the plan has no events (give it channels, positions, a z or time plan)"
            )
        too_big = size_problem(seq, self.limits)
        if too_big:
            raise InvalidValue(too_big.replace("acquisition.mda", field, 1))
        problems = extent_problems(seq, self.limits) + plan_problems(seq, (), self.limits)
        if problems:
            raise InvalidValue("; ".join(problems))

    def _check_laser_writes(self) -> None:
        """Start-up properties and safe-state extras that write a laser's power: within its
        ceiling at start-up, 0 in the safe state (which must never switch light on)."""
        lasers = {(cfg.device, cfg.power_property): name for name, cfg in self.microscope.lasers.items()}
        for where, writes, safe in (
            ("microscope.startup", self.microscope.startup, False),
            ("safe_state.properties", self.safe_state.properties, True),
        ):
            for i, prop in enumerate(writes):
                name = lasers.get((prop.device, prop.property))
                if name is None:
                    continue
                try:
                    mw = float(prop.value)
                except ValueError:
                    raise InvalidValue(f"{where}[{i}].value: {prop.value!r} is not a laser power") from None
                ceiling = min(
                    self.microscope.lasers[name].max_power_mw,
                    self.limits.laser_max_mw.get(name, self.microscope.lasers[name].max_power_mw),
                )
                if safe and mw != 0:
                    raise InvalidValue(
                        f"{where}[{i}]: sets laser {name} to {mw:g} mW; a safe state cannot switch light on"
                    )
                if not 0 <= mw <= ceiling:
                    raise InvalidValue(
                        f"{where}[{i}]: sets laser {name} to {mw:g} mW, outside 0..{ceiling:g} mW"
                    )
