"""Any engine bundle over recorded stacks (``smartscope apply``, :mod:`smartscope.batch.cli`).

Each frame (the channels the engine takes, picked by name when the file names them; see
:func:`select_channels`) runs through the engine runtime: normalization, tiles blended
with ramps, any backend. Every
output tensor of the engine becomes ``OUT/<stack>.<output>.ome.tif``: float32, axes =
the input's frame axes (T and/or Z; anything else counts as T) + C + YX, channels named
after the engine's output channels, and the input's physical pixel size.

Invariants:

* memory stays constant: frames are read one at a time and outputs are streamed to disk
  page by page (a writer thread per output behind a bounded queue); a chunk's part is a
  ``.npy`` filled through a memory map;
* an output file appears only complete (written under a temporary name, then renamed);
* on a cluster every worker opens the engine once (keyed by the bundle's sha256, backend
  and device) and keeps it for all its chunks; the merged file holds the same pages, in
  the same order, as a run in one process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.batch.jobs import Chunk, PartStore, atomic_path, cached_reader, process_cached
from smartscope.batch.stacks import Stack, StackError, StackReader, safe_name

__all__ = [
    "ApplyJob",
    "OmeTiffSink",
    "open_engine",
    "output_layout",
    "read_input",
    "select_channels",
]

_END = object()


ZERO, ONE = -1, -2  # engine channels not read from the file: all zeros, all ones


def select_channels(
    stack: Stack, want: Sequence[str], engine: str, use: Sequence[str] | None = None
) -> tuple[int, ...]:
    """Where each engine input channel comes from: a channel of ``stack``, or ZERO / ONE.

    By name when the file names its channels; else all the stack's channels when their
    number matches; else the stack's one channel as the engine's first. An engine channel
    that has a ``mask:<name>`` partner is optional: absent, it is zero and its mask zero;
    present, its mask is one (the convention of channel-completion engines). ``use``
    limits the file channels considered (by name). Anything else raises
    :class:`StackError` naming both sides.
    """
    names = list(stack.channels)
    optional = {w for w in want if f"mask:{w}" in want}
    if use is not None:
        missing = [u for u in use if u not in names]
        if missing:
            raise StackError(f"{stack.path}: --channels {missing} not among its channels {names}")

    def plan(have: dict[str, int]) -> tuple[int, ...] | None:
        out = []
        for w in want:
            if w in have:
                out.append(have[w])
            elif w.startswith("mask:") and w[5:] in optional:
                out.append(ONE if w[5:] in have else ZERO)
            elif w in optional:
                out.append(ZERO)
            else:
                return None
        return tuple(out)

    found = None
    if all(names):
        found = plan({n: i for i, n in enumerate(names) if use is None or n in use})
    if found is None and stack.n_channels == len(want):
        found = tuple(range(len(want)))
    if found is None and stack.n_channels == 1:
        found = plan({want[0]: 0})
    if found is None:
        shown = names if all(names) else f"{stack.n_channels} unnamed"
        raise StackError(
            f"{stack.path}: has channels {shown}; engine {engine!r} takes {list(want)} "
            "(by name, the same number of channels, or one channel for the first)"
        )
    return found


def read_input(reader: StackReader, i: int, plan: tuple[int, ...]) -> np.ndarray:
    """Frame ``i`` assembled as the engine's input ``(C_in, Y, X)`` following ``plan``."""
    if all(c >= 0 for c in plan):
        return reader.frame(i, plan)
    s = reader.stack
    read = [c for c in plan if c >= 0]
    got = dict(zip(read, reader.frame(i, read), strict=True)) if read else {}
    x = np.zeros((len(plan), s.height, s.width), np.float32)
    for k, c in enumerate(plan):
        x[k] = got[c] if c >= 0 else (1.0 if c == ONE else 0.0)
    return x


def output_layout(stack: Stack) -> tuple[str, tuple[int, ...]]:
    """Frame axes and sizes of the outputs: the input's T/Z axes, else one T axis."""
    fa = stack.frame_axes
    if len(set(fa)) == len(fa) and set(fa) <= set("TZ"):
        return fa, stack.frame_shape
    return "T", (stack.n_frames,)


class OmeTiffSink:
    """One float32 OME-TIFF written page by page on its own thread (bounded queue).

    ``put`` takes one frame ``(C, Y, X)``; ``close`` finishes the file and renames it into
    place; ``abort`` drops it. The file's pages are the frames in the order given.
    """

    def __init__(
        self,
        path: Path,
        frame_axes: str,
        frame_shape: tuple[int, ...],
        channels: Sequence[str],
        height: int,
        width: int,
        pixel_size_um: tuple[float, float] | None,
        name: str,
    ) -> None:
        self.path = path
        self._shape = (*frame_shape, len(channels), height, width)
        self._meta: dict[str, Any] = {
            "axes": f"{frame_axes}CYX",
            "Name": name,
            "Channel": {"Name": list(channels)},
        }
        if pixel_size_um is not None:
            self._meta.update(
                PhysicalSizeY=pixel_size_um[0],
                PhysicalSizeYUnit="µm",
                PhysicalSizeX=pixel_size_um[1],
                PhysicalSizeXUnit="µm",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name=f"ome-tiff {path.name}", daemon=True)
        self._thread.start()

    def _pages(self) -> Iterator[np.ndarray]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item

    def _write(self) -> None:
        import tifffile

        try:
            with tifffile.TiffWriter(self._tmp, bigtiff=True, ome=True) as tw:
                tw.write(
                    self._pages(),
                    shape=self._shape,
                    dtype="float32",
                    photometric="minisblack",
                    metadata=self._meta,
                )
        except BaseException as exc:
            self._error = exc
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting on a full queue
                while True:
                    self._queue.get_nowait()

    def _send(self, item: Any) -> None:
        while True:
            if self._error is not None:
                raise RuntimeError(f"{self.path}: writing failed ({self._error})") from self._error
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise RuntimeError(f"{self.path}: the writer stopped") from self._error

    def put(self, frame: np.ndarray) -> None:
        for plane in np.asarray(frame, dtype=np.float32):
            self._send(np.ascontiguousarray(plane))

    def close(self) -> None:
        self._send(_END)
        self._thread.join()
        if self._error is not None:
            self.abort()
            raise RuntimeError(f"{self.path}: writing failed ({self._error})") from self._error
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_END)
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


def open_engine(bundle: Path, sha256: str, backend: str, device: str | None) -> Any:
    """This process's engine for the bundle: opened on first use, then kept."""
    from smartscope.engines.runtime import Engine

    def build() -> Engine:
        eng = Engine.open(bundle, backend, device=device)  # type: ignore[arg-type]
        if eng.bundle.onnx_sha256 != sha256:
            raise RuntimeError(
                f"{bundle}: changed since the job started (sha256 {eng.bundle.onnx_sha256[:12]})"
            )
        return eng

    return process_cached(("engine", sha256, backend, device, threading.get_ident()), build)


@dataclass(frozen=True)
class ApplyJob:
    """Run one engine over stacks; outputs ``out/<stack>.<output>.ome.tif``."""

    bundle: Path
    sha256: str
    backend: str
    device: str | None
    stacks: tuple[Stack, ...]
    channels: tuple[tuple[int, ...], ...]  # per stack: select_channels()
    outputs: tuple[tuple[str, tuple[str, ...]], ...]  # (output tensor, its channel names)
    out: Path
    parts: PartStore
    cpu_threads: int = 0

    @property
    def part_suffixes(self) -> tuple[str, ...]:
        return tuple(f".{name}.npy" for name, _ in self.outputs)

    def output_path(self, stack: int, output: str) -> Path:
        return self.out / f"{safe_name(self.stacks[stack].name)}.{safe_name(output)}.ome.tif"

    def engine(self) -> Any:
        """This process's engine (opened once, with this job's share of the CPU threads)."""
        if self.cpu_threads:
            from smartscope.engines.backends import set_cpu_threads

            set_cpu_threads(self.cpu_threads)
        return open_engine(self.bundle, self.sha256, self.backend, self.device)

    def _frames(
        self, reader: StackReader, stack: int, start: int, stop: int
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        engine = self.engine()
        for i in range(start, stop):
            try:
                outs = engine.infer(read_input(reader, i, self.channels[stack]))
            except Exception as exc:
                raise RuntimeError(f"frame {i}: {type(exc).__name__}: {exc}") from exc
            yield i, outs

    def _sinks(self, stack: int) -> dict[str, OmeTiffSink]:
        s = self.stacks[stack]
        axes, shape = output_layout(s)
        return {
            name: OmeTiffSink(
                self.output_path(stack, name),
                axes,
                shape,
                chans,
                s.height,
                s.width,
                s.pixel_size_um,
                f"{s.name} {name}",
            )
            for name, chans in self.outputs
        }

    def _summary(self, stack: int) -> str:
        s = self.stacks[stack]
        files = ", ".join(self.output_path(stack, n).name for n, _ in self.outputs)
        return f"{s.n_frames} frames of {s.path} -> {self.out}/{{{files}}}"

    def run_chunk(self, chunk: Chunk) -> None:
        s = self.stacks[chunk.stack]
        reader = cached_reader(s)
        with contextlib.ExitStack() as stack:
            arrays: dict[str, Any] = {}
            for name, chans in self.outputs:
                tmp = stack.enter_context(atomic_path(self.parts.path(s, chunk, f".{name}.npy")))
                arrays[name] = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float32, shape=(chunk.n_frames, len(chans), s.height, s.width)
                )
            for i, outs in self._frames(reader, chunk.stack, chunk.start, chunk.stop):
                for name, arr in arrays.items():
                    arr[i - chunk.start] = outs[name]
            for name in list(arrays):
                arrays.pop(name).flush()  # the memory maps close before the files are renamed

    def merge(self, stack: int, chunks: Sequence[Chunk]) -> str:
        s = self.stacks[stack]
        sinks = self._sinks(stack)
        try:
            for name, sink in sinks.items():
                for c in chunks:
                    part = np.load(self.parts.path(s, c, f".{name}.npy"), mmap_mode="r")
                    if part.shape[0] != c.n_frames:
                        raise RuntimeError(
                            f"part of frames {c.start}..{c.stop - 1} holds {part.shape[0]} frames"
                        )
                    for frame in part:
                        sink.put(frame)
                    del part
                sink.close()
        except BaseException:
            for sink in sinks.values():
                sink.abort()
            raise
        return self._summary(stack)

    def run_whole(self, stack: int, on_frame: Callable[[int], None]) -> str:
        s = self.stacks[stack]
        sinks = self._sinks(stack)
        try:
            with StackReader(s) as reader:
                for _i, outs in self._frames(reader, stack, 0, s.n_frames):
                    for name, sink in sinks.items():
                        sink.put(outs[name])
                    on_frame(1)
            for sink in sinks.values():
                sink.close()
        except BaseException:
            for sink in sinks.values():
                sink.abort()
            raise
        return self._summary(stack)
