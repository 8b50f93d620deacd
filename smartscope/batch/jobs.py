"""Frame chunks: planned, run on a Dask cluster, written as parts, retried, reported.

A job (``localize``, ``apply``) is a picklable object whose ``run_chunk(chunk)`` computes
one frame range of one stack and writes the result to that chunk's part file; after every
chunk of a stack is done the job merges the parts in frame order.

Invariants:

* the chunks of a stack tile its frames exactly once (:func:`plan_chunks`);
* a part file appears only complete (written under a temporary name, then renamed), and a
  chunk computed twice (a worker died and the scheduler ran it again elsewhere) writes the
  same file again, so a merge never holds a frame twice nor misses one;
* a chunk that raises (bad data) becomes a :class:`ChunkFailed` naming the file and the
  frame range; the other chunks go on. A worker that dies is not a failure: the scheduler
  reruns its chunks on the others (up to ``distributed.scheduler.allowed-failures`` times);
* parts of a run that stopped part-way are reused by the same command run again (the
  job's fingerprint must match, else they are discarded);
* a worker process builds each engine once (:func:`process_cached`) and keeps it for
  every chunk it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from smartscope.batch.stacks import Stack, StackReader, safe_name
from smartscope.exceptions import InvalidValue

__all__ = [
    "Chunk",
    "ChunkDone",
    "ChunkFailed",
    "ChunkJob",
    "ChunkOutcome",
    "JobReport",
    "PartStore",
    "cached_reader",
    "check_tiling",
    "execute",
    "plan_chunks",
    "process_builds",
    "process_cached",
    "run_chunk",
]

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Chunk:
    """Frames ``start <= i < stop`` of stack number ``stack`` of a job."""

    stack: int
    start: int
    stop: int

    @property
    def n_frames(self) -> int:
        return self.stop - self.start

    @property
    def key(self) -> str:
        return f"{self.stack:05d}-{self.start:010d}-{self.stop:010d}"


@dataclass(frozen=True)
class ChunkDone:
    chunk: Chunk
    seconds: float
    worker: str


@dataclass(frozen=True)
class ChunkFailed:
    chunk: Chunk
    file: str
    reason: str

    def describe(self) -> str:
        return f"{self.file} frames {self.chunk.start}-{self.chunk.stop - 1}: {self.reason}"


ChunkOutcome = ChunkDone | ChunkFailed


class ChunkJob(Protocol):
    """A job over stacks (pickled to the workers).

    ``run_chunk`` computes one chunk into its part files (``parts.path(stack, chunk, s)``
    for each ``s`` in ``part_suffixes``); ``merge`` turns a stack's parts, in frame order,
    into its outputs; ``run_whole`` computes a stack in this process straight into its
    outputs (no parts), calling ``on_frame(1)`` per frame. Both return a one-line summary
    of what they wrote. Each raises on bad data.
    """

    @property
    def stacks(self) -> Sequence[Stack]: ...

    @property
    def parts(self) -> PartStore: ...

    @property
    def part_suffixes(self) -> tuple[str, ...]: ...

    def run_chunk(self, chunk: Chunk) -> None: ...

    def merge(self, stack: int, chunks: Sequence[Chunk]) -> str: ...

    def run_whole(self, stack: int, on_frame: Callable[[int], None]) -> str: ...


def plan_chunks(stacks: Sequence[Stack], chunk_frames: int) -> list[Chunk]:
    """Every stack cut into ranges of ``chunk_frames`` frames (the last may be shorter)."""
    if chunk_frames < 1:
        raise InvalidValue(f"chunk_frames must be >= 1, got {chunk_frames}")
    return [
        Chunk(i, start, min(start + chunk_frames, s.n_frames))
        for i, s in enumerate(stacks)
        for start in range(0, s.n_frames, chunk_frames)
    ]


def check_tiling(chunks: Sequence[Chunk], n_frames: int) -> None:
    """Raise unless ``chunks`` (sorted) cover frames ``0..n_frames-1`` exactly once."""
    at = 0
    for c in sorted(chunks):
        if c.start != at or c.stop <= c.start:
            raise RuntimeError(f"chunks do not tile the stack: expected one starting at {at}, got {c}")
        at = c.stop
    if at != n_frames:
        raise RuntimeError(f"chunks end at frame {at}, the stack has {n_frames}")


def _worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_MALLOC_TUNED = False


def _restore_malloc_thresholds() -> None:
    """Undo the cost of the Dask nanny's ``MALLOC_TRIM_THRESHOLD_`` in this worker process.

    Setting it (the nanny does, to return memory to the OS) switches off glibc's dynamic
    mmap threshold, so every temporary array over 128 KiB is a fresh mmap, page-faulted in
    and unmapped again: the classical localizer on 200 frames of 256² took 4.3 s CPU with it,
    3.0 s without (and 3.0 s with it and these thresholds restored).
    Here the thresholds are set to glibc's own dynamic maxima (32 MiB mmap, 64 MiB trim).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass


def run_chunk(job: ChunkJob, chunk: Chunk) -> ChunkOutcome:
    """Run one chunk where this is called (a Dask worker); bad data becomes ChunkFailed."""
    _restore_malloc_thresholds()
    t0 = time.perf_counter()
    try:
        job.run_chunk(chunk)
    except Exception as exc:  # a chunk's failure must not stop the others
        return ChunkFailed(chunk, str(job.stacks[chunk.stack].path), f"{type(exc).__name__}: {exc}")
    return ChunkDone(chunk, time.perf_counter() - t0, _worker_label())


def merge_stack(job: ChunkJob, stack: int, chunks: Sequence[Chunk]) -> str:
    """Merge one stack's parts into its outputs, then delete the parts (runs on a worker)."""
    _restore_malloc_thresholds()
    check_tiling(chunks, job.stacks[stack].n_frames)
    summary = job.merge(stack, sorted(chunks))
    job.parts.remove_stack(job.stacks[stack])
    return summary


@dataclass
class JobReport:
    """What became of a job: failed chunks (bad data), stacks written (index -> summary),
    chunks an earlier run had already done."""

    failures: list[ChunkFailed]
    written: dict[int, str]
    resumed_chunks: int = 0
    outcomes: list[ChunkOutcome] | None = None


def execute(
    job: ChunkJob,
    *,
    client: Any = None,
    chunk_frames: int = 64,
    resources: dict[str, float] | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_outcome: Callable[[ChunkOutcome], None] | None = None,
) -> JobReport:
    """Run ``job`` over all its stacks: in this process (``client`` None) or on Dask.

    In this process each stack is computed whole, straight into its outputs. On Dask the
    stacks are cut into chunks; a stack's merge is submitted as soon as its last chunk is
    done; stacks with a failed chunk keep their parts (the same command resumes them).
    """
    tick = on_frames or (lambda n: None)
    if client is None:
        failures: list[ChunkFailed] = []
        written: dict[int, str] = {}
        for i, s in enumerate(job.stacks):
            try:
                written[i] = job.run_whole(i, tick)
            except Exception as exc:  # bad data in one stack must not stop the others
                failures.append(
                    ChunkFailed(Chunk(i, 0, s.n_frames), str(s.path), f"{type(exc).__name__}: {exc}")
                )
        return JobReport(failures, written)
    return _execute_dask(job, client, chunk_frames, resources, tick, on_outcome)


def _execute_dask(
    job: ChunkJob,
    client: Any,
    chunk_frames: int,
    resources: dict[str, float] | None,
    tick: Callable[[int], None],
    on_outcome: Callable[[ChunkOutcome], None] | None,
) -> JobReport:
    from distributed import as_completed

    job.parts.prepare()
    chunks = plan_chunks(job.stacks, chunk_frames)
    by_stack: dict[int, list[Chunk]] = {}
    for c in chunks:
        by_stack.setdefault(c.stack, []).append(c)
    todo = [c for c in chunks if not job.parts.has(job.stacks[c.stack], c, job.part_suffixes)]
    resumed = len(chunks) - len(todo)
    tick(sum(c.n_frames for c in chunks) - sum(c.n_frames for c in todo))
    left = Counter(c.stack for c in todo)
    run_id = uuid.uuid4().hex[:8]
    job_future = client.scatter(job, broadcast=True, hash=False)
    futures: dict[Any, Chunk | int] = {}
    for c in todo:
        fut = client.submit(
            run_chunk,
            job_future,
            c,
            key=f"smartscope-chunk-{run_id}-{c.key}",
            resources=resources,
            pure=False,
        )
        futures[fut] = c
    pending = as_completed(list(futures))

    def submit_merge(stack: int) -> None:
        fut = client.submit(
            merge_stack,
            job_future,
            stack,
            by_stack[stack],
            key=f"smartscope-merge-{run_id}-{stack}",
            pure=False,
        )
        futures[fut] = stack
        pending.add(fut)

    for i in by_stack:
        if left[i] == 0:  # every chunk of it done in an earlier run
            submit_merge(i)
    failures: list[ChunkFailed] = []
    failed_stacks: set[int] = set()
    written: dict[int, str] = {}
    outcomes: list[ChunkOutcome] = []
    for fut in pending:
        what = futures.pop(fut)
        if isinstance(what, int):  # a merge
            written[what] = fut.result()  # a merge that fails is a bug or a full disk: raise
            fut.release()
            continue
        try:
            out: ChunkOutcome = fut.result()
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            if type(exc).__name__ == "KilledWorker":
                why = f"the workers running it died repeatedly ({exc})"
            out = ChunkFailed(what, str(job.stacks[what.stack].path), why)
        fut.release()
        outcomes.append(out)
        if on_outcome is not None:
            on_outcome(out)
        if isinstance(out, ChunkFailed):
            failures.append(out)
            failed_stacks.add(what.stack)
        else:
            tick(what.n_frames)
        left[what.stack] -= 1
        if left[what.stack] == 0 and what.stack not in failed_stacks:
            submit_merge(what.stack)
    if not failures:
        job.parts.remove_all()
    return JobReport(failures, dict(sorted(written.items())), resumed, outcomes)


# ----------------------------------------------------------------------- per-process cache

_CACHE: dict[Hashable, Any] = {}
_BUILDS: Counter[str] = Counter()


def process_cached(key: Hashable, build: Callable[[], T]) -> T:
    """The object ``build()`` made for ``key`` in this process, built on first use only.

    Workers keep their engines this way across chunks (keyed by the bundle's sha256 and
    the backend): an engine is opened once per worker process, not once per chunk.
    """
    if key not in _CACHE:
        _CACHE[key] = build()
        _BUILDS[repr(key)] += 1
    return _CACHE[key]


def process_builds() -> dict[str, int]:
    """How many times each cached object was built in this process (1 each, normally)."""
    return dict(_BUILDS)


_READERS: OrderedDict[tuple[str, int, int], StackReader] = OrderedDict()
_MAX_READERS = 4


def cached_reader(stack: Stack) -> StackReader:
    """An open reader of ``stack`` for this thread, kept for its next chunks.

    Opening a long OME-TIFF parses its whole OME-XML (about 1 s per 20 000 planes), so a
    worker opens each stack once, not once per chunk; the least recently used of more
    than four open stacks is closed.
    """
    p = Path(stack.path)
    key = (str(p.resolve()), p.stat().st_mtime_ns, threading.get_ident())
    reader = _READERS.pop(key, None)
    if reader is None or reader.stack != stack:
        if reader is not None:
            reader.close()
        reader = StackReader(stack)
    _READERS[key] = reader
    while len(_READERS) > _MAX_READERS:
        _READERS.popitem(last=False)[1].close()
    return reader


# ----------------------------------------------------------------------- part files


class PartStore:
    """``<out>/.parts/``: one folder per stack, one file (or a few) per chunk.

    ``job.json`` holds the job's fingerprint; parts of a different job are discarded.
    """

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.root = Path(out) / ".parts"
        self.fingerprint = fingerprint

    def prepare(self) -> None:
        """Create the folder; drop parts another job (other inputs, options or bundle) left."""
        doc = self.root / "job.json"
        want = json.dumps(self.fingerprint, sort_keys=True, default=str)
        if doc.is_file() and doc.read_text(encoding="utf-8") != want:
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        doc.write_text(want, encoding="utf-8")

    def path(self, stack: Stack, chunk: Chunk, suffix: str) -> Path:
        return self.root / safe_name(stack.name) / f"{chunk.start:010d}-{chunk.stop:010d}{suffix}"

    def has(self, stack: Stack, chunk: Chunk, suffixes: Sequence[str]) -> bool:
        return all(self.path(stack, chunk, s).is_file() for s in suffixes)

    def remove_stack(self, stack: Stack) -> None:
        shutil.rmtree(self.root / safe_name(stack.name), ignore_errors=True)

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path next to ``final``; renamed to ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def stack_fingerprint(stack: Stack) -> dict[str, Any]:
    """Identity of an input file for the job fingerprint (path, size, modification time)."""
    p = Path(stack.path)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "name": stack.name}
