"""Files written past the page cache: direct I/O, aligned memory, and the staging ring.

``open_file(path, direct=True)`` opens a file for positioned writes that skip the OS cache:
``O_DIRECT`` on Linux, ``F_NOCACHE`` on macOS, ``FILE_FLAG_NO_BUFFERING |
FILE_FLAG_WRITE_THROUGH`` on Windows (each as its platform documents it). Such writes
must start at a multiple of :data:`ALIGN` bytes in the file, be a multiple of it long and
come from memory aligned to it; :class:`AlignedWriter` takes any buffers and keeps those
rules: a buffer already aligned in memory and length goes to the kernel as it is, any
other is copied once into a preallocated aligned staging ring, and the copy of one piece
overlaps the write of the previous one (a second thread issues the writes). With
``direct=False`` the same calls are plain positioned writes through the page cache.

``resolve_io(folder, "auto")`` says which a folder gets: direct where the file system
takes it, else buffered, with one log line (a file system that refuses ``O_DIRECT``, or
a memory-backed one where there is no cache to bypass).

Invariant: when :meth:`AlignedWriter.write` returns, every byte it was given is in the
file (written by the device for direct I/O, in the OS for buffered), or it raised.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

__all__ = [
    "ALIGN",
    "AlignedWriter",
    "IoMode",
    "RawFile",
    "WriteStats",
    "aligned_empty",
    "direct_io_refusal",
    "open_file",
    "resolve_io",
    "round_up",
]

log = logging.getLogger(__name__)

IoMode = Literal["direct", "buffered"]

# File offsets, lengths and buffer addresses of direct writes are multiples of this: the
# page size, a multiple of every logical sector size in use (512 B, 4 KiB).
ALIGN = 4096
STAGING_SLOT_BYTES = 16 << 20  # two slots: one being written while the next is filled
_IOV_MAX = 1024
_MEMORY_FILE_SYSTEMS = {"tmpfs", "ramfs", "devtmpfs"}


def round_up(n: int, align: int) -> int:
    return -(-n // align) * align


def aligned_empty(nbytes: int) -> np.ndarray:
    """``nbytes`` of page-aligned memory as a uint8 array (an anonymous mapping)."""
    buf = mmap.mmap(-1, max(nbytes, 1))
    return np.frombuffer(buf, dtype=np.uint8, count=nbytes)


def _is_aligned(view: memoryview) -> bool:
    address = np.frombuffer(view, dtype=np.uint8).ctypes.data if view.nbytes else 0
    return address % ALIGN == 0 and view.nbytes % ALIGN == 0


@dataclass(slots=True)
class WriteStats:
    """What a file's writes cost: bytes, calls, time in them and the slowest one."""

    bytes: int = 0
    calls: int = 0
    seconds: float = 0.0
    worst_s: float = 0.0
    copied_bytes: int = 0  # bytes that went through the staging ring (not aligned already)

    def add(self, n: int, dt: float) -> None:
        self.bytes += n
        self.calls += 1
        self.seconds += dt
        self.worst_s = max(self.worst_s, dt)


class RawFile(Protocol):
    """A file opened for positioned writes (see :func:`open_file`)."""

    path: Path
    direct: bool

    def writev(self, views: Sequence[memoryview], offset: int) -> int: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class _PosixFile:
    """``os.pwritev`` on a descriptor; ``O_DIRECT`` (Linux) or ``F_NOCACHE`` (macOS) when direct."""

    def __init__(self, path: Path, direct: bool) -> None:
        self.path = path
        self.direct = direct
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        if direct and sys.platform.startswith("linux"):
            flags |= os.O_DIRECT
        self._fd = os.open(path, flags, 0o644)
        if direct and sys.platform == "darwin":  # pragma: no cover - macOS only
            import fcntl

            # F_NOCACHE: reads and writes of this descriptor bypass the unified buffer cache
            # where they are page aligned (fcntl(2) on macOS); 48 is its value in <sys/fcntl.h>
            try:
                fcntl.fcntl(self._fd, getattr(fcntl, "F_NOCACHE", 48), 1)
            except OSError:
                os.close(self._fd)
                raise

    def writev(self, views: Sequence[memoryview], offset: int) -> int:
        return os.pwritev(self._fd, views, offset)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _WindowsFile:  # pragma: no cover - Windows only; tested where it runs
    """``CreateFileW`` with ``FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH`` when direct;
    ``WriteFile`` with an ``OVERLAPPED`` offset (a positioned write on a synchronous handle)."""

    GENERIC_READ = 0x80000000
    GENERIC_WRITE = 0x40000000
    FILE_SHARE_READ = 0x00000001
    CREATE_ALWAYS = 2
    FILE_ATTRIBUTE_NORMAL = 0x80
    FILE_FLAG_WRITE_THROUGH = 0x80000000
    FILE_FLAG_NO_BUFFERING = 0x20000000
    INVALID_HANDLE_VALUE = -1

    def __init__(self, path: Path, direct: bool) -> None:
        import ctypes
        from ctypes import wintypes

        class _Overlapped(ctypes.Structure):
            _fields_ = (
                ("Internal", ctypes.c_size_t),
                ("InternalHigh", ctypes.c_size_t),
                ("Offset", wintypes.DWORD),
                ("OffsetHigh", wintypes.DWORD),
                ("hEvent", wintypes.HANDLE),
            )

        self._ctypes = ctypes
        self._overlapped = _Overlapped
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        k32.CreateFileW.restype = wintypes.HANDLE
        k32.CreateFileW.argtypes = (
            wintypes.LPCWSTR,
            wintypes.DWORD,
            wintypes.DWORD,
            ctypes.c_void_p,
            wintypes.DWORD,
            wintypes.DWORD,
            wintypes.HANDLE,
        )
        k32.WriteFile.argtypes = (
            wintypes.HANDLE,
            ctypes.c_void_p,
            wintypes.DWORD,
            ctypes.POINTER(wintypes.DWORD),
            ctypes.c_void_p,
        )
        k32.WriteFile.restype = wintypes.BOOL
        k32.FlushFileBuffers.argtypes = (wintypes.HANDLE,)
        k32.CloseHandle.argtypes = (wintypes.HANDLE,)
        self._k32 = k32
        self.path = path
        self.direct = direct
        flags = self.FILE_ATTRIBUTE_NORMAL
        if direct:
            flags |= self.FILE_FLAG_NO_BUFFERING | self.FILE_FLAG_WRITE_THROUGH
        handle = k32.CreateFileW(
            str(path),
            self.GENERIC_READ | self.GENERIC_WRITE,
            self.FILE_SHARE_READ,
            None,
            self.CREATE_ALWAYS,
            flags,
            None,
        )
        if handle is None or handle == self.INVALID_HANDLE_VALUE:
            err = ctypes.get_last_error()  # type: ignore[attr-defined]
            raise OSError(err, ctypes.FormatError(err), str(path))  # type: ignore[attr-defined]
        self._handle = handle

    def _raise(self) -> None:
        err = self._ctypes.get_last_error()  # type: ignore[attr-defined]
        raise OSError(err, self._ctypes.FormatError(err), str(self.path))  # type: ignore[attr-defined]

    def writev(self, views: Sequence[memoryview], offset: int) -> int:
        from ctypes import wintypes

        done = 0
        for view in views:
            arr = np.frombuffer(view, dtype=np.uint8)
            ov = self._overlapped()
            pos = offset + done
            ov.Offset, ov.OffsetHigh = pos & 0xFFFFFFFF, pos >> 32
            written = wintypes.DWORD(0)
            ok = self._k32.WriteFile(
                self._handle,
                arr.ctypes.data,
                arr.nbytes,
                self._ctypes.byref(written),
                self._ctypes.byref(ov),
            )
            if not ok:
                self._raise()
            done += int(written.value)
            if written.value < arr.nbytes:
                break
        return done

    def sync(self) -> None:
        if not self._k32.FlushFileBuffers(self._handle):
            self._raise()

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            self._k32.CloseHandle(handle)


def open_file(path: Path, direct: bool) -> RawFile:
    """Create (truncate) ``path`` for positioned writes, past the OS cache when ``direct``."""
    if sys.platform == "win32":  # pragma: no cover
        return _WindowsFile(path, direct)
    return _PosixFile(path, direct)


def _writev_all(file: RawFile, views: list[memoryview], offset: int, stats: WriteStats) -> None:
    """Write every byte of ``views`` at ``offset`` (the kernel may write part of a call)."""
    while views:
        t = time.perf_counter()
        n = file.writev(views[:_IOV_MAX], offset)
        stats.add(n, time.perf_counter() - t)
        if n <= 0:
            raise OSError(errno.EIO, "the file system wrote nothing", str(file.path))
        offset += n
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


class AlignedWriter:
    """Writes runs of buffers at file offsets under the rules of direct I/O (module doc).

    ``write(pieces, offset)`` writes the pieces back to back from ``offset``. Direct: the
    offset is aligned, each piece is padded with zeros to a multiple of :data:`ALIGN`,
    and a piece not aligned in memory is copied into the staging ring first. Buffered:
    the pieces go as they are, unpadded.
    """

    def __init__(self, file: RawFile, stats: WriteStats | None = None) -> None:
        self.file = file
        self.direct = file.direct
        self.align = ALIGN if file.direct else 1
        self.stats = stats if stats is not None else WriteStats()
        self._slots: list[np.ndarray] = []
        self._slot_jobs: list[Future[None] | None] = [None, None]
        self._io: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def padded(self, nbytes: int) -> int:
        return round_up(nbytes, self.align)

    def write(self, pieces: Sequence[Any], offset: int) -> int:
        """Write ``pieces`` (buffers) from ``offset``; returns the offset after them."""
        views = [memoryview(p).cast("B") for p in pieces]
        if not self.direct:
            end = offset + sum(v.nbytes for v in views)
            _writev_all(self.file, views, offset, self.stats)
            return end
        if offset % ALIGN:
            raise ValueError(f"{self.file.path.name}: direct write at unaligned offset {offset}")
        jobs: list[Future[None]] = []
        try:
            end = self._write_direct(views, offset, jobs)
        finally:
            errors = []
            for job in jobs:
                try:
                    job.result()
                except OSError as exc:
                    errors.append(exc)
            self._slot_jobs = [None, None]
        if errors:
            raise errors[0]
        return end

    def _write_direct(self, views: list[memoryview], offset: int, jobs: list[Future[None]]) -> int:
        largest = max((self.padded(v.nbytes) for v in views), default=0)
        self._ensure_slots(largest)
        slot = 0
        fill = 0  # bytes used in the current slot
        job_views: list[memoryview] = []
        job_offset = offset
        pos = offset

        def submit() -> None:
            nonlocal job_views, job_offset
            if job_views:
                jobs.append(self._submit(job_views, job_offset, slot))
            job_views, job_offset = [], pos

        for view in views:
            n = self.padded(view.nbytes)
            if _is_aligned(view):
                if sum(v.nbytes for v in job_views) >= STAGING_SLOT_BYTES:
                    submit()
                job_views.append(view)
            else:
                if fill + n > self._slots[slot].nbytes:  # the slot is full: write it, use the other
                    submit()
                    slot = 1 - slot
                    fill = 0
                    previous = self._slot_jobs[slot]
                    if previous is not None:
                        previous.result()  # its bytes are written; the slot may be refilled
                dst = self._slots[slot][fill : fill + n]
                src = np.frombuffer(view, dtype=np.uint8)
                np.copyto(dst[: view.nbytes], src)
                if n > view.nbytes:
                    dst[view.nbytes :] = 0
                self.stats.copied_bytes += view.nbytes
                job_views.append(memoryview(dst))  # type: ignore[arg-type]
                fill += n
            pos += n
        submit()
        return pos

    def _ensure_slots(self, largest: int) -> None:
        size = max(STAGING_SLOT_BYTES, largest)
        if not self._slots or self._slots[0].nbytes < size:
            self._slots = [aligned_empty(size), aligned_empty(size)]

    def _submit(self, views: list[memoryview], offset: int, slot: int) -> Future[None]:
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="smartscope-direct-io")
        job = self._io.submit(_writev_all, self.file, list(views), offset, self.stats)
        self._slot_jobs[slot] = job
        return job

    def write_block(self, block: bytes | bytearray, offset: int) -> None:
        """Rewrite a small aligned region (a link pointer's block) from memory."""
        if not self.direct:
            _writev_all(self.file, [memoryview(block)], offset, self.stats)
            return
        self._ensure_slots(len(block))
        dst = self._slots[0][: self.padded(len(block))]
        dst[: len(block)] = np.frombuffer(block, dtype=np.uint8)
        dst[len(block) :] = 0
        _writev_all(self.file, [memoryview(dst)], offset, self.stats)  # type: ignore[list-item]

    def sync(self) -> None:
        self.file.sync()

    def close(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None
        self._slots = []
        self.file.close()


# ---------------------------------------------------------------- which mode a folder gets


def _file_system(path: Path) -> str:
    """The type of the file system holding ``path`` (Linux: /proc/self/mounts); '' if unknown."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    best, kind = "", ""
    target = str(path.resolve())
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


def direct_io_refusal(folder: Path) -> str | None:
    """Why ``folder`` cannot take direct writes (the OS's reason), or None if it can."""
    probe = folder / f".smartscope-direct-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        f = open_file(probe, direct=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        buf = aligned_empty(ALIGN)
        _writev_all(f, [memoryview(buf)], 0, WriteStats())  # type: ignore[list-item]
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        f.close()
        with contextlib.suppress(OSError):
            probe.unlink()
    return None


def resolve_io(folder: Path, requested: str) -> IoMode:
    """The I/O mode for files in ``folder``: ``direct`` or ``buffered`` as asked; ``auto``:
    direct where the file system takes it, else buffered with one log line. ``direct``
    where it is refused raises ``OSError`` naming the folder."""
    if requested == "buffered":
        return "buffered"
    if requested not in ("auto", "direct"):
        raise ValueError(f"storage.io: {requested!r} is not 'auto', 'direct' or 'buffered'")
    refusal = direct_io_refusal(folder)
    if requested == "direct":
        if refusal is not None:
            raise OSError(
                errno.EINVAL,
                f"storage.io is 'direct' but the file system refuses direct I/O ({refusal}); "
                "use 'auto' or 'buffered'",
                str(folder),
            )
        return "direct"
    if refusal is not None:
        log.warning("storage: %s refuses direct I/O (%s); writing through the page cache", folder, refusal)
        return "buffered"
    kind = _file_system(folder)
    if kind in _MEMORY_FILE_SYSTEMS:
        log.info("storage: %s is in memory (%s); no page cache to bypass, buffered writes", folder, kind)
        return "buffered"
    return "direct"
