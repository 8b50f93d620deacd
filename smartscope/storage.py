"""Run folders and crash-safe writers.

A run folder holds::

    config.yaml        the configuration exactly as run (defaults filled in)
    raw.ome.tif        every raw frame, one TIFF page each (raw_001.ome.tif ... on ROI change)
    frames.jsonl       one line per raw frame: index, file, page, timestamps, state in force
    outputs/           engine outputs: <stage>.<name>.ome.tif, <stage>.rows.h5 (table rows,
                       e.g. localizations: one HDF5 dataset per column, see ColumnarWriter)
    analysis.jsonl     one line per analysed frame: stage times, values, decision time
    actions.jsonl      the audit log: every action request and what became of it
    events.jsonl       run events: start, faults, safe state, stop
    metrics.json       summary figures, written at the end
    report.html        plots, written at the end

Crash safety: each frame is written as its own TIFF page (its IFD goes out with it) and
the file is flushed to the OS after every frame, so a ``kill -9`` loses nothing already
written and leaves a valid multi-page TIFF. On a clean close the first page's description
becomes an OME-XML header describing the whole stack; ``recover`` does the same for a run
that died.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, ClassVar
from xml.sax.saxutils import escape

import numpy as np
import tifffile

from smartscope.frame import now_s

_OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, separators=(",", ":"))


class JsonlWriter:
    """Append-only JSON lines, flushed per line (a crash loses at most a partial line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] = path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(dumps(record) + "\n")

    def close(self) -> None:
        self._fh.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a JSONL file; a last line cut short by a crash is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class ColumnarWriter:
    """Table rows (numeric) -> one HDF5 file of equal-length 1-D datasets, one per column.

    Rows are buffered and appended as one chunk per column once ``chunk_rows`` are pending
    or ``flush_s`` has passed since the last append, then flushed. The file is in HDF5's
    single-writer/multiple-reader mode from the first chunk on: readers may open it while
    it grows, and a killed process leaves every appended chunk readable (at most the
    pending rows are lost). Columns are fixed by the first chunk (``frame`` int64, the rest
    float64; a missing value is NaN); a later row with a new column is an error.
    """

    def __init__(self, path: Path, chunk_rows: int = 4096, flush_s: float = 1.0) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self.flush_s = flush_s
        self.n_rows = 0
        self._pending: list[Mapping[str, Any]] = []
        self._last = now_s()
        self._file: Any = None
        self._columns: list[str] = []

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._pending.extend(rows)
        if len(self._pending) >= self.chunk_rows or now_s() - self._last >= self.flush_s:
            self.flush()

    def _open(self, first: Mapping[str, Any]) -> None:
        import h5py

        self._columns = list(first)
        self._file = h5py.File(self.path, "w", libver="latest")
        for c in self._columns:
            dtype = np.int64 if c == "frame" else np.float64
            self._file.create_dataset(c, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(self.chunk_rows,))
        self._file.swmr_mode = True

    def flush(self) -> None:
        self._last = now_s()
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        if self._file is None:
            self._open(rows[0])
        unknown = {k for r in rows for k in r} - set(self._columns)
        if unknown:
            raise ValueError(
                f"{self.path.name}: columns {sorted(unknown)} not in the first rows' {self._columns}"
            )
        n0, n = self.n_rows, len(rows)
        for c in self._columns:
            ds = self._file[c]
            col = np.array([r.get(c, np.nan) for r in rows], dtype=ds.dtype)
            ds.resize((n0 + n,))
            ds[n0:] = col
        self.n_rows = n0 + n
        self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """All columns of a :class:`ColumnarWriter` file (readable while it is being written)."""
    import h5py

    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        return {k: np.asarray(f[k][:]) for k in f}


@dataclass
class _PlaneInfo:
    delta_t_s: float
    exposure_ms: float | None
    channel: str


class _BigTiffAppender:
    """Appends 2-D pages to a BigTIFF: one write per page, then an 8-byte link patch.

    Layout per page: pixel data, description, software string, IFD (next offset 0).
    The previous page's next-IFD pointer is patched only after the new page is
    completely written, so the file is a valid TIFF after every page, whatever kills
    the process. tifffile's general-purpose writer costs ~0.3 ms of Python per page;
    this costs ~0.03 ms, which is the difference between keeping up with a fast
    camera and not (bench/loop.py).
    """

    _SAMPLE_FORMAT: ClassVar[dict[str, int]] = {"u": 1, "i": 2, "f": 3}

    def __init__(self, path: Path) -> None:
        self._fh = path.open("wb")
        # header: byte order, 43 (BigTIFF), offset size 8, 0, first IFD offset (patched)
        self._fh.write(b"II" + struct.pack("<HHHQ", 43, 8, 0, 0))
        self._link_pos = 8  # where the pointer to the next IFD is stored
        self._end = 16
        self._software = b"smartscope\0"

    def append(self, image: np.ndarray, description: bytes) -> None:
        img = np.ascontiguousarray(image)
        if img.ndim != 2:
            raise ValueError(f"pages are 2-D, got shape {img.shape}")
        kind = img.dtype.kind
        if kind not in self._SAMPLE_FORMAT or img.dtype.byteorder == ">":
            raise ValueError(f"unsupported pixel type {img.dtype}")
        h, w = img.shape
        data_off = self._end
        desc = description + b"\0"
        desc_off = data_off + img.nbytes
        soft_off = desc_off + len(desc)
        ifd_off = soft_off + len(self._software)
        ifd_off += ifd_off % 2  # IFDs start on a word boundary
        pad = ifd_off - (soft_off + len(self._software))
        tags = [  # (tag, type, count, value); types: 3 SHORT, 4 LONG, 2 ASCII, 16 LONG8
            (256, 4, 1, w),
            (257, 4, 1, h),
            (258, 3, 1, img.dtype.itemsize * 8),
            (259, 3, 1, 1),  # no compression
            (262, 3, 1, 1),  # min-is-black
            (270, 2, len(desc), desc_off),
            (273, 16, 1, data_off),
            (277, 3, 1, 1),
            (278, 4, 1, h),
            (279, 16, 1, img.nbytes),
            (305, 2, len(self._software), soft_off),
            (339, 3, 1, self._SAMPLE_FORMAT[kind]),
        ]
        ifd = bytearray(struct.pack("<Q", len(tags)))
        for tag, typ, count, value in tags:
            ifd += struct.pack("<HHQQ", tag, typ, count, value)
        ifd += struct.pack("<Q", 0)  # last page: no next IFD
        fh = self._fh
        fh.seek(data_off)
        fh.write(img.data.cast("B"))
        fh.write(desc + self._software + b"\0" * pad + ifd)
        fh.seek(self._link_pos)  # link it in only now that it is complete
        fh.write(struct.pack("<Q", ifd_off))
        self._link_pos = ifd_off + 8 + 20 * len(tags)
        self._end = self._link_pos + 8
        fh.flush()

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        self._fh.close()


@dataclass
class StackWriter:
    """A growing stack of same-shape 2-D frames in one crash-safe (OME-)TIFF file."""

    path: Path
    fsync_every: int = 0
    planes: list[_PlaneInfo] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    dtype: np.dtype[Any] | None = None

    def __post_init__(self) -> None:
        self._tif = _BigTiffAppender(self.path)
        self._t0: float | None = None

    @property
    def n_pages(self) -> int:
        return len(self.planes)

    def write(
        self,
        image: np.ndarray,
        meta: Mapping[str, Any],
        time_s: float,
        exposure_ms: float | None = None,
        channel: str = "",
    ) -> int:
        """Append one page; return its page number. The page is in the OS when this returns."""
        if self.shape is None:
            self.shape, self.dtype = image.shape, image.dtype
        elif image.shape != self.shape or image.dtype != self.dtype:
            raise ValueError(
                f"{self.path.name}: frame {image.shape}/{image.dtype} does not match the stack's "
                f"{self.shape}/{self.dtype}"
            )
        if self._t0 is None:
            self._t0 = time_s
        self._tif.append(image, dumps(meta).encode("utf-8"))
        self.planes.append(_PlaneInfo(time_s - self._t0, exposure_ms, channel))
        if self.fsync_every and len(self.planes) % self.fsync_every == 0:
            os.fsync(self._tif.fileno())
        return len(self.planes) - 1

    def close(self) -> None:
        self._tif.close()
        if self.planes:
            write_ome_header(self.path, self.planes, self.shape, self.dtype)


def _ome_xml(
    name: str,
    planes: list[_PlaneInfo],
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
) -> str:
    channels = list(dict.fromkeys(p.channel for p in planes)) or [""]
    n_c = len(channels)
    n_t = -(-len(planes) // n_c)
    h, w = shape[-2], shape[-1]
    ome_type = {"uint8": "uint8", "uint16": "uint16", "float32": "float", "int16": "int16"}.get(
        str(dtype), str(dtype)
    )
    ch_xml = "".join(
        f'<Channel ID="Channel:0:{i}" Name="{escape(c)}" SamplesPerPixel="1"/>'
        for i, c in enumerate(channels)
    )
    plane_xml = []
    tiff_xml = []
    for k, p in enumerate(planes):
        c = channels.index(p.channel)
        t = k // n_c
        exp = f' ExposureTime="{p.exposure_ms:.6g}" ExposureTimeUnit="ms"' if p.exposure_ms else ""
        plane_xml.append(
            f'<Plane TheC="{c}" TheT="{t}" TheZ="0" DeltaT="{p.delta_t_s:.6f}" DeltaTUnit="s"{exp}/>'
        )
        tiff_xml.append(f'<TiffData IFD="{k}" FirstC="{c}" FirstT="{t}" FirstZ="0" PlaneCount="1"/>')
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{_OME_NS}" Creator="smartscope">'
        f'<Image ID="Image:0" Name="{escape(name)}"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
        f'Type="{ome_type}" SizeX="{w}" SizeY="{h}" SizeC="{n_c}" SizeZ="1" SizeT="{n_t}" '
        f'BigEndian="false">{ch_xml}{"".join(tiff_xml)}{"".join(plane_xml)}</Pixels></Image></OME>'
    )


def write_ome_header(
    path: Path,
    planes: list[_PlaneInfo],
    shape: tuple[int, ...] | None,
    dtype: np.dtype[Any] | None,
) -> None:
    """Put an OME-XML header describing all pages into the first page's description."""
    if shape is None or dtype is None or not planes:
        return
    tifffile.tiffcomment(path, _ome_xml(path.stem, planes, shape, dtype).encode("utf-8"))


class RunFolder:
    """The folder of one run, and the writers into it."""

    def __init__(self, root: Path, name: str, fsync_every: int = 0) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self.path = Path(root) / f"{stamp}_{name}"
        self.path.mkdir(parents=True, exist_ok=False)
        (self.path / "outputs").mkdir()
        self.fsync_every = fsync_every
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
        if raw is not None and raw.shape in (None, image.shape):
            return raw
        if raw is not None:
            raw.close()
        name = "raw.ome.tif" if self._raw_files == 0 else f"raw_{self._raw_files:03d}.ome.tif"
        self._raw_files += 1
        self._raw = StackWriter(self.path / name, self.fsync_every)
        return self._raw

    def write_raw(
        self,
        index: int,
        image: np.ndarray,
        times: dict[str, float],
        camera_time_s: float,
        channel: str,
        state: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Raw frame to disk, stamp ``times["stored"]``, then its line in frames.jsonl."""
        writer = self._raw_writer_for(image)
        exposure = state.get("exposure_ms")
        # the page names its frame; the settings in force are in frames.jsonl (and the OME header)
        meta = {"index": index, "camera_time_s": camera_time_s, "channel": channel}
        page = writer.write(image, meta, camera_time_s, exposure, channel)
        times["stored"] = now_s()
        rec = {
            "index": index,
            "file": writer.path.name,
            "page": page,
            "camera_time_s": camera_time_s,
            "channel": channel,
            "times": dict(times),
            "state": state,
        }
        if extra:
            rec.update(extra)
        self.frames.write(rec)

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
        for c, plane in enumerate(planes):
            label = channel_names[c] if channel_names is not None else (f"c{c}" if len(planes) > 1 else "")
            w.write(plane, {"index": index, "channel": c}, time_s, None, label)

    def write_rows(self, stage: str, index: int, rows: list[dict[str, Any]]) -> None:
        w = self._rows.get(stage)
        if w is None:
            w = ColumnarWriter(self.path / "outputs" / f"{stage}.rows.h5")
            self._rows[stage] = w
        w.write([{"frame": index, **row} for row in rows])

    # end of run --------------------------------------------------------------

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        p.write_text(json.dumps(obj, default=_json_default, indent=2), encoding="utf-8")
        return p

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
        for w in self._outputs.values():
            w.close()
        for j in (self.frames, self.analysis, self.actions, self.events):
            j.close()
        for rows in self._rows.values():
            rows.close()


def recover(run_dir: Path) -> dict[str, int]:
    """Finish the OME headers of a run that died; returns pages found per raw file.

    Pages are counted from the TIFF itself (every page written before the crash is
    complete and linked); exposure and timing per plane come from ``frames.jsonl``.
    """
    run_dir = Path(run_dir)
    frames = read_jsonl(run_dir / "frames.jsonl")
    found: dict[str, int] = {}
    for tif_path in sorted(run_dir.glob("raw*.ome.tif")):
        with tifffile.TiffFile(tif_path) as tif:
            n = len(tif.pages)
            if n == 0:
                found[tif_path.name] = 0
                continue
            first = tif.pages.first
            shape, dtype = first.shape, first.dtype
        recs = [r for r in frames if r.get("file") == tif_path.name]
        t0 = recs[0]["camera_time_s"] if recs else 0.0
        planes = []
        for k in range(n):
            r = recs[k] if k < len(recs) else None
            planes.append(
                _PlaneInfo(
                    (r["camera_time_s"] - t0) if r else 0.0,
                    r["state"].get("exposure_ms") if r else None,
                    r.get("channel", "") if r else "",
                )
            )
        write_ome_header(tif_path, planes, shape, np.dtype(dtype))
        found[tif_path.name] = n
    return found
