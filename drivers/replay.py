"""Replay: a recorded acquisition played back as if live, through the same loop and pipeline.

The source is a run folder (every raw file it holds, OME-TIFF or OME-Zarr, in acquisition
order), one OME-TIFF/TIFF stack, or one OME-Zarr image. Frames are read one at a time
(memory stays one frame) and keep their dimensions: the MDA indices (t, p, c, z), the
series (position) and the channel each frame had — from the run's ``frames.jsonl`` when it
is there, else from the file's own OME metadata. They are paced at the recorded rate (the
camera times in ``frames.jsonl``, else the OME ``DeltaT``) or at a chosen ``fps``. A file
without ``frames.jsonl`` keeps what its own metadata records: the pixel size (OME
``PhysicalSizeX``, OME-Zarr scale) and the channel names.
Recorded data cannot obey actions: every action is accepted, logged as not applicable, and
has no effect; ``state()`` reports the recorded settings.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from smartscope.actions import Action
from smartscope.drivers.base import ApplyResult, DriverError
from smartscope.frame import Frame, now_s
from smartscope.safety import Devices
from smartscope.state import DriverState

__all__ = ["ReplayDriver"]


@dataclass(slots=True)
class _Page:
    """One recorded frame: how to read it, and what it was."""

    read: Callable[[], np.ndarray]
    time_s: float | None = None
    channel: str = ""
    series: str = ""
    axes: dict[str, int] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash ends the usable record
    return out


def _tiff_pages(path: Path, tif: tifffile.TiffFile) -> list[_Page]:
    """Every page of a (multi-series) OME-TIFF in file order, with its series and indices."""
    n = len(tif.pages)
    pages = [_Page(read=(lambda i=i: np.asarray(tif.pages[i].asarray()))) for i in range(n)]  # type: ignore[misc]
    if not tif.is_ome or len(tif.series) == 0:
        return pages
    names = [f"s{k}" for k in range(len(tif.series))]
    deltas: dict[int, float] = {}
    with contextlib.suppress(Exception):  # a foreign header we cannot read: pages stay plain
        import ome_types

        ome = ome_types.from_xml(tif.ome_metadata or "")
        names = [(im.name or f"s{k}").split(" ")[-1] for k, im in enumerate(ome.images)]
        for im in ome.images:
            by_idx = {(p.the_t, p.the_c, p.the_z): p.delta_t for p in im.pixels.planes}
            for td in im.pixels.tiff_data_blocks:
                for j in range(td.plane_count or 1):
                    key = (td.first_t + j, td.first_c, td.first_z)
                    if td.ifd is not None and by_idx.get(key) is not None:
                        deltas[td.ifd + j] = float(by_idx[key] or 0.0)
    if len(tif.series) > 1 or names[0] not in ("s0", "raw"):
        for k, s in enumerate(tif.series):
            dims = [a for a in s.axes if a not in "YXS"]
            for j, page in enumerate(s.pages):
                if page is None:
                    continue
                idx = np.unravel_index(j, [s.shape[s.axes.index(a)] for a in dims]) if dims else ()
                p = pages[page.index]
                p.series = names[k] if len(tif.series) > 1 else ""
                p.axes = {a.lower(): int(i) for a, i in zip(dims, idx, strict=True)}
    for i, d in deltas.items():
        if i < n:
            pages[i].time_s = d
    return pages


def _zarr_pages(path: Path, series: str = "", every_plane: bool = False) -> list[_Page]:
    """The planes of one OME-Zarr image that hold frames, in the order they were written
    (ome-writers' per-frame metadata: storage index, time); every plane (t, then c/z) for
    an image without it, or with ``every_plane`` (a run folder's frames.jsonl counts planes
    so: t-major, then c, then z)."""
    try:
        import tensorstore as ts
    except ImportError as exc:
        raise DriverError(f"microscope.replay_path: reading {path} needs tensorstore ({exc})") from None
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    meta = attrs["ome"]["multiscales"][0]
    axes = [a["name"] for a in meta["axes"]]
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "0")}}).result()
    plane_axes = axes[:-2]
    shape = arr.shape[: len(plane_axes)]
    written = [
        (tuple(int(i) for i in m["storage_index"]), m.get("delta_t"))
        for m in (attrs.get("ome_writers") or {}).get("frame_metadata") or []
        if isinstance(m, dict) and len(m.get("storage_index") or ()) == len(plane_axes)
    ]
    if every_plane or not written:
        written = [
            (tuple(int(i) for i in np.unravel_index(k, shape)), None) for k in range(int(np.prod(shape)))
        ]
    pages = []
    for idx, delta_t in written:
        pages.append(
            _Page(
                read=(lambda idx=idx: np.asarray(arr[idx].read().result())),  # type: ignore[misc]
                series=series,
                axes=dict(zip(plane_axes, idx, strict=True)),
                time_s=float(delta_t) if delta_t is not None else None,
            )
        )
    return pages


def _open(path: Path, handles: list[Any], every_plane: bool = False) -> list[_Page]:
    """The pages of ``path``: a run folder, an OME-TIFF/TIFF, or an OME-Zarr image."""
    if path.is_dir() and (path / "zarr.json").is_file():
        return _zarr_pages(path, every_plane=every_plane)
    if path.is_dir():  # a run folder: its raw files in the order frames.jsonl lists them
        records = _jsonl(path / "frames.jsonl")
        files = list(dict.fromkeys(str(r["file"]) for r in records if "file" in r))
        if not files:
            files = sorted(p.name for p in path.glob("raw*.ome.tif")) + sorted(
                p.name for p in path.glob("raw*.ome.zarr")
            )
        if not files:
            raise DriverError(
                f"microscope.replay_path: {path} holds no raw frames (raw*.ome.tif or raw*.ome.zarr)"
            )
        by_file = {f: _open(path / f, handles, every_plane=bool(records)) for f in files}
        if not records:
            return [p for f in files for p in by_file[f]]
        pages = []
        for r in records:
            src = by_file.get(str(r.get("file")), [])
            k = int(r.get("page", -1))
            if 0 <= k < len(src):
                pages.append(src[k])
        return pages
    if not path.is_file():
        raise DriverError(f"microscope.replay_path: {path} does not exist")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise DriverError(f"microscope.replay_path: {path} is not a readable TIFF ({exc})") from None
    handles.append(tif)
    if len(tif.pages) == 0:
        raise DriverError(f"microscope.replay_path: {path} holds no images")
    first = tif.pages.first
    if len(first.shape) != 2:
        raise DriverError(
            f"microscope.replay_path: {path} pages have shape {first.shape}; replay plays 2-D (Y, X) frames"
        )
    return _tiff_pages(path, tif)


def _annotate(pages: list[_Page], records: list[dict[str, Any]], name: str) -> None:
    """What frames.jsonl says of each page of file ``name`` (time, channel, indices, state)."""
    mine = [r for r in records if r.get("file") == name]
    for p, r in zip(pages, mine, strict=False):
        p.time_s = float(r["camera_time_s"])
        p.channel = str(r.get("channel", ""))
        p.series = str(r.get("series", p.series))
        p.axes = dict(r.get("axes", p.axes))
        p.state = dict(r.get("state", {}))


def _name_channels(path: Path, pages: list[_Page]) -> float | None:
    """Channel names from the file's own metadata for pages that have none; the pixel size
    (µm) it records, or None."""
    from smartscope.batch.stacks import StackError, resolve_inputs

    try:
        stacks = resolve_inputs([path])
    except StackError:
        return None
    names = {s.name.rsplit(".", 1)[-1] if len(stacks) > 1 else "": s.channels for s in stacks}
    for p in pages:
        chans = names.get(p.series) or names.get("") or ()
        c = p.axes.get("c", 0)
        if not p.channel and c < len(chans):
            p.channel = chans[c]
    px = next((s.pixel_size_um for s in stacks if s.pixel_size_um is not None), None)
    return px[1] if px is not None else None


class ReplayDriver:
    name = "replay"
    camera_started_s: float | None = None  # no camera
    devices = Devices()  # no hardware to vet

    def __init__(self, path: Path, fps: float | None = None, loop: bool = False) -> None:
        path = Path(path)
        self._handles: list[Any] = []
        self.path = path
        if path.is_file():
            self._pages = _open(path, self._handles)
            _annotate(self._pages, _jsonl(path.parent / "frames.jsonl"), path.name)
        elif path.is_dir() and not (path / "zarr.json").is_file():
            records = _jsonl(path / "frames.jsonl")
            self._pages = _open(path, self._handles)
            ordered = [r for r in records if "file" in r][: len(self._pages)]
            for p, r in zip(self._pages, ordered, strict=False):
                _annotate([p], [r], str(r["file"]))
        else:
            self._pages = _open(path, self._handles)
        pixel_size_um = None if any(p.state for p in self._pages) else _name_channels(path, self._pages)
        self.n_pages = len(self._pages)
        if self.n_pages == 0:
            raise DriverError(f"microscope.replay_path: {path} holds no images")
        try:
            first = self._pages[0].read()
        except Exception as exc:
            raise DriverError(
                f"microscope.replay_path: {path}: the first frame cannot be read ({exc})"
            ) from None
        self.fps = fps
        times = [p.time_s for p in self._pages]
        self._times: list[float] | None = None
        if fps is None and all(t is not None for t in times):
            t0 = float(times[0])  # type: ignore[arg-type]
            self._times = [float(t) - t0 for t in times]  # type: ignore[arg-type]
        if self._times is None and fps is None:
            self.fps = 10.0  # nothing recorded: a stated default, reported in state()
        self._i = 0
        self._n_target: int | None = None
        self._t0 = 0.0
        self.skipped_writes: list[str] = []  # nothing is ever written
        self._state = DriverState(
            exposure_ms=float("nan"),
            interval_ms=1e3 / self.fps if self.fps else float("nan"),
            roi=(0, 0, int(first.shape[1]), int(first.shape[0])),
            source=str(path),
            pixel_size_um=pixel_size_um,
        )

    def start(self, n_frames: int | None) -> None:
        self._n_target = self.n_pages if n_frames is None else min(n_frames, self.n_pages)
        self._t0 = time.perf_counter()

    def _due(self, i: int) -> float:
        if self._times is not None:
            return self._t0 + self._times[i]
        assert self.fps is not None
        return self._t0 + i / self.fps

    def _state_of(self, page: _Page) -> DriverState:
        if not page.state:
            return self._state
        recorded = DriverState.from_json(page.state)
        return recorded.replace(source=str(self.path), revision=self._state.revision)

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._n_target is None or self._i >= self._n_target:
            raise StopIteration
        wait = self._due(self._i) - time.perf_counter()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        page = self._pages[self._i]
        img = page.read()
        t = now_s()
        frame = Frame(
            index=self._i,
            image=img,
            camera_time_s=t,
            channel=page.channel,
            state=self._state_of(page),
            axes=dict(page.axes),
            series=page.series,
            metadata={"replay_page": self._i},
        )
        frame.times["camera"] = t
        self._i += 1
        return frame

    def apply(self, actions: Sequence[Action]) -> ApplyResult:
        msg = "replay: recorded data cannot change; action logged only"
        return ApplyResult(
            first_frame_index=self._i, errors=[msg for _ in actions], revision=self._state.revision
        )

    def state(self) -> DriverState:
        return self._state

    def safe_state(self) -> None:
        pass

    def stop(self) -> None:
        self._n_target = min(self._n_target or 0, self._i)

    def close(self) -> None:
        for h in self._handles:
            with contextlib.suppress(Exception):
                h.close()
