"""Where and how a run is written."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from smartscope.config.base import FrozenModel

__all__ = ["StorageConfig"]


class StorageConfig(FrozenModel):
    format: Literal["ome-tiff", "ome-zarr"] = Field(
        default="ome-tiff",
        description="ome-tiff: crash-safe BigTIFF pages (the default); ome-zarr: OME-NGFF through "
        "ome-writers, one image per position",
    )
    root: Path = Path("runs")
    name: str = Field(default="run", pattern=r"^[A-Za-z0-9_.-]+$")
    io: Literal["auto", "direct", "buffered"] = Field(
        default="auto",
        description="how raw and output stacks reach the disk: direct: past the page cache (O_DIRECT on "
        "Linux, F_NOCACHE on macOS, FILE_FLAG_NO_BUFFERING on Windows; aligned pages); buffered: "
        "through it; auto: direct where the file system takes it, else buffered with one log line",
    )
    fsync_every: int = Field(
        default=0, ge=0, description="0: each batch of frames goes to the OS; N: also fsync every N frames"
    )
    queue_mb: int = Field(
        default=1024,
        ge=16,
        le=1 << 20,
        description="memory for frames waiting to be written (the writer queue's budget, MiB)",
    )
    reserve_queue: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="hold the writer queue's memory from the first frame: frames are copied into "
        "memory touched in advance, so a write stall never makes the acquisition thread fault in fresh "
        "pages (smartscope.storage.pool); auto: for frames of 1 MiB or more",
    )
    on_queue_full: Literal["stop", "wait"] = Field(
        default="stop",
        description="stop: safe state and end the run, every frame already taken written; "
        "wait: the acquisition waits for the disk (the camera's buffer may overflow)",
    )
