"""Which microscope: the driver, its Micro-Manager configuration, lasers and devices."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from smartscope.actions import SetProperty
from smartscope.config.base import FrozenModel
from smartscope.exceptions import InvalidValue

__all__ = ["LaserConfig", "MicroscopeConfig"]


class LaserConfig(FrozenModel):
    device: str = Field(description="Micro-Manager device label")
    power_property: str = "Power"
    wavelength_nm: float = Field(gt=0)
    max_power_mw: float = Field(gt=0, description="hard ceiling; safety refuses more")


class MicroscopeConfig(FrozenModel):
    driver: Literal["pymmcore-plus", "pycromanager", "replay"] = "pymmcore-plus"
    config_file: str = Field(
        default="demo",
        description="'demo' (mm-test-adapters demo), 'virtual' (smartscope's virtual "
        "microscope) or a path to a Micro-Manager .cfg",
    )
    mm_path: Path | None = Field(
        default=None,
        description="the Micro-Manager installation whose device adapters load the .cfg; None: the "
        "one pymmcore-plus finds (MICROMANAGER_PATH, `mmcore use`, `mmcore install`)",
    )
    adapter_paths: list[Path] = Field(
        default_factory=list,
        description="more folders of device adapters, searched before the installation",
    )
    camera: str | None = Field(default=None, description="camera label; None: the core's")
    shutter: str | None = None
    focus: str | None = Field(default=None, description="Z stage label")
    mirror: str | None = Field(default=None, description="deformable-mirror device label")
    mirror_property: str = Field(
        default="Z{j}", description="mirror property per Noll index j, e.g. 'Z{j}' -> 'Z4'"
    )
    lasers: dict[str, LaserConfig] = Field(
        default_factory=dict,
        description="every light source (lasers, LEDs, lamps): vetted, read back, switched off by "
        "the safe state",
    )
    not_light: list[str] = Field(
        default_factory=list,
        description="device labels that look like light sources (a power, intensity or laser "
        "property) but emit none; any other such device must be in lasers",
    )
    startup: list[SetProperty] = Field(
        default_factory=list,
        description="device properties set after the .cfg loads, before anything else",
    )
    buffer_size_mb: int = Field(default=512, ge=16, le=1 << 20, description="circular buffer (MB)")
    # pycromanager
    pycromanager_mode: Literal["headless", "bridge"] = "headless"
    bridge_port: int = Field(default=4827, ge=1, le=65535)
    # replay
    replay_path: Path | None = None
    replay_fps: float | None = Field(default=None, gt=0, description="None: the recorded frame rate")

    @model_validator(mode="after")
    def _replay_needs_path(self) -> MicroscopeConfig:
        if self.driver == "replay" and self.replay_path is None:
            raise InvalidValue("driver 'replay' needs microscope.replay_path")
        return self
