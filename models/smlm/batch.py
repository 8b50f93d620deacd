"""``smartscope localize`` over recorded stacks: frame ranges localized anywhere, merged in order.

:func:`localize_range` is the one function that turns frames into localizations, in this
process (a whole stack) and on Dask workers (one chunk each). It reads the frames page by
page, so memory holds one frame (three for the network) plus the localizations.

Invariants:

* a chunk's table holds the rows of its own frames only, each computed exactly as a
  single pass over the whole stack would: the network, which sees (t−1, t, t+1), reads
  one frame of context on each side of the chunk and its rows outside are dropped;
* frame numbers are the stack's own (0-based over all its frames), in every chunk;
* a stack's parts are concatenated in frame order, so the merged table equals the
  single-process table row for row; drift is estimated (and, if asked, corrected) after
  the merge, from the whole table, and the render made from that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from smartscope.batch.jobs import Chunk, PartStore, atomic_path, cached_reader, process_cached
from smartscope.batch.stacks import Stack, StackReader, safe_name
from smartscope.config.stages import SMLMStageConfig
from smartscope.exceptions import SmartscopeError
from smartscope.frame import Frame
from smartscope.models.smlm.stage import PicassoInfo, SMLMStage, write_outputs
from smartscope.models.smlm.table import LocTable

__all__ = [
    "FrameError",
    "LocalizeJob",
    "load_part",
    "localize_range",
    "open_stage",
    "output_folders",
    "save_part",
]

PART_SUFFIX = ".locs.npz"
_BLOCK_FRAMES = 512


class FrameError(SmartscopeError, RuntimeError):
    """A frame that could not be read or localized (names the frame)."""


def localize_range(
    stage: SMLMStage,
    reader: StackReader,
    start: int,
    stop: int,
    on_frame: Callable[[int], None] | None = None,
) -> LocTable:
    """Localizations of frames ``start <= i < stop`` of ``reader``'s stack (one channel)."""
    n = reader.stack.n_frames
    context = stage.engine is not None  # the network needs the neighbouring frames
    lo = max(0, start - 1) if context else start
    hi = min(n, stop + 1) if context else stop
    stage.reset()
    tabs: list[LocTable] = []  # this block's per-frame tables
    blocks: list[LocTable] = []  # earlier blocks, one table each (few objects per 1000s of frames)
    for i in range(lo, hi):
        try:
            img = reader.frame(i, [0])[0]
            tab = stage.localize(Frame(index=i, image=img, camera_time_s=0.0))
        except Exception as exc:
            raise FrameError(f"frame {i}: {type(exc).__name__}: {exc}") from exc
        if tab is not None:
            tabs.append(tab)
        if len(tabs) >= _BLOCK_FRAMES:
            blocks.append(LocTable.concat(tabs))
            tabs = []
        if on_frame is not None and start <= i < stop:
            on_frame(1)
    if hi == n:
        last = stage.flush()  # the network's last frame, which has no successor
        if last is not None:
            tabs.append(last)
    stage.reset()
    merged = LocTable.concat([*blocks, *tabs])
    return merged.select((merged.frame >= start) & (merged.frame < stop))


def save_part(path: Path, tab: LocTable) -> None:
    """A chunk's table as a plain .npz (no pickle), written atomically."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **{f.name: getattr(tab, f.name) for f in fields(tab)})


def load_part(path: Path, chunk: Chunk) -> LocTable:
    with np.load(path, allow_pickle=False) as npz:
        tab = LocTable(**{f.name: npz[f.name] for f in fields(LocTable)})
    if len(tab) and (tab.frame.min() < chunk.start or tab.frame.max() >= chunk.stop):
        raise RuntimeError(f"{path}: rows outside frames {chunk.start}..{chunk.stop - 1}")
    return tab


def open_stage(config: SMLMStageConfig) -> SMLMStage:
    """This thread's stage for ``config``: built (engine opened) once per worker thread."""
    sha = ""
    if config.bundle is not None:
        from smartscope.engines.bundle import load_bundle

        bundle = config.bundle
        sha = process_cached(("bundle-sha", str(bundle.resolve())), lambda: load_bundle(bundle).onnx_sha256)
    key = ("smlm-stage", config.model_dump_json(exclude={"bundle"}), sha, threading.get_ident())
    return process_cached(key, lambda: SMLMStage(config))


@dataclass(frozen=True)
class LocalizeJob:
    """Localize stacks (one stage config each); outputs in ``folders[i]``."""

    stacks: tuple[Stack, ...]
    configs: tuple[SMLMStageConfig, ...]
    folders: tuple[Path, ...]
    parts: PartStore
    cpu_threads: int = 0
    drift_correct: bool = False
    part_suffixes: tuple[str, ...] = (PART_SUFFIX,)

    def _prepare_process(self) -> None:
        if self.cpu_threads:
            from smartscope.engines.backends import set_cpu_threads

            set_cpu_threads(self.cpu_threads)

    def _extent_nm(self, i: int) -> tuple[float, float]:
        s, px_nm = self.stacks[i], self.configs[i].pixel_size_um * 1000.0
        return s.height * px_nm, s.width * px_nm

    def run_chunk(self, chunk: Chunk) -> None:
        self._prepare_process()
        stack = self.stacks[chunk.stack]
        stage = open_stage(self.configs[chunk.stack])
        tab = localize_range(stage, cached_reader(stack), chunk.start, chunk.stop)
        save_part(self.parts.path(stack, chunk, PART_SUFFIX), tab)

    def _write(self, stack: int, tab: LocTable) -> str:
        folder = self.folders[stack]
        cfg = self.configs[stack]
        s = self.stacks[stack]
        picasso = PicassoInfo(
            pixel_nm=cfg.pixel_size_um * 1000.0,
            width_px=s.width,
            height_px=s.height,
            n_frames=s.n_frames,
            info={"smartscope method": cfg.method, "PSF sigma (nm)": cfg.psf_sigma_nm},
        )
        paths = write_outputs(
            folder,
            tab,
            self._extent_nm(stack),
            cfg.render_pixel_nm,
            drift_correct=self.drift_correct,
            picasso=picasso,
        )
        drift = ""
        if self.drift_correct:
            drift = ", drift-corrected" if "drift" in paths else ", too few to estimate drift"
        z = " with z" if tab.has_z else ""
        return f"{len(tab)} localizations{z} from {s.n_frames} frames of {s.path}{drift} -> {folder}"

    def merge(self, stack: int, chunks: Sequence[Chunk]) -> str:
        s = self.stacks[stack]
        return self._write(
            stack, LocTable.concat(load_part(self.parts.path(s, c, PART_SUFFIX), c) for c in chunks)
        )

    def run_whole(self, stack: int, on_frame: Callable[[int], None]) -> str:
        self._prepare_process()
        s = self.stacks[stack]
        stage = open_stage(self.configs[stack])
        with StackReader(s) as reader:
            tab = localize_range(stage, reader, 0, s.n_frames, on_frame)
        return self._write(stack, tab)


def output_folders(stacks: Sequence[Stack], out: Path) -> tuple[Path, ...]:
    """One stack: its files go in ``out``; several: ``out/<stack name>/``."""
    if len(stacks) == 1:
        return (out,)
    return tuple(out / safe_name(s.name) for s in stacks)
