"""Files written past the page cache: direct I/O, aligned memory, and the staging ring.

``open_file(path, direct=True)`` opens a file for positioned writes that skip the OS cache:
``O_DIRECT`` on Linux, ``F_NOCACHE`` on macOS, ``FILE_FLAG_NO_BUFFERING |
FILE_FLAG_WRITE_THROUGH`` on Windows (each as its platform documents it). Such writes
must start at a multiple of :data:`ALIGN` bytes in the file, be a multiple of it long and
come from memory aligned to it. :class:`AlignedWriter` keeps those rules for any buffer
without copying it: it places each buffer in the file at the same offset within a 4 KiB
block as the buffer has within its memory page, so the buffer's whole blocks go to the
kernel straight from where the camera's frame already is; only the partial blocks at its
two ends, the gaps and the small metadata are assembled in a preallocated aligned staging
ring, while a second thread issues the writes. With ``direct=False`` the same calls are
plain positioned writes through the page cache.

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

from smartscope.exceptions import InvalidValue

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
JOB_BYTES = 8 << 20  # a write is issued once this much is ready, so the disk starts early
_IOV_MAX = 1024
_MEMORY_FILE_SYSTEMS = {"tmpfs", "ramfs", "devtmpfs"}


def round_up(n: int, align: int) -> int:
    return -(-n // align) * align


def aligned_empty(nbytes: int) -> np.ndarray:
    """``nbytes`` of page-aligned memory as a uint8 array (an anonymous mapping)."""
    buf = mmap.mmap(-1, max(nbytes, 1))
    return np.frombuffer(buf, dtype=np.uint8, count=nbytes)


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


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data) if view.nbytes else 0


class AlignedWriter:
    """Writes buffers at chosen file offsets under the rules of direct I/O (module doc).

    :meth:`place` says where a buffer should go at or after a file position: buffered, right
    there; direct, at the first offset whose position within a 4 KiB block is the buffer's
    position within a memory page. Then the buffer's whole 4 KiB blocks are aligned in the
    file and in memory alike, and the kernel takes them straight from the buffer (a camera
    frame is never copied); only its partial first and last block, the gaps between
    buffers and small buffers are assembled in the staging ring. A page-aligned buffer
    lands at an aligned offset. :meth:`write` writes such a layout, the gaps as zeros.
    """

    def __init__(self, file: RawFile, stats: WriteStats | None = None) -> None:
        self.file = file
        self.direct = file.direct
        self.align = ALIGN if file.direct else 1
        self.stats = stats if stats is not None else WriteStats()
        self._slots: list[np.ndarray] = []
        self._slot_jobs: list[Future[None] | None] = [None, None]
        self._io: ThreadPoolExecutor | None = None

    def padded(self, nbytes: int) -> int:
        return round_up(nbytes, self.align)

    def place(self, position: int, buffer: Any) -> int:
        """The file offset at or after ``position`` where ``buffer`` should be written."""
        if not self.direct:
            return position
        return position + (_address(memoryview(buffer).cast("B")) - position) % ALIGN

    def write(self, pieces: Sequence[tuple[int, Any]], start: int, end: int) -> None:
        """Write ``(offset, buffer)`` pieces (in order, not overlapping) and fill the rest of
        ``[start, end)`` with zeros. Buffered, the pieces must be back to back from ``start``."""
        placed = [(off, memoryview(buf).cast("B")) for off, buf in pieces]
        if not self.direct:
            pos = start
            for off, view in placed:
                if off != pos:
                    raise ValueError(f"{self.file.path.name}: buffered pieces must be contiguous")
                pos += view.nbytes
            _writev_all(self.file, [v for _, v in placed], start, self.stats)
            return
        if start % ALIGN or end % ALIGN:
            raise ValueError(f"{self.file.path.name}: direct write of [{start}, {end}) is not aligned")
        jobs: list[Future[None]] = []
        try:
            self._write_direct(placed, start, end, jobs)
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

    def _spans(
        self, placed: list[tuple[int, memoryview]], start: int, end: int
    ) -> list[tuple[int, int, Any]]:
        """[start, end) cut into spans ``(lo, hi, view)``: a view's aligned middle, or None
        for a span to assemble in the staging ring."""
        spans: list[tuple[int, int, Any]] = []
        cursor = start
        for off, view in placed:
            lo, hi = round_up(off, ALIGN), (off + view.nbytes) // ALIGN * ALIGN
            if hi - lo >= ALIGN and (_address(view) - off) % ALIGN == 0:
                if lo > cursor:
                    spans.append((cursor, lo, None))
                spans.append((lo, hi, view[lo - off : hi - off]))
                cursor = hi
        if end > cursor:
            spans.append((cursor, end, None))
        return spans

    def _write_direct(
        self, placed: list[tuple[int, memoryview]], start: int, end: int, jobs: list[Future[None]]
    ) -> None:
        spans = self._spans(placed, start, end)
        self._ensure_slots(max((hi - lo for lo, hi, v in spans if v is None), default=0))
        slot, fill, first = 0, 0, 0  # staging slot in use, bytes used in it, first piece not yet past
        job_views: list[memoryview] = []
        job_offset = start

        def submit(next_offset: int) -> None:
            nonlocal job_views, job_offset
            if job_views:
                jobs.append(self._submit(job_views, job_offset, slot))
            job_views, job_offset = [], next_offset

        for lo, hi, view in spans:
            if sum(v.nbytes for v in job_views) >= JOB_BYTES:
                submit(lo)
            if view is not None:
                job_views.append(view)
                continue
            n = hi - lo
            if fill + n > self._slots[slot].nbytes:  # the slot is full: write it, use the other
                submit(lo)
                slot, fill = 1 - slot, 0
                previous = self._slot_jobs[slot]
                if previous is not None:
                    previous.result()  # its bytes are written; the slot may be refilled
            dst = self._slots[slot][fill : fill + n]
            dst[:] = 0
            while first < len(placed) and placed[first][0] + placed[first][1].nbytes <= lo:
                first += 1
            for off, src in placed[first:]:  # the parts of pieces inside [lo, hi)
                if off >= hi:
                    break
                a, b = max(lo, off), min(hi, off + src.nbytes)
                if a < b:
                    np.copyto(dst[a - lo : b - lo], np.frombuffer(src[a - off : b - off], dtype=np.uint8))
                    self.stats.copied_bytes += b - a
            job_views.append(dst.data)
            fill += n
        submit(end)

    def _ensure_slots(self, largest: int) -> None:
        size = max(STAGING_SLOT_BYTES, round_up(largest, ALIGN))
        if not self._slots or self._slots[0].nbytes < size:
            self._slots = [aligned_empty(size), aligned_empty(size)]

    def _submit(self, views: list[memoryview], offset: int, slot: int) -> Future[None]:
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="smartscope-direct-io")
        job = self._io.submit(_writev_all, self.file, list(views), offset, self.stats)
        self._slot_jobs[slot] = job
        return job

    def write_block(self, block: bytes | bytearray, offset: int) -> None:
        """Rewrite a small region (a link pointer, or its aligned block) from memory."""
        if not self.direct:
            _writev_all(self.file, [memoryview(block)], offset, self.stats)
            return
        self.write([(offset, block)], offset, offset + self.padded(len(block)))

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
        _writev_all(f, [buf.data], 0, WriteStats())
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
        raise InvalidValue(f"storage.io: {requested!r} is not 'auto', 'direct' or 'buffered'")
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
