"""The settings in force on the microscope, as one frozen value.

A driver reports a :class:`DriverState` (``Driver.state()``), stamps the state each frame
was taken in on the frame (``Frame.state``), and the loop, safety gate, controllers and
storage all read the same typed fields. ``to_json`` is the ``state`` of a
``frames.jsonl`` line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DriverState"]


@dataclass(frozen=True, slots=True)
class DriverState:
    """Settings in force. Fields a driver cannot know or set are ``None``.

    Attributes
    ----------
    exposure_ms : float
        Camera exposure (``nan`` where unknown, e.g. a replayed stack).
    interval_ms : float
        Time-lapse interval; 0 streams at camera speed.
    lasers : Mapping[str, float]
        Power in mW per laser name configured under ``microscope.lasers``.
    roi : tuple[int, int, int, int] | None
        Camera ROI (x, y, width, height) in sensor pixels.
    burst : bool
        A fast burst (``StartBurst``) is in force.
    z_um : float | None
        Focus position set through ``SetZ`` (``None``: never set by smartscope).
    mirror_rad : tuple[float, ...] | None
        Deformable-mirror Noll amplitudes (rad RMS) set through ``SetMirror``.
    xy_um : tuple[float, float] | None
        XY stage position.
    source : str | None
        Where frames come from when not a live camera (the replayed file).
    pixel_size_um : float | None
        Sample pixel size from the core's pixel-size calibration (the objective in place).
    revision : int
        Counts the batches of actions applied: a frame taken with revision ``r`` in force
        was taken after the ``r``-th batch completed.
    """

    exposure_ms: float
    interval_ms: float = 0.0
    lasers: Mapping[str, float] = field(default_factory=dict)
    roi: tuple[int, int, int, int] | None = None
    burst: bool = False
    z_um: float | None = None
    mirror_rad: tuple[float, ...] | None = None
    xy_um: tuple[float, float] | None = None
    source: str | None = None
    pixel_size_um: float | None = None
    revision: int = 0

    def replace(self, **changes: Any) -> DriverState:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def with_laser(self, name: str, power_mw: float) -> DriverState:
        return dataclasses.replace(self, lasers={**self.lasers, name: float(power_mw)})

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; fields that are ``None`` are left out."""
        out: dict[str, Any] = {
            "exposure_ms": self.exposure_ms,
            "interval_ms": self.interval_ms,
            "lasers": dict(self.lasers),
            "burst": self.burst,
            "revision": self.revision,
        }
        for key in ("roi", "z_um", "mirror_rad", "xy_um", "source", "pixel_size_um"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriverState:
        """The inverse of :meth:`to_json` (e.g. for a ``frames.jsonl`` line)."""

        def opt_tuple(key: str, kind: type) -> Any:
            v = data.get(key)
            return None if v is None else tuple(kind(x) for x in v)

        return cls(
            exposure_ms=float(data.get("exposure_ms", float("nan"))),
            interval_ms=float(data.get("interval_ms", 0.0)),
            lasers={str(k): float(v) for k, v in dict(data.get("lasers", {})).items()},
            roi=opt_tuple("roi", int),
            burst=bool(data.get("burst", False)),
            z_um=None if data.get("z_um") is None else float(data["z_um"]),
            mirror_rad=opt_tuple("mirror_rad", float),
            xy_um=opt_tuple("xy_um", float),
            source=data.get("source"),
            pixel_size_um=None if data.get("pixel_size_um") is None else float(data["pixel_size_um"]),
            revision=int(data.get("revision", 0)),
        )
