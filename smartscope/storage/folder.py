"""A run folder: every file of one run, and the writers into it.

A run folder holds::

    config.yaml        the configuration exactly as run (defaults filled in)
    raw.ome.tif        every raw frame, one TIFF page each (raw_001.ome.tif ... when the
                       frame shape or pixel type changes: ROI, binning)
    frames.jsonl       one line per raw frame: index, file, page, timestamps, state in force
    outputs/           engine outputs: <stage>.<name>.ome.tif, <stage>.rows.h5 (table rows,
                       e.g. localizations: one HDF5 dataset per column, see ColumnarWriter)
    analysis.jsonl     one line per analysed frame: stage times, values, decision time
    actions.jsonl      the audit log: every action request and what became of it
    events.jsonl       run events: start, faults, safe state, stop
    metrics.json       summary figures, written at the end
    report.html        plots, written at the end

Image files are written only by the run's frame writer (:mod:`.writer`), one thread; a
frame's line in ``frames.jsonl`` is written after its page is linked into the stack, so
the log never names a page that is not there. ``recover`` finishes the OME headers of a
run that died.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.exceptions import SmartscopeError
from smartscope.frame import Frame, now_s
from smartscope.state import DriverState
from smartscope.storage.columns import ColumnarWriter
from smartscope.storage.direct import IoMode, WriteStats, resolve_io
from smartscope.storage.jsonl import JsonlWriter, dumps, json_default, read_jsonl
from smartscope.storage.ome import PlaneInfo, ome_xml
from smartscope.storage.tiff import StackWriter, count_pages, write_description
from smartscope.storage.zarr import ZarrSeriesWriter, recover_zarr, zarr_path
from smartscope.storage.zarr import load_backend as load_zarr_backend

__all__ = ["PartlyWritten", "RunFolder", "plane_of_record", "recover"]


class PartlyWritten(SmartscopeError, OSError):
    """A batch of frames failed after some of them were stored (and listed): ``stored``."""

    def __init__(self, cause: OSError, stored: Sequence[Frame]) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), cause.filename)
        self.stored = list(stored)


class RunFolder:
    """The folder of one run, and the writers into it."""

    def __init__(
        self,
        root: Path,
        name: str,
        fsync_every: int = 0,
        fmt: str = "ome-tiff",
        layout: tuple[dict[str, int], str] = ({}, "tpgcz"),
        io: str = "auto",
    ) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self.path = Path(root) / f"{stamp}_{name}"
        self.path.mkdir(parents=True, exist_ok=False)
        (self.path / "outputs").mkdir()
        self.fsync_every = fsync_every
        # direct (past the page cache) or buffered, for every stack of the run (storage.io)
        self.io: IoMode = resolve_io(self.path, io)
        self.raw_write_stats = WriteStats()  # every raw stack's writes: bytes, time, the slowest
        # room kept for the end of the run: if the disk fills, this is given back so that the
        # headers, the logs' last lines and metrics.json still fit
        self._reserve = self.path / ".space_reserve"
        _reserve(self._reserve, RESERVE_BYTES)
        self.frames = JsonlWriter(self.path / "frames.jsonl")
        self.analysis = JsonlWriter(self.path / "analysis.jsonl")
        self.actions = JsonlWriter(self.path / "actions.jsonl")
        self.events = JsonlWriter(self.path / "events.jsonl")
        self._raw: StackWriter | None = None
        self._raw_files = 0
        self._outputs: dict[str, StackWriter] = {}
        self._rows: dict[str, ColumnarWriter] = {}
        self._t0: dict[str, float] = {}  # per stack file: the time of its first page
        self._camera = ""
        self.format = fmt
        if fmt == "ome-zarr":
            load_zarr_backend()  # before frames flow (see load_backend)
        self._layout = layout
        self._zarr: dict[str, ZarrSeriesWriter] = {}
        self._zarr_generation: dict[str, int] = {}  # per series: images started after shape changes

    # raw frames --------------------------------------------------------------

    def _raw_writer_for(self, image: np.ndarray) -> StackWriter:
        raw = self._raw
        if raw is not None and raw.accepts(image):
            return raw
        if raw is not None:
            self._finish(raw)
        name = "raw.ome.tif" if self._raw_files == 0 else f"raw_{self._raw_files:03d}.ome.tif"
        self._raw_files += 1
        self._raw = StackWriter(self.path / name, self.fsync_every, self.io, self.raw_write_stats)
        return self._raw

    @property
    def raw_path(self) -> Path | None:
        """The raw stack being written to (``None`` before the first frame)."""
        return None if self._raw is None else self._raw.path

    def write_raw(self, frames: Sequence[Frame]) -> None:
        """Raw frames to disk (runs of same-shape frames in one batch each), stamp
        ``times["stored"]``, then their lines in frames.jsonl."""
        if self.format == "ome-zarr":
            self._write_zarr(frames)
            return
        start = 0
        while start < len(frames):
            writer = self._raw_writer_for(frames[start].image)
            end = start + 1
            while end < len(frames) and writer.accepts(frames[end].image):
                end += 1
            group = frames[start:end]
            if not self._camera:
                self._camera = str(group[0].metadata.get("mm", {}).get("Camera", ""))
            t0 = self._t0.setdefault(writer.path.name, group[0].camera_time_s)
            planes = [_plane(f.camera_time_s - t0, f.channel, f.state, f.axes, f.series) for f in group]
            first = writer.write_batch(
                [f.image for f in group],
                # the page names its frame; the settings in force are in frames.jsonl and the header
                [
                    dumps({"index": f.index, "camera_time_s": f.camera_time_s, "channel": f.channel}).encode()
                    for f in group
                ],
                planes,
                [p.pixel_size_um for p in planes],  # the pages' resolution tags
            )
            self._log_frames(group, [(writer.path.name, first + k) for k in range(len(group))])
            start = end

    def _log_frames(self, frames: Sequence[Frame], where: Sequence[tuple[str, int]]) -> None:
        """Stamp ``stored`` and write the frames' lines (file and page each)."""
        t = now_s()
        records = []
        for f, (file, page) in zip(frames, where, strict=True):
            f.times["stored"] = t
            rec: dict[str, Any] = {
                "index": f.index,
                "file": file,
                "page": page,
                "camera_time_s": f.camera_time_s,
                "channel": f.channel,
                "times": dict(f.times),
                "state": f.state.to_json() if f.state is not None else {},
            }
            if f.transition:
                rec["transition"] = True
            if f.axes:
                rec["axes"] = f.axes
            if f.series:
                rec["series"] = f.series
            mm = f.metadata.get("mm")
            if mm:
                rec["mm"] = mm
            records.append(rec)
        self.frames.write_many(records)

    def _write_zarr(self, frames: Sequence[Frame]) -> None:
        """One OME-Zarr image per series; a new one when a series' frame shape changes.
        Frames are listed once their chunks are on disk; if a write fails, the frames that
        made it are listed and :class:`PartlyWritten` says which."""
        where: dict[int, tuple[str, int]] = {}
        error: OSError | None = None
        failed: set[int] = set()
        t0 = self._t0.setdefault("raw.ome.zarr", frames[0].camera_time_s)  # DeltaT from the run's start
        for f in frames:
            try:
                w = self._zarr.get(f.series)
                if w is not None and not w.accepts(f):
                    bad, flush_error = w.flush()
                    failed |= bad
                    error = error or flush_error
                    self._zarr.pop(f.series)
                    w.close()
                    w = None
                    self._zarr_generation[f.series] = self._zarr_generation.get(f.series, 0) + 1
                if w is None:
                    gen = self._zarr_generation.get(f.series, 0)
                    path = zarr_path(self.path, f.series, gen)
                    sizes, order = self._layout
                    w = ZarrSeriesWriter(path, f, sizes, order)
                    self._zarr[f.series] = w
                plane = _plane(f.camera_time_s - t0, f.channel, f.state, f.axes, f.series)
                where[f.index] = (w.path.name, w.write(f, plane))
            except OSError as exc:
                error = exc
                break
        for w in self._zarr.values():
            bad, flush_error = w.flush()  # every frame's chunk on disk before its line in frames.jsonl
            failed |= bad
            error = error or flush_error
        stored = [f for f in frames if f.index in where and f.index not in failed]
        self._log_frames(stored, [where[f.index] for f in stored])
        if error is not None:
            raise PartlyWritten(error, stored)

    # engine outputs ----------------------------------------------------------

    def write_output(
        self,
        stage: str,
        key: str,
        index: int,
        image: np.ndarray,
        time_s: float,
        channel_names: Sequence[str] | None = None,
    ) -> None:
        """Append an engine output to ``outputs/<stage>.<key>.ome.tif`` (channels named)."""
        name = f"{stage}.{key}"
        w = self._outputs.get(name)
        img = np.asarray(image, dtype=np.float32)
        file_name = name
        if w is not None and w.shape != img.shape[-2:]:  # a new frame size starts a new stack
            self._finish(w)
            file_name = f"{name}_{index:06d}"
            w = None
        if w is None:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", file_name)
            w = StackWriter(self.path / "outputs" / f"{safe}.ome.tif", self.fsync_every, self.io)
            self._outputs[name] = w
        planes = img.reshape(-1, *img.shape[-2:]) if img.ndim > 2 else img[None]
        if channel_names is not None and len(channel_names) != len(planes):
            raise ValueError(f"{name}: {len(channel_names)} channel names for {len(planes)} planes")
        labels = [
            channel_names[c] if channel_names is not None else (f"c{c}" if len(planes) > 1 else "")
            for c in range(len(planes))
        ]
        t0 = self._t0.setdefault(w.path.name, time_s)
        w.write_batch(
            list(planes),
            [dumps({"index": index, "channel": c}).encode() for c in range(len(planes))],
            [PlaneInfo(time_s - t0, None, label) for label in labels],
        )

    def write_rows(self, stage: str, index: int, rows: list[dict[str, Any]]) -> None:
        w = self._rows.get(stage)
        if w is None:
            w = ColumnarWriter(self.path / "outputs" / f"{stage}.rows.h5")
            self._rows[stage] = w
        w.write([{"frame": index, **row} for row in rows])

    # end of run --------------------------------------------------------------

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` whole or not at all (a temporary file renamed into place)."""
        p = self.path / name
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, default=json_default, indent=2), encoding="utf-8")
        os.replace(tmp, p)
        return p

    def release_reserve(self) -> None:
        """Give back the space kept for the end of the run (the disk is full, or the run ends)."""
        with contextlib.suppress(FileNotFoundError):
            self._reserve.unlink()

    def _actions(self) -> list[str]:
        """The audit log in one line per applied action (the OME header's annotations)."""
        out = []
        for r in read_jsonl(self.path / "actions.jsonl"):
            if r.get("applied") is None:
                continue
            req = r.get("request", {})
            out.append(
                f"frame {r.get('first_frame_index')}: {req.get('source')} {r.get('verdict')} "
                f"{dumps(r['applied'])} ({req.get('reason', '')})"
            )
        return out

    def _finish(self, w: StackWriter) -> None:
        """Describe a stack in its OME-XML header and close it."""
        if not w.planes or w.shape is None or w.dtype is None:
            w.close()
            return
        raw = w.path.parent == self.path
        xml = ome_xml(
            w.path.name.removesuffix(".ome.tif"),
            w.planes,
            w.shape,
            w.dtype,
            camera=self._camera if raw else "",
            actions=self._actions() if raw else (),
        )
        w.close(xml)

    def close_images(self) -> None:
        """Finish every image file (OME headers); the frame writer's last step."""
        stacks = [w for w in (self._raw, *self._outputs.values()) if w is not None]
        self._raw = None
        self._outputs = {}
        errors = []
        for z in self._zarr.values():
            try:
                z.close()
            except OSError as exc:
                errors.append(f"{z.path.name}: {exc.strerror or exc}")
        self._zarr = {}
        for w in stacks:
            try:
                self._finish(w)
            except OSError as exc:  # the others still get their headers
                errors.append(f"{w.path.name}: {exc.strerror or exc}")
        if errors:
            raise OSError("could not finish " + "; ".join(errors))

    def close(self) -> None:
        self.release_reserve()
        self.close_images()
        for rows in self._rows.values():
            rows.close()
        for j in (self.frames, self.analysis, self.actions, self.events):
            j.close()


RESERVE_BYTES = 8 << 20


def _reserve(path: Path, n: int) -> None:
    """A file of ``n`` bytes really allocated on disk (not sparse)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, n)
        except (AttributeError, OSError):  # no fallocate here (some filesystems): write zeros
            os.write(fd, b"\0" * n)
    finally:
        os.close(fd)


def _plane(
    delta_t_s: float, channel: str, state: DriverState | None, axes: Mapping[str, int], series: str
) -> PlaneInfo:
    """What the OME header says of one raw page."""
    exposure = None if state is None or not math.isfinite(state.exposure_ms) else state.exposure_ms
    xy = state.xy_um if state is not None else None
    return PlaneInfo(
        delta_t_s,
        exposure,
        channel,
        series,
        t=axes.get("t"),
        c=axes.get("c"),
        z=axes.get("z"),
        x_um=xy[0] if xy else None,
        y_um=xy[1] if xy else None,
        z_um=state.z_um if state is not None else None,
        pixel_size_um=state.pixel_size_um if state is not None else None,
        interval_s=state.interval_ms / 1e3 if state is not None and state.interval_ms > 0 else None,
    )


def plane_of_record(r: Mapping[str, Any], t0: float) -> PlaneInfo:
    """What the OME header says of the frame a ``frames.jsonl`` line records (time since ``t0``)."""
    state = DriverState.from_json(r["state"]) if r.get("state") else None
    time_s = float(r.get("camera_time_s", t0)) - t0
    return _plane(time_s, str(r.get("channel", "")), state, r.get("axes", {}), str(r.get("series", "")))


def recover(run_dir: Path) -> dict[str, int]:
    """Finish the raw images of a run that died; returns the frames found per raw file.

    OME-TIFF: pages are counted from the TIFF itself (every page written before the
    crash is complete and linked), and the OME header is written; what each page was
    (time, state, indices, series) comes from ``frames.jsonl``. OME-Zarr: chunks on disk
    are counted and each image's per-frame metadata is written from ``frames.jsonl``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    folder = object.__new__(RunFolder)  # only to describe: no files are opened
    folder.path = run_dir
    frames = read_jsonl(run_dir / "frames.jsonl")
    found: dict[str, int] = {}
    for tif_path in sorted(run_dir.glob("raw*.ome.tif")):
        n, shape, dtype = count_pages(tif_path)
        found[tif_path.name] = n
        if n == 0 or shape is None or dtype is None:
            continue
        recs = [r for r in frames if r.get("file") == tif_path.name]
        t0 = float(recs[0]["camera_time_s"]) if recs else 0.0
        planes = []
        camera = ""
        for k in range(n):
            r: Mapping[str, Any] = recs[k] if k < len(recs) else {}
            planes.append(plane_of_record(r, t0))
            camera = camera or str(r.get("mm", {}).get("Camera", ""))
        xml = ome_xml(
            tif_path.name.removesuffix(".ome.tif"), planes, shape, dtype, camera, actions=folder._actions()
        )
        write_description(tif_path, xml)
    run_t0 = min((float(r.get("camera_time_s", 0.0)) for r in frames), default=0.0)
    for zarr_dir in sorted(run_dir.glob("raw*.ome.zarr")):
        mine = [r for r in frames if r.get("file") == zarr_dir.name]
        try:
            found[zarr_dir.name] = recover_zarr(zarr_dir, mine, [plane_of_record(r, run_t0) for r in mine])
        except (OSError, ValueError, KeyError) as exc:
            why = f"not an OME-Zarr image smartscope wrote ({exc})"
            raise OSError(errno.EIO, why, str(zarr_dir)) from None
    return found


def sync_tree(path: Path) -> None:
    """fsync ``path``, or every file below it (a run folder, a Zarr store): what was written
    is on the disk when this returns, so a write rate timed up to here is the disk's."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
