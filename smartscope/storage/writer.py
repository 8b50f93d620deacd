"""The frame writer: one thread owns every image file of a run; a bounded queue feeds it.

The acquisition thread hands each raw frame to :meth:`FrameWriter.put_raw` (an O(1) append
of a reference; a large frame was copied once before, into the queue's reserved memory,
:mod:`smartscope.storage.pool`) and the same frame to analysis; the analysis
thread hands engine outputs and table rows to :meth:`put_output` / :meth:`put_rows`. The
writer thread takes what is queued in order, writes runs of raw frames as one batch
(:meth:`RunFolder.write_raw`: large sequential writes, past the page cache with
``storage.io: direct``, the pixels taken from the frames' own memory; then the frames'
lines), and releases them. So decision latency does not depend on the disk, and the disk
sees large sequential writes.

Memory: the queue holds at most ``budget_bytes`` of pixels. When a raw frame does not fit,
the policy decides: ``stop`` (default) takes it anyway — nothing that was taken off the
camera is dropped — and reports the queue as full, so the loop can go to the safe state
and end the run with every frame taken written; ``wait`` blocks the acquisition thread
until there is room (the camera's own buffer then fills, and the driver reports if it
overflows). Frames still queued when the process is killed are lost, like frames in
Micro-Manager's circular buffer; every frame already written survives.

A write error (a full disk, a failing drive) stops the writer: ``error`` names the file and
the reason, ``on_error`` is called once, and later frames are counted as not stored (those
of a failed batch that did reach the disk and its log, :class:`~.folder.PartlyWritten`,
count as stored).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smartscope.exceptions import InvalidValue, SmartscopeError
from smartscope.frame import Frame
from smartscope.storage.folder import RunFolder

__all__ = ["FrameWriter", "QueueFull"]

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 64 << 20
MAX_BATCH_FRAMES = 256


class QueueFull(SmartscopeError, RuntimeError):
    """The writer queue's memory budget is used up (policy ``stop``)."""


@dataclass(slots=True)
class _Output:
    stage: str
    key: str
    index: int
    image: np.ndarray
    time_s: float
    channel_names: Sequence[str] | None


@dataclass(slots=True)
class _Rows:
    stage: str
    index: int
    rows: list[dict[str, Any]] = field(default_factory=list)


def _nbytes(item: Frame | _Output | _Rows) -> int:
    if isinstance(item, Frame):
        return int(item.image.nbytes)
    if isinstance(item, _Output):
        return int(item.image.nbytes)
    return 256 * len(item.rows)


class FrameWriter:
    """Writes a run folder's image files on its own thread (see the module doc)."""

    def __init__(
        self,
        run: RunFolder,
        budget_bytes: int,
        policy: str = "stop",
        on_stored: Callable[[Sequence[Frame]], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if policy not in ("stop", "wait"):
            raise InvalidValue(f"storage.on_queue_full: {policy!r} is not 'stop' or 'wait'")
        self.run = run
        self.budget_bytes = int(budget_bytes)
        self.policy = policy
        self.on_stored = on_stored
        self.on_error = on_error
        self._queue: deque[Frame | _Output | _Rows] = deque()
        self._cond = threading.Condition()
        self._queued_bytes = 0
        self.peak_queued_bytes = 0
        self.frames_written = 0
        self.frames_not_written = 0
        self.error: str | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="smartscope-writer", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- producers

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def put_raw(self, frame: Frame, wait: bool = False) -> None:
        """Queue a raw frame. Raises :class:`QueueFull` (after queueing it) when the budget
        is exceeded under policy ``stop``; waits for room under ``wait`` or when ``wait``."""
        n = int(frame.image.nbytes)
        with self._cond:
            if self.error is not None:
                self.frames_not_written += 1
                return
            over = self._queued_bytes + n > self.budget_bytes and self._queue
            if over and (wait or self.policy == "wait"):
                while self._queue and self._queued_bytes + n > self.budget_bytes and self.error is None:
                    self._cond.wait(0.1)
                over = False
            self._append(frame, n)
        if over:
            raise QueueFull(
                f"storage: the writer queue holds {self._queued_bytes / 2**20:.0f} MiB, more than "
                f"storage.queue_mb = {self.budget_bytes / 2**20:.0f} MiB: the disk does not keep up"
            )

    def put_output(
        self,
        stage: str,
        key: str,
        index: int,
        image: np.ndarray,
        time_s: float,
        channel_names: Sequence[str] | None = None,
    ) -> None:
        """Queue an engine output image (never refused: outputs are few and analysis-paced)."""
        item = _Output(stage, key, index, np.asarray(image, dtype=np.float32), time_s, channel_names)
        with self._cond:
            if self.error is None:
                self._append(item, _nbytes(item))

    def put_rows(self, stage: str, index: int, rows: list[dict[str, Any]]) -> None:
        item = _Rows(stage, index, list(rows))
        with self._cond:
            if self.error is None:
                self._append(item, _nbytes(item))

    def _append(self, item: Frame | _Output | _Rows, n: int) -> None:
        self._queue.append(item)
        self._queued_bytes += n
        self.peak_queued_bytes = max(self.peak_queued_bytes, self._queued_bytes)
        self._cond.notify_all()

    # ---------------------------------------------------------------- the thread

    def _take(self) -> list[Frame | _Output | _Rows]:
        """Everything up to a batch: consecutive raw frames, or one output / rows item."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait(0.1)
            if not self._queue:
                return []
            first = self._queue[0]
            if not isinstance(first, Frame):
                return [self._queue[0]]
            batch: list[Frame | _Output | _Rows] = []
            size = 0
            for item in self._queue:
                if not isinstance(item, Frame) or len(batch) >= MAX_BATCH_FRAMES:
                    break
                if batch and size + item.image.nbytes > MAX_BATCH_BYTES:
                    break
                batch.append(item)
                size += item.image.nbytes
            return batch

    def _release(self, batch: Sequence[Frame | _Output | _Rows]) -> None:
        with self._cond:
            for _ in batch:
                item = self._queue.popleft()
                self._queued_bytes -= _nbytes(item)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                self._write(batch)
            except Exception as exc:
                stored: list[Frame] = getattr(exc, "stored", [])  # PartlyWritten: these made it
                self.frames_written += len(stored)
                if stored and self.on_stored is not None:
                    self.on_stored(stored)
                self.frames_not_written += sum(isinstance(b, Frame) for b in batch) - len(stored)
                self._fail(exc)
            self._release(batch)

    def _write(self, batch: Sequence[Frame | _Output | _Rows]) -> None:
        if self.error is not None:
            self.frames_not_written += sum(isinstance(b, Frame) for b in batch)
            return
        first = batch[0]
        if isinstance(first, Frame):
            frames = [b for b in batch if isinstance(b, Frame)]
            self.run.write_raw(frames)
            self.frames_written += len(frames)
            if self.on_stored is not None:
                self.on_stored(frames)
        elif isinstance(first, _Output):
            self.run.write_output(
                first.stage, first.key, first.index, first.image, first.time_s, first.channel_names
            )
        else:
            self.run.write_rows(first.stage, first.index, first.rows)

    def _fail(self, exc: Exception) -> None:
        self.run.release_reserve()  # room for the headers, the logs and metrics.json
        where = getattr(exc, "filename", None) or self.run.raw_path or self.run.path
        reason = getattr(exc, "strerror", None) or str(exc)
        msg = f"storage: cannot write {where}: {reason}"
        log.debug(msg)  # the loop reports it, as the fault it is
        with self._cond:
            first = self.error is None
            self.error = self.error or msg
            self._cond.notify_all()
        if first and self.on_error is not None:
            self.on_error(msg)

    # ---------------------------------------------------------------- the end

    def close(self, timeout_s: float = 600.0) -> None:
        """Write everything queued, then finish the image files (OME headers)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.5)
        if self._thread.is_alive():
            raise TimeoutError(f"storage: the writer did not finish within {timeout_s:g} s")
        try:
            self.run.close_images()
        except OSError as exc:
            self._fail(exc)
