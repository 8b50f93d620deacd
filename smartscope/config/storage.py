"""Where and how a run is written."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from smartscope.config.base import FrozenModel

__all__ = ["StorageConfig"]


class StorageConfig(FrozenModel):
    root: Path = Path("runs")
    name: str = Field(default="run", pattern=r"^[A-Za-z0-9_.-]+$")
    fsync_every: int = Field(
        default=0, ge=0, description="0: flush each frame to the OS; N: also fsync every N"
    )
