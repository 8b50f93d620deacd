"""The write rate into ``storage.root``, through the run writer's own path.

A scratch run folder is made under ``storage.root`` the way a run makes its own (format,
``fsync_every``, the writer queue's budget), frames of the camera's shape go through a
:class:`~smartscope.storage.FrameWriter`, the files are flushed to the disk, and the folder
is removed. The clock runs from the first frame queued to the last byte flushed, so the
page cache does not flatter the figure.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config import StorageConfig
from smartscope.frame import Frame
from smartscope.storage import FrameWriter, RunFolder, sync_tree

__all__ = ["WriteRate", "measure_write_rate"]

SCRATCH_NAME = "smartscope-check"


@dataclass(frozen=True, slots=True)
class WriteRate:
    """What :func:`measure_write_rate` measured."""

    mb_per_s: float  # MB = 1e6 bytes
    bytes_written: int
    seconds: float
    frames: int


def _open_folder(storage: StorageConfig) -> RunFolder:
    """A scratch run folder, made as the runner makes a run's (same settings)."""
    return RunFolder(Path(storage.root), SCRATCH_NAME, storage.fsync_every, storage.format, io=storage.io)


def measure_write_rate(
    storage: StorageConfig,
    shape: tuple[int, int],
    dtype: Any = np.uint16,
    total_mb: float = 256.0,
    max_s: float = 10.0,
) -> WriteRate:
    """Write ``total_mb`` of ``shape`` frames (or for ``max_s``) into ``storage.root``
    through the run writer; returns the rate. The scratch folder is always removed."""
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    high = min(info.max if info is not None else 1, 4095)
    image = rng.integers(0, high, size=shape).astype(dtype)  # camera-like, not compressible zeros
    n_frames = max(8, int(total_mb * 1e6 // image.nbytes))
    folder = _open_folder(storage)
    writer = FrameWriter(folder, budget_bytes=storage.queue_mb << 20, policy="wait")
    sent = 0
    t0 = time.perf_counter()
    try:
        for i in range(n_frames):
            writer.put_raw(Frame(index=i, image=image, camera_time_s=i * 1e-3), wait=True)
            sent += 1
            if time.perf_counter() - t0 > max_s:
                break
        writer.close()
        folder.close()
        sync_tree(folder.path)
        seconds = time.perf_counter() - t0
        if writer.error is not None:
            raise OSError(writer.error)
    finally:
        shutil.rmtree(folder.path, ignore_errors=True)
    written = writer.frames_written * image.nbytes
    return WriteRate(written / seconds / 1e6, written, seconds, writer.frames_written)
