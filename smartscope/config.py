"""The run configuration: YAML validated by pydantic before any hardware moves.

Every model is frozen and forbids unknown keys, so a typo is an error, not a silent
default. :func:`load_config` turns pydantic's errors into one line per problem, each
naming the field path (``acquisition.exposure_ms``) and the reason.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from smartscope.actions import SetProperty

if TYPE_CHECKING:
    from smartscope.controllers.base import Controller
    from smartscope.pipeline import Stage


class ConfigError(ValueError):
    """A configuration is unusable; ``problems`` lists ``field.path: reason`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid configuration {source}:\n  " + "\n  ".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- microscope


class LaserConfig(_Model):
    device: str = Field(description="Micro-Manager device label")
    power_property: str = "Power"
    wavelength_nm: float = Field(gt=0)
    max_power_mw: float = Field(gt=0, description="hard ceiling; safety refuses more")


class MicroscopeConfig(_Model):
    driver: Literal["pymmcore-plus", "pycromanager", "replay"] = "pymmcore-plus"
    config_file: str = Field(
        default="demo",
        description="'demo' (mm-test-adapters demo), 'virtual' (smartscope's virtual "
        "microscope) or a path to a Micro-Manager .cfg",
    )
    camera: str | None = Field(default=None, description="camera label; None: the core's")
    shutter: str | None = None
    focus: str | None = Field(default=None, description="Z stage label")
    mirror: str | None = Field(default=None, description="deformable-mirror device label")
    mirror_property: str = Field(
        default="Z{j}", description="mirror property per Noll index j, e.g. 'Z{j}' -> 'Z4'"
    )
    lasers: dict[str, LaserConfig] = Field(default_factory=dict)
    startup: list[SetProperty] = Field(
        default_factory=list,
        description="device properties set after the .cfg loads, before anything else",
    )
    buffer_size_mb: int = Field(default=512, ge=16)
    # pycromanager
    pycromanager_mode: Literal["headless", "bridge"] = "headless"
    bridge_port: int = Field(default=4827, ge=1, le=65535)
    # replay
    replay_path: Path | None = None
    replay_fps: float | None = Field(default=None, gt=0, description="None: the recorded frame rate")

    @model_validator(mode="after")
    def _replay_needs_path(self) -> MicroscopeConfig:
        if self.driver == "replay" and self.replay_path is None:
            raise ValueError("driver 'replay' needs microscope.replay_path")
        return self


# --------------------------------------------------------------- acquisition


class ROIConfig(_Model):
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class ChannelConfig(_Model):
    group: str = Field(description="Micro-Manager config group, e.g. 'Channel'")
    preset: str
    exposure_ms: float | None = Field(default=None, gt=0)


class AcquisitionConfig(_Model):
    exposure_ms: float = Field(default=10.0, gt=0)
    interval_ms: float = Field(
        default=0.0, ge=0, description="0 streams at camera speed (sequence acquisition)"
    )
    n_frames: int | None = Field(default=None, gt=0)
    duration_s: float | None = Field(default=None, gt=0)
    roi: ROIConfig | None = None
    lasers_mw: dict[str, float] = Field(
        default_factory=dict, description="laser powers set before the first frame"
    )
    channels: list[ChannelConfig] = Field(default_factory=list)
    mda: dict[str, Any] | None = Field(
        default=None,
        description="a useq-schema MDASequence; its time plan and channels fill "
        "interval_ms, n_frames and channels",
    )

    @model_validator(mode="after")
    def _from_mda(self) -> AcquisitionConfig:
        if self.mda is None:
            return self
        import useq

        try:
            seq = useq.MDASequence.model_validate(self.mda)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(
                f"mda is not a valid useq-schema MDASequence: mda.{where}: {first['msg']}"
                f" ({err.error_count()} problem(s))"
            ) from None
        updates: dict[str, Any] = {}
        plan = seq.time_plan
        if plan is not None:
            interval = getattr(plan, "interval", None)
            if interval is not None:
                updates["interval_ms"] = interval.total_seconds() * 1e3
            loops = getattr(plan, "loops", None)
            if loops is not None and self.n_frames is None:
                updates["n_frames"] = int(loops) * max(1, len(seq.channels))
        if seq.channels and not self.channels:
            updates["channels"] = [
                ChannelConfig(group=c.group, preset=c.config, exposure_ms=c.exposure) for c in seq.channels
            ]
        if not updates:
            return self
        return self.model_copy(update=updates)


# ------------------------------------------------------------------ pipeline


class IdentityStageConfig(_Model):
    kind: Literal["identity"] = "identity"
    name: str = "identity"

    def build(self) -> Stage:
        from smartscope.pipeline import IdentityStage

        return IdentityStage(self.name)


class StatsStageConfig(_Model):
    kind: Literal["stats"] = "stats"
    name: str = "stats"
    saturation_adu: int = Field(default=65535, gt=0)

    def build(self) -> Stage:
        from smartscope.pipeline import FrameStatsStage

        return FrameStatsStage(self.name, self.saturation_adu)


class FaultStageConfig(_Model):
    """Deliberately fails at a chosen frame: for fault drills and tests."""

    kind: Literal["fault"] = "fault"
    name: str = "fault"
    at_frame: int = Field(ge=0)
    mode: Literal["raise", "nan", "hang"] = "raise"

    def build(self) -> Stage:
        from smartscope.pipeline import FaultStage

        return FaultStage(self.name, self.at_frame, self.mode)


# Engine families define their own stage/controller configs next to their code; the
# unions below are the one place that lists them all.
from smartscope.controllers.ao import ModalAOConfig  # noqa: E402
from smartscope.controllers.events import EventDetectorConfig, EventTriggerConfig  # noqa: E402
from smartscope.controllers.lowlight import SNRDoseConfig  # noqa: E402
from smartscope.engines.stage import EngineStageConfig  # noqa: E402
from smartscope.models.events.heatmap import LearnedEventDetectorConfig  # noqa: E402
from smartscope.models.smlm.controller import SMLMDensityConfig  # noqa: E402
from smartscope.models.smlm.stage import SMLMStageConfig  # noqa: E402
from smartscope.models.stain.stage import StainStageConfig  # noqa: E402
from smartscope.remote.server import RemoteConfig  # noqa: E402
from smartscope.remote.worker import RemoteStageConfig  # noqa: E402

StageConfig = Annotated[
    IdentityStageConfig
    | StatsStageConfig
    | FaultStageConfig
    | EngineStageConfig
    | SMLMStageConfig
    | StainStageConfig
    | RemoteStageConfig
    | EventDetectorConfig
    | LearnedEventDetectorConfig,
    Field(discriminator="kind"),
]


class PipelineConfig(_Model):
    stages: list[StageConfig] = Field(default_factory=lambda: list[StageConfig]([StatsStageConfig()]))
    on_error: Literal["stop", "skip"] = Field(
        default="stop",
        description="stop: safe state and end the run; skip: count the frame as failed "
        "and go on (controllers see nothing from it)",
    )
    save_outputs: bool = True


# --------------------------------------------------------------- controllers


class ExposureBandConfig(_Model):
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
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.actuator == "laser_power" and not self.laser:
            raise ValueError("actuator 'laser_power' needs 'laser'")
        return self

    def build(self) -> Controller:
        from smartscope.controllers.exposure import ExposureBandController

        return ExposureBandController(self)


ControllerConfig = Annotated[
    ExposureBandConfig | SMLMDensityConfig | EventTriggerConfig | ModalAOConfig | SNRDoseConfig,
    Field(discriminator="kind"),
]


# -------------------------------------------------------------------- safety


class LimitsConfig(_Model):
    exposure_ms: tuple[float, float] = (0.1, 2000.0)
    interval_ms_min: float = Field(default=0.0, ge=0)
    max_exposure_ratio_per_s: float | None = Field(
        default=None, gt=1, description="largest factor exposure may change by in 1 s"
    )
    laser_max_mw: dict[str, float] = Field(
        default_factory=dict, description="per-laser ceiling below the device's own"
    )
    max_power_change_mw_per_s: float | None = Field(default=None, gt=0)
    allowed_values: dict[str, list[str]] = Field(
        default_factory=dict,
        description="'Device.Property' -> the only values actions may set",
    )
    mirror_max_rad: float = Field(default=3.0, gt=0, description="per-mode stroke limit")
    z_um: tuple[float, float] | None = None
    on_violation: Literal["clamp", "refuse"] = "clamp"

    @model_validator(mode="after")
    def _order(self) -> LimitsConfig:
        lo, hi = self.exposure_ms
        if not 0 < lo < hi:
            raise ValueError(f"exposure_ms must be (min, max) with 0 < min < max, got {lo, hi}")
        return self


class SafeStateConfig(_Model):
    lasers_off: bool = True
    close_shutter: bool = True
    properties: list[SetProperty] = Field(
        default_factory=list, description="extra property settings applied on a fault"
    )


class WatchdogConfig(_Model):
    camera_stall_s: float = Field(
        default=3.0, gt=0, description="no frame for this long (beyond the interval) = stall"
    )
    pipeline_stall_s: float = Field(default=10.0, gt=0)


class StorageConfig(_Model):
    root: Path = Path("runs")
    name: str = Field(default="run", pattern=r"^[A-Za-z0-9_.-]+$")
    fsync_every: int = Field(
        default=0, ge=0, description="0: flush each frame to the OS; N: also fsync every N"
    )


class SmartscopeConfig(_Model):
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


# ------------------------------------------------------------------- loading


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """``('controllers', 0, 'exposure_band', 'low')`` -> ``controllers[0].low``.

    A discriminated union adds its tag to the location; it is dropped when it is just
    the ``kind`` of the item at that point.
    """
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, Mapping) and node.get("kind") == part and part not in node:
            continue
        out += f".{part}" if out else part
        node = node.get(part) if isinstance(node, Mapping) else None
    return out or "(top level)"


def _format_errors(err: ValidationError, data: Any = None) -> list[str]:
    lines = []
    for e in err.errors():
        path = _field_path(tuple(e["loc"]), data)
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        if path == "(top level)" and re.match(r"^[\w\[\].]+: ", msg):
            lines.append(msg)  # a cross-field check that names its own field
        else:
            lines.append(f"{path}: {msg}{shown}")
    return lines


def validate_config(data: Mapping[str, Any] | None, source: str = "<dict>") -> SmartscopeConfig:
    """Validate a mapping (e.g. parsed YAML); raise :class:`ConfigError` on any problem."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        return SmartscopeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, _format_errors(err, data)) from None


def load_config(path: str | Path) -> SmartscopeConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), ["file not found"])
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(p), [f"{where}not valid YAML ({getattr(err, 'problem', err)})"]) from None
    return validate_config(data, str(p))


def dump_config(cfg: SmartscopeConfig) -> str:
    """The config as YAML, exactly as it will run (defaults filled in)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def example_config_text() -> str:
    """The commented example shipped with the package (``smartscope config --example``)."""
    return (importlib.resources.files("smartscope") / "example_config.yaml").read_text("utf-8")
