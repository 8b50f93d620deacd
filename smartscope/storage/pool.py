"""Memory reserved for the writer queue, so that a write stall costs no fresh page faults.

Why. A frame popped from Micro-Manager is a fresh allocation. While the writer keeps up,
the allocator hands the same few buffers round and they stay resident. When the disk
stalls, the queue grows, and every new frame lands in memory the process has never
touched. Faulting in 8 MiB took 1.5-24 ms here (a 2-core VM; ``python
bench/fresh_memory.py``), more than the 10 ms between 2048² frames at 100 fps. The
acquisition thread fell behind the camera and Micro-Manager's circular buffer overflowed:
the run failed on a stall the queue had been sized to absorb.

What. A :class:`FramePool` maps the queue's budget once, when the first frame shows the
frame size, and touches it page by page on a background thread. :meth:`FramePool.hold`
copies a frame into a free slot (one copy between resident buffers) and returns an array
over the slot. The slot is free again when the last view of that array is gone: a
finalizer on the buffer object that every view of it keeps alive. With no slot free (not
touched yet, a frame larger than a slot, every slot in use), the frame is kept as it
came. Slots are page aligned, so the direct-I/O writer takes them without a staging copy.

A run takes its reserve with :func:`reserve`, which keeps the last one for the process: the
next run of the same frame size and budget uses it again instead of mapping and touching
another (a long-lived process, napari or ``smartscope serve``, holds it until a run needs
another size or :func:`release_reserve`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import sys
import threading
import weakref
from collections import deque

import numpy as np

__all__ = ["PAGE_BYTES", "FramePool", "release_reserve", "reserve", "trim_allocator"]

log = logging.getLogger(__name__)

PAGE_BYTES = mmap.PAGESIZE


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


class FramePool:
    """``n_slots`` page-aligned slots of at least ``slot_bytes``, touched in the background."""

    def __init__(self, slot_bytes: int, n_slots: int) -> None:
        if slot_bytes <= 0 or n_slots <= 0:
            raise ValueError(f"FramePool: {n_slots} slots of {slot_bytes} bytes")
        self.slot_bytes = _round_up(slot_bytes, PAGE_BYTES)
        self.n_slots = int(n_slots)
        self._map = mmap.mmap(-1, self.slot_bytes * self.n_slots)
        if hasattr(mmap, "MADV_HUGEPAGE"):  # fewer, larger faults while touching (Linux)
            with contextlib.suppress(OSError):
                self._map.madvise(mmap.MADV_HUGEPAGE)
        self._free: deque[int] = deque()  # append/popleft are atomic: producer and finalizers
        self.touched = 0  # slots resident so far
        self.held = 0  # frames copied into a slot
        self.passed = 0  # frames kept as they came (no slot free, or too large)
        self._stop = threading.Event()
        self._toucher = threading.Thread(target=self._touch, name="smartscope-reserve", daemon=True)
        self._toucher.start()

    @property
    def nbytes(self) -> int:
        return self.slot_bytes * self.n_slots

    def _touch(self) -> None:
        """Fault every page in (one write per page), slot by slot; each slot is lent once resident."""
        pages = np.frombuffer(self._map, dtype=np.uint8)
        for i in range(self.n_slots):
            if self._stop.is_set():
                return
            pages[i * self.slot_bytes : (i + 1) * self.slot_bytes : PAGE_BYTES] = 0
            self._free.append(i)
            self.touched = i + 1

    def hold(self, image: np.ndarray) -> np.ndarray:
        """``image`` copied into a free slot, or ``image`` itself when no slot can take it."""
        if image.nbytes > self.slot_bytes or image.nbytes == 0:
            self.passed += 1
            return image
        try:
            slot = self._free.popleft()
        except IndexError:
            self.passed += 1
            return image
        start = slot * self.slot_bytes
        flat = np.frombuffer(memoryview(self._map)[start : start + image.nbytes], dtype=image.dtype)
        out = flat.reshape(image.shape)
        np.copyto(out, image)
        owner: object = flat
        while isinstance(owner, np.ndarray):  # the buffer object every view of ``out`` keeps
            owner = owner.base
        weakref.finalize(owner, self._free.append, slot)
        self.held += 1
        return out

    def fits(self, slot_bytes: int, n_slots: int) -> bool:
        return self.slot_bytes == _round_up(slot_bytes, PAGE_BYTES) and self.n_slots == n_slots

    def close(self) -> None:
        """Stop touching. The mapping goes when the last slot's last view does."""
        self._stop.set()
        self._toucher.join()
        log.debug(
            "writer reserve: %d of %d slots touched, %d frames held, %d kept as they came",
            self.touched,
            self.n_slots,
            self.held,
            self.passed,
        )


_KEPT: FramePool | None = None
_KEPT_LOCK = threading.Lock()


def reserve(slot_bytes: int, n_slots: int) -> FramePool:
    """The process's reserve for ``n_slots`` frames of ``slot_bytes``: the kept one when it
    has that shape, else a new one (the old one goes when its last frame does)."""
    global _KEPT
    with _KEPT_LOCK:
        if _KEPT is None or not _KEPT.fits(slot_bytes, n_slots):
            if _KEPT is not None:
                _KEPT.close()
            _KEPT = FramePool(slot_bytes, n_slots)
        return _KEPT


def release_reserve() -> None:
    """Let go of the kept reserve; its memory goes back when its last frame does."""
    global _KEPT
    with _KEPT_LOCK:
        if _KEPT is not None:
            _KEPT.close()
        _KEPT = None


def trim_allocator() -> None:
    """Hand the C allocator's free memory back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere). Each run's acquisition thread frees the frames Micro-Manager popped
    once they are copied into the reserve, and glibc keeps such chunks in per-thread arenas:
    without this, a process running run after run crept up by about 100 MB (the soak)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
