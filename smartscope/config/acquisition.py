"""What to acquire: exposure, rate, length, ROI, starting laser powers, channels, MDA.

Without an MDA plan, frames stream (``interval_ms == 0``) or are snapped at an interval,
cycling ``channels``. With one (``mda`` or ``mda_file``, a useq-schema ``MDASequence``),
the plan decides positions, grid, z, channels and timing; ``n_frames`` and
``duration_s`` then only cap the run, and ``channels``/``interval_ms`` must stay unset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import useq
from pydantic import Field, PrivateAttr, field_validator, model_validator

from smartscope.actions import MAX_FRAMES
from smartscope.config.base import FrozenModel
from smartscope.config.mda import read_sequence, read_sequence_file

__all__ = ["AcquisitionConfig", "ChannelConfig", "ROIConfig"]


class ROIConfig(FrozenModel):
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class ChannelConfig(FrozenModel):
    group: str = Field(description="Micro-Manager config group, e.g. 'Channel'")
    preset: str
    exposure_ms: float | None = Field(default=None, gt=0)


class AcquisitionConfig(FrozenModel):
    exposure_ms: float = Field(default=10.0, gt=0)
    interval_ms: float = Field(
        default=0.0, ge=0, description="0 streams at camera speed (sequence acquisition)"
    )
    n_frames: int | None = Field(default=None, gt=0, le=MAX_FRAMES)
    duration_s: float | None = Field(default=None, gt=0)
    roi: ROIConfig | None = None
    lasers_mw: dict[str, float] = Field(
        default_factory=dict, description="laser powers set before the first frame"
    )
    channels: list[ChannelConfig] = Field(default_factory=list)
    apply_mode: Literal["live", "exact"] = Field(
        default="live",
        description="live: actions that do not reconfigure the camera (lasers, shutter, Z, mirror, "
        "device properties) apply while it streams, frames attributed by timestamps; exact: "
        "every batch stops, drains and restarts the camera's sequence",
    )
    camera_pipeline_frames: int = Field(
        default=2,
        ge=0,
        le=1000,
        description="live mode, cameras without exposure timestamps: frames that may be exposing "
        "or queued in the camera while an action applies (they are marked transition)",
    )
    mda: dict[str, Any] | None = Field(
        default=None,
        description="a useq-schema MDASequence (positions, grid, z, channels, time, autofocus): "
        "the plan, run through pymmcore-plus's MDA runner and engine",
    )
    mda_file: Path | None = Field(
        default=None,
        description="a useq-schema MDASequence saved as YAML or JSON (MDASequence.yaml(), "
        "napari-micromanager's MDA widget); instead of mda",
    )
    _sequence: Any = PrivateAttr(default=None)

    @field_validator("mda")
    @classmethod
    def _valid_mda(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            read_sequence(v)
        return v

    @field_validator("mda_file")
    @classmethod
    def _valid_mda_file(cls, v: Path | None) -> Path | None:
        if v is not None:
            read_sequence_file(v)
        return v

    def axis_layout(self) -> tuple[dict[str, int], str]:
        """How many channels and z planes each time point has, and their order (the MDA's
        axis order; channels before z otherwise): what an OME-Zarr series is shaped by."""
        seq = self.sequence  # inline or from mda_file
        if seq is not None:
            sizes = {k: int(v) for k, v in seq.sizes.items() if v}
            return sizes, "".join(str(a) for a in seq.axis_order)
        return ({"c": len(self.channels)} if self.channels else {}), "tpgcz"

    @model_validator(mode="after")
    def _keep_sequence(self) -> AcquisitionConfig:
        # the conflicts (both given, channels or interval_ms beside a plan, an empty plan,
        # limits) are checked with the whole config: SmartscopeConfig
        if self.mda is not None:
            self._sequence = read_sequence(self.mda)
        elif self.mda_file is not None:
            self._sequence = read_sequence_file(self.mda_file)
        return self

    @property
    def sequence(self) -> useq.MDASequence | None:
        """The MDA plan (``mda`` or ``mda_file``), validated; ``None`` without one."""
        seq: useq.MDASequence | None = self._sequence
        return seq
