"""The one place runtime objects are built from configuration: config kind -> builder.

Configs (:mod:`smartscope.config`) describe; this module imports the runtime code and
builds stages and controllers from them. Adding a stage or controller kind means a config
model in :mod:`smartscope.config.stages` / :mod:`smartscope.config.controllers` (and its
union) plus one line in a table here; :func:`build_stage` and :func:`build_controller`
fail loudly for a config type nobody registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smartscope.config.controllers import (
    ControllerConfig,
    EventAcquireConfig,
    EventTriggerConfig,
    ExposureBandConfig,
    ModalAOConfig,
    SMLMDensityConfig,
    SNRDoseConfig,
)
from smartscope.config.stages import (
    EngineStageConfig,
    EventDetectorConfig,
    FaultStageConfig,
    IdentityStageConfig,
    LearnedEventDetectorConfig,
    RemoteStageConfig,
    SMLMStageConfig,
    StageConfig,
    StainStageConfig,
    StatsStageConfig,
)
from smartscope.controllers.ao import ModalAOController
from smartscope.controllers.base import Controller
from smartscope.controllers.events import EventAcquireController, EventTriggerController
from smartscope.controllers.exposure import ExposureBandController
from smartscope.controllers.lowlight import SNRDoseController
from smartscope.engines.stage import EngineStage
from smartscope.models.events.stage import ClassicalEventDetector, LearnedEventDetector
from smartscope.models.smlm.controller import SMLMDensityController
from smartscope.models.smlm.stage import SMLMStage
from smartscope.models.stain.stage import StainStage
from smartscope.pipeline import FaultStage, FrameStatsStage, IdentityStage, Stage
from smartscope.remote.stage import RemoteStage

__all__ = ["CONTROLLER_BUILDERS", "STAGE_BUILDERS", "build_controller", "build_stage"]

STAGE_BUILDERS: dict[type, Callable[[Any], Stage]] = {
    IdentityStageConfig: lambda c: IdentityStage(c.name),
    StatsStageConfig: lambda c: FrameStatsStage(c.name, c.saturation_adu),
    FaultStageConfig: lambda c: FaultStage(c.name, c.at_frame, c.mode),
    EngineStageConfig: EngineStage,
    SMLMStageConfig: SMLMStage,
    StainStageConfig: StainStage,
    RemoteStageConfig: RemoteStage,
    EventDetectorConfig: ClassicalEventDetector,
    LearnedEventDetectorConfig: LearnedEventDetector,
}

CONTROLLER_BUILDERS: dict[type, Callable[[Any], Controller]] = {
    ExposureBandConfig: ExposureBandController,
    SMLMDensityConfig: SMLMDensityController,
    EventTriggerConfig: EventTriggerController,
    EventAcquireConfig: EventAcquireController,
    ModalAOConfig: ModalAOController,
    SNRDoseConfig: SNRDoseController,
}


def build_stage(cfg: StageConfig) -> Stage:
    """The pipeline stage a stage config describes."""
    builder = STAGE_BUILDERS.get(type(cfg))
    if builder is None:
        raise TypeError(f"no stage builder registered for {type(cfg).__name__}")
    return builder(cfg)


def build_controller(cfg: ControllerConfig) -> Controller:
    """The controller a controller config describes."""
    builder = CONTROLLER_BUILDERS.get(type(cfg))
    if builder is None:
        raise TypeError(f"no controller builder registered for {type(cfg).__name__}")
    return builder(cfg)
