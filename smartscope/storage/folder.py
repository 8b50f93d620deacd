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
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.frame import Frame, now_s
from smartscope.storage.columns import ColumnarWriter
from smartscope.storage.jsonl import JsonlWriter, dumps, json_default, read_jsonl
from smartscope.storage.tiff import PlaneInfo, StackWriter, count_pages, write_ome_header

__all__ = ["RunFolder", "recover"]


class RunFolder:
    """The folder of one run, and the writers into it."""

    def __init__(self, root: Path, name: str, fsync_every: int = 0) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self.path = Path(root) / f"{stamp}_{name}"
        self.path.mkdir(parents=True, exist_ok=False)
        (self.path / "outputs").mkdir()
        self.fsync_every = fsync_every
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

    # raw frames --------------------------------------------------------------

    def _raw_writer_for(self, image: np.ndarray) -> StackWriter:
        raw = self._raw
        if raw is not None and raw.accepts(image):
            return raw
        if raw is not None:
            raw.close()
        name = "raw.ome.tif" if self._raw_files == 0 else f"raw_{self._raw_files:03d}.ome.tif"
        self._raw_files += 1
        self._raw = StackWriter(self.path / name, self.fsync_every)
        return self._raw

    @property
    def raw_path(self) -> Path | None:
        """The raw stack being written to (``None`` before the first frame)."""
        return None if self._raw is None else self._raw.path

    def write_raw(self, frames: Sequence[Frame]) -> None:
        """Raw frames to disk (runs of same-shape frames in one batch each), stamp
        ``times["stored"]``, then their lines in frames.jsonl."""
        start = 0
        while start < len(frames):
            writer = self._raw_writer_for(frames[start].image)
            end = start + 1
            while end < len(frames) and writer.accepts(frames[end].image):
                end += 1
            group = frames[start:end]
            exposures = [_exposure(f) for f in group]
            first = writer.write_batch(
                [f.image for f in group],
                # the page names its frame; the settings in force are in frames.jsonl and the header
                [
                    dumps({"index": f.index, "camera_time_s": f.camera_time_s, "channel": f.channel}).encode()
                    for f in group
                ],
                [f.camera_time_s for f in group],
                exposures,
                [f.channel for f in group],
            )
            t = now_s()
            records = []
            for k, f in enumerate(group):
                f.times["stored"] = t
                rec: dict[str, Any] = {
                    "index": f.index,
                    "file": writer.path.name,
                    "page": first + k,
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
            start = end

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
            w.close()
            file_name = f"{name}_{index:06d}"
            w = None
        if w is None:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", file_name)
            w = StackWriter(self.path / "outputs" / f"{safe}.ome.tif", self.fsync_every)
            self._outputs[name] = w
        planes = img.reshape(-1, *img.shape[-2:]) if img.ndim > 2 else img[None]
        if channel_names is not None and len(channel_names) != len(planes):
            raise ValueError(f"{name}: {len(channel_names)} channel names for {len(planes)} planes")
        labels = [
            channel_names[c] if channel_names is not None else (f"c{c}" if len(planes) > 1 else "")
            for c in range(len(planes))
        ]
        w.write_batch(
            list(planes),
            [dumps({"index": index, "channel": c}).encode() for c in range(len(planes))],
            [time_s] * len(planes),
            [None] * len(planes),
            labels,
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

    def close_images(self) -> None:
        """Finish every image file (OME headers); the frame writer's last step."""
        stacks = [w for w in (self._raw, *self._outputs.values()) if w is not None]
        self._raw = None
        self._outputs = {}
        errors = []
        for w in stacks:
            try:
                w.close()
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


def _exposure(frame: Frame) -> float | None:
    if frame.state is None or not math.isfinite(frame.state.exposure_ms):
        return None
    return frame.state.exposure_ms


def recover(run_dir: Path) -> dict[str, int]:
    """Finish the OME headers of a run that died; returns pages found per raw file.

    Pages are counted from the TIFF itself (every page written before the crash is
    complete and linked); exposure and timing per plane come from ``frames.jsonl``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    frames = read_jsonl(run_dir / "frames.jsonl")
    found: dict[str, int] = {}
    for tif_path in sorted(run_dir.glob("raw*.ome.tif")):
        n, shape, dtype = count_pages(tif_path)
        found[tif_path.name] = n
        if n == 0 or shape is None or dtype is None:
            continue
        recs = [r for r in frames if r.get("file") == tif_path.name]
        t0 = recs[0]["camera_time_s"] if recs else 0.0
        planes = []
        for k in range(n):
            r: Mapping[str, Any] | None = recs[k] if k < len(recs) else None
            planes.append(
                PlaneInfo(
                    (float(r["camera_time_s"]) - t0) if r else 0.0,
                    r.get("state", {}).get("exposure_ms") if r else None,
                    str(r.get("channel", "")) if r else "",
                )
            )
        write_ome_header(tif_path, planes, shape, dtype)
    return found
