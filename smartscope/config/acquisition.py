"""What to acquire: exposure, rate, length, ROI, starting laser powers, channels, MDA."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from smartscope.config.base import FrozenModel

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
    n_frames: int | None = Field(default=None, gt=0)
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
        description="a useq-schema MDASequence; its time plan and channels fill "
        "interval_ms, n_frames and channels",
    )

    def axis_layout(self) -> tuple[dict[str, int], str]:
        """How many channels and z planes each time point has, and their order (the MDA's
        axis order; channels before z otherwise): what an OME-Zarr series is shaped by."""
        if self.mda is not None:
            import useq

            seq = useq.MDASequence.model_validate(self.mda)
            sizes = {k: int(v) for k, v in seq.sizes.items() if v}
            return sizes, "".join(str(a) for a in seq.axis_order)
        return ({"c": len(self.channels)} if self.channels else {}), "tpgcz"

    @model_validator(mode="after")
    def _from_mda(self) -> AcquisitionConfig:
        if self.mda is None:
            return self
        import useq  # useq-schema: pydantic models only, no runtime of ours

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
