"""The run configuration: YAML validated by pydantic before any hardware moves.

This package is the bottom layer of smartscope: its modules import only pydantic,
useq-schema (models only) and :mod:`smartscope.actions`. Every model is frozen and forbids
unknown keys, so a typo is an error, not a silent default. Runtime objects are built from
these models in one place, :mod:`smartscope.registry`.

Sections: :mod:`.microscope`, :mod:`.acquisition`, :mod:`.stages` (the ``StageConfig``
union), :mod:`.controllers` (``ControllerConfig``), :mod:`.safety` (limits, safe state,
watchdog), :mod:`.storage`, :mod:`.remote`, :mod:`.run` (``SmartscopeConfig``),
:mod:`.scenarios` (demo scenarios) and :mod:`.loading` (YAML in and out, error lines).
"""

from smartscope.config.acquisition import AcquisitionConfig, ChannelConfig, ROIConfig
from smartscope.config.base import BackendChoice, FrozenModel
from smartscope.config.controllers import (
    ControllerConfig,
    EventAcquireConfig,
    EventTriggerConfig,
    ExposureBandConfig,
    ModalAOConfig,
    SMLMDensityConfig,
    SNRDoseConfig,
)
from smartscope.config.loading import (
    ConfigError,
    dump_config,
    example_config_text,
    format_validation_error,
    load_config,
    validate_config,
)
from smartscope.config.microscope import LaserConfig, MicroscopeConfig
from smartscope.config.remote import RemoteConfig
from smartscope.config.run import PipelineConfig, SmartscopeConfig
from smartscope.config.safety import LimitsConfig, SafeStateConfig, WatchdogConfig
from smartscope.config.scenarios import (
    AOScenario,
    BleachScenario,
    EventsPositionsScenario,
    EventsScenario,
    LowlightScenario,
    ScenarioConfig,
    SMLMScenario,
    StainScenario,
)
from smartscope.config.stages import (
    EngineStageConfig,
    EventDetectorConfig,
    FaultStageConfig,
    IdentityStageConfig,
    LearnedEventDetectorConfig,
    RemoteStageConfig,
    SMLMCameraConfig,
    SMLMStageConfig,
    StageConfig,
    StainStageConfig,
    StatsStageConfig,
)
from smartscope.config.storage import StorageConfig

__all__ = [
    "AOScenario",
    "AcquisitionConfig",
    "BackendChoice",
    "BleachScenario",
    "ChannelConfig",
    "ConfigError",
    "ControllerConfig",
    "EngineStageConfig",
    "EventAcquireConfig",
    "EventDetectorConfig",
    "EventTriggerConfig",
    "EventsPositionsScenario",
    "EventsScenario",
    "ExposureBandConfig",
    "FaultStageConfig",
    "FrozenModel",
    "IdentityStageConfig",
    "LaserConfig",
    "LearnedEventDetectorConfig",
    "LimitsConfig",
    "LowlightScenario",
    "MicroscopeConfig",
    "ModalAOConfig",
    "PipelineConfig",
    "ROIConfig",
    "RemoteConfig",
    "RemoteStageConfig",
    "SMLMCameraConfig",
    "SMLMDensityConfig",
    "SMLMScenario",
    "SMLMStageConfig",
    "SNRDoseConfig",
    "SafeStateConfig",
    "ScenarioConfig",
    "SmartscopeConfig",
    "StageConfig",
    "StainScenario",
    "StainStageConfig",
    "StatsStageConfig",
    "StorageConfig",
    "WatchdogConfig",
    "dump_config",
    "example_config_text",
    "format_validation_error",
    "load_config",
    "validate_config",
]
