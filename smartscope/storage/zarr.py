"""Raw frames as OME-Zarr (OME-NGFF) through ome-writers: one image per series (position).

``storage.format: ome-zarr`` writes each series to ``raw.<series>.ome.zarr`` (``raw.ome.zarr``
for a plain stream) as a (t, [c], [z], y, x) array: time is the growing axis; the numbers of
channels and z planes are the series' own where the driver names them
(``Frame.series_sizes``: a position whose sub-sequence differs, a burst with its own
channels), else the acquisition's, in the order the frames come. A frame with MDA indices
goes to the place they name; places the plan leaves out (a channel imaged without its
z-stack, ``acquire_every``) are skipped and read as zeros.

The metadata says what the OME-TIFF of the same run says (:func:`.ome.describe_series`):
y and x in µm at the camera's calibrated pixel size from the first frame, z in µm at the
stage's step, t in seconds at the plan's interval (else the measured one), and an
``omero`` block naming each channel with its display colour; per-frame time (since the
run's first frame, as the OME-TIFF's DeltaT), exposure and stage position go into
ome-writers' frame metadata. Steps, names and colours are written when the image is closed
(they come from its frames), and by ``recover`` for a killed run.

The backend is tensorstore (ome-writers' first choice; faster than acquire-zarr here,
``bench/storage.py``): its writes are asynchronous, so :meth:`ZarrSeriesWriter.flush`
waits for them, and the run folder lists a frame in ``frames.jsonl`` only after that, so
every listed frame's chunk is on disk. Any failure of the backend (a full disk) is
raised as ``OSError`` naming the image, and ends the run like a failed OME-TIFF write.
``recover`` (:mod:`.folder`) writes the per-frame metadata of a killed run from
``frames.jsonl``.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smartscope.extras import needs_extra
from smartscope.frame import Frame
from smartscope.storage.ome import CHANNEL_RGB, PlaneInfo, SeriesScale, channel_color, describe_series

__all__ = ["ZARR_BACKEND", "ZarrSeriesWriter", "recover_zarr", "zarr_path"]

log = logging.getLogger(__name__)

# ome-writers' backend; bench/storage.py measures it against acquire-zarr
ZARR_BACKEND: Literal["tensorstore"] = "tensorstore"


def load_backend() -> None:
    """Import ome-writers and its backend now. The run folder calls this before frames flow:
    tensorstore's first import holds the interpreter for seconds on a busy machine, which
    on the writer thread would starve the acquisition thread (seen as a camera stall)."""
    try:
        import ome_writers  # noqa: F401
        import tensorstore  # noqa: F401
    except ImportError as exc:  # pragma: no cover - ome-writers comes with pymmcore-plus
        raise ModuleNotFoundError(needs_extra("zarr", "storage.format ome-zarr"), name="zarr") from exc


@contextmanager
def _as_oserror(path: Path, what: str) -> Iterator[None]:
    """Whatever the Zarr backend raises while writing comes out as an ``OSError`` naming
    the image (tensorstore reports a full disk as a ValueError with the OS's reason)."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        text = str(exc)
        code = errno.ENOSPC if "No space left" in text else errno.EIO
        reason = "No space left on device" if code == errno.ENOSPC else f"{what}: {text.splitlines()[0]}"
        raise OSError(code, reason, str(path)) from exc


def zarr_path(folder: Path, series: str, generation: int = 0) -> Path:
    """``raw[.<series>][_<generation>].ome.zarr``: a new generation after a change of frame
    shape or pixel type, as ``raw_001.ome.tif`` for OME-TIFF."""
    name = "raw" + (f".{series}" if series else "") + (f"_{generation:03d}" if generation else "")
    return folder / f"{name}.ome.zarr"


class ZarrSeriesWriter:
    """One series' OME-Zarr stream; ``write`` puts each frame where its indices say."""

    def __init__(self, path: Path, first: Frame, sizes: Mapping[str, int], order: Sequence[str]) -> None:
        load_backend()
        from ome_writers import AcquisitionSettings, Dimension, OmeZarrFormat, create_stream

        h, w = first.image.shape[-2:]
        if first.series_sizes:  # the series' own shape, keys outer to inner
            sizes, order = first.series_sizes, list(first.series_sizes)
        self.axes = [a for a in order if a in ("c", "z") and sizes.get(a, 1) > 1]
        self.sizes = {a: int(sizes[a]) for a in self.axes}
        px = first.state.pixel_size_um if first.state is not None else None
        dims = [Dimension(name="t", count=None, type="time", unit="second")]
        dims += [
            Dimension(name=a, count=sizes[a], type="channel")
            if a == "c"
            else Dimension(name=a, count=sizes[a], type="space", unit="micrometer")
            for a in self.axes
        ]
        dims += [
            Dimension(name=a, count=int(n), type="space", unit="micrometer", scale=px)
            for a, n in (("y", h), ("x", w))
        ]
        settings = AcquisitionSettings(
            root_path=str(path),
            dimensions=tuple(dims),
            dtype=str(first.image.dtype),
            format=OmeZarrFormat(backend=ZARR_BACKEND),
        )
        self.path = path
        self.shape = first.image.shape
        self.dtype = first.image.dtype
        with _as_oserror(path, "cannot create the image"):
            self._stream: Any = create_stream(settings)
        self._pending: list[tuple[int, list[Any]]] = []  # (frame index, its backend writes)
        self.n_frames = 0
        self.next_plane = 0  # planes (t, then c/z in ``axes`` order) written or skipped so far
        self._misplaced = 0
        self.planes: list[PlaneInfo] = []  # what each written frame was (for the scale at close)

    def accepts(self, frame: Frame) -> bool:
        return frame.image.shape == self.shape and frame.image.dtype == self.dtype

    def plane_of(self, frame: Frame) -> int:
        """Where the frame's MDA indices put it (planes counted t-major); the next plane for
        a frame without indices, or one whose place is taken or out of the series' shape."""
        if "t" not in frame.axes and not any(a in frame.axes for a in self.axes):
            return self.next_plane
        plane = int(frame.axes.get("t", 0))
        for a in self.axes:
            i = int(frame.axes.get(a, 0))
            if not 0 <= i < self.sizes[a]:
                plane = -1
                break
            plane = plane * self.sizes[a] + i
        if plane < self.next_plane:  # already written or out of shape: keep it, in the next place
            self._misplaced += 1
            if self._misplaced == 1:
                log.warning(
                    "%s: frame %d (%s) does not fit the series' shape %s; stored at plane %d "
                    "(frames.jsonl has its indices)",
                    self.path.name,
                    frame.index,
                    frame.axes,
                    self.sizes,
                    self.next_plane,
                )
            return self.next_plane
        return plane

    def _stored_plane(self, plane: int) -> int:
        """An acquisition-order plane number as the array on disk counts it (OME order: t,
        then c, then z, whatever order the frames came in)."""
        rest, idx = plane, {}
        for a in reversed(self.axes):
            rest, idx[a] = divmod(rest, self.sizes[a])
        stored = rest
        for a in sorted(self.axes):  # "c" before "z"
            stored = stored * self.sizes[a] + idx[a]
        return stored

    def write(self, frame: Frame, plane_info: PlaneInfo) -> int:
        """Write one frame where its indices say; returns its plane number in the stored
        array (t-major, then c, then z). It is on disk once :meth:`flush` has returned.
        ``plane_info`` is what the OME header would say of it (time since the run's first
        frame, exposure, stage position: the frame metadata)."""
        plane = self.plane_of(frame)
        backend = getattr(self._stream, "_backend", None)
        pending = getattr(backend, "_futures", None)
        before = len(pending) if isinstance(pending, list) else 0
        with _as_oserror(self.path, "cannot write a frame"):
            if plane > self.next_plane:
                self._stream.skip(frames=plane - self.next_plane)
            self._stream.append(frame.image, frame_metadata=frame_metadata(frame.index, plane_info))
        # tensorstore's write of this frame (ome-writers keeps one future per chunk written)
        futures = pending[before:] if isinstance(pending, list) else []
        if isinstance(pending, list):
            del pending[before:]
        self._pending.append((frame.index, futures))
        self.planes.append(plane_info)
        self.n_frames += 1
        self.next_plane = plane + 1
        return self._stored_plane(plane)

    def flush(self) -> tuple[set[int], OSError | None]:
        """Wait until every frame written so far is on disk; returns the indices of the
        frames whose write failed and the first failure."""
        failed: set[int] = set()
        first: OSError | None = None
        pending, self._pending = self._pending, []
        for index, futures in pending:
            try:
                with _as_oserror(self.path, "cannot write a frame"):
                    for future in futures:
                        future.result()
            except OSError as exc:
                failed.add(index)
                first = first or exc
        return failed, first

    def close(self) -> None:
        _, error = self.flush()
        with _as_oserror(self.path, "cannot finish the image"):
            if self.planes:
                meta = self._stream.get_metadata()
                for attrs in meta.values():
                    describe_attrs(attrs, describe_series(self.planes), self.sizes.get("c", 1), self.dtype)
                self._stream.update_metadata(meta)
            self._stream.close()
        if error is not None:
            raise error


def frame_metadata(index: int, plane: PlaneInfo) -> dict[str, Any]:
    """What the image's metadata says of one frame (ome-writers' ``frame_metadata`` keys)."""
    meta: dict[str, Any] = {"delta_t": plane.delta_t_s, "index": index}
    if plane.exposure_ms is not None and math.isfinite(plane.exposure_ms):
        meta["exposure_time"] = plane.exposure_ms / 1e3
    for axis in ("x", "y", "z"):
        value = getattr(plane, f"{axis}_um")
        if value is not None:
            meta[f"position_{axis}"] = value
    return meta


def describe_attrs(attrs: dict[str, Any], scale: SeriesScale, n_channels: int, dtype: np.dtype[Any]) -> None:
    """Put the measured steps (t, z), the pixel size and the channels' names and colours
    into an image's attributes (module doc), in place."""
    ome = attrs.get("ome", attrs)
    steps = {"t": scale.time_step_s, "z": scale.z_step_um, "y": scale.pixel_size_um, "x": scale.pixel_size_um}
    for ms in ome.get("multiscales", []):
        names = [a["name"] for a in ms["axes"]]
        for ds in ms["datasets"]:
            for tf in ds.get("coordinateTransformations", []):
                if tf.get("type") == "scale":
                    tf["scale"] = [float(steps.get(n) or v) for n, v in zip(names, tf["scale"], strict=True)]
    labels = list(scale.channels) + [f"c{c}" for c in range(len(scale.channels), n_channels)]
    info = np.iinfo(dtype) if dtype.kind in "ui" else np.finfo(dtype)
    window = {"min": float(info.min), "max": float(info.max), "start": 0.0, "end": float(info.max)}
    ome["omero"] = {
        "channels": [
            {
                "label": label,
                "color": "{:02X}{:02X}{:02X}".format(*CHANNEL_RGB[channel_color(label)]),
                "window": window,
                "active": True,
            }
            for label in labels[:n_channels]
        ]
    }


def recover_zarr(path: Path, records: Sequence[Mapping[str, Any]], planes: Sequence[PlaneInfo]) -> int:
    """Finish an OME-Zarr image of a killed run; returns the frames (chunks) on disk.

    The image's structure and its array's shape are on disk from the start (ome-writers
    writes them before any frame); what a killed run lacks is written at close: the
    per-frame metadata, the steps and the channels. They are rebuilt from the frames' lines
    (``records``: those naming this image, and ``planes``: what each was, timed from the
    run's first frame) and written whole or not at all. A finished image is left as it is.
    """
    array_meta = json.loads((path / "0" / "zarr.json").read_text(encoding="utf-8"))
    shape = [int(n) for n in array_meta["shape"]]
    chunks = path / "0" / "c"
    on_disk = sum(1 for p in chunks.rglob("*") if p.is_file()) if chunks.is_dir() else 0
    group_file = path / "zarr.json"
    group = json.loads(group_file.read_text(encoding="utf-8"))
    attrs = group.setdefault("attributes", {})
    if "frame_metadata" in attrs.get("ome_writers", {}) or not records:
        return on_disk
    index_shape = shape[:-2] or [1]
    frames = []
    for r, plane in zip(records, planes, strict=True):
        page = int(r.get("page", 0))
        if page >= math.prod(index_shape):
            continue
        meta = frame_metadata(int(r["index"]), plane)
        meta["storage_index"] = [int(i) for i in np.unravel_index(page, index_shape)]
        frames.append(meta)
    attrs.setdefault("ome_writers", {})["frame_metadata"] = frames
    axes = [a["name"] for a in attrs.get("ome", attrs).get("multiscales", [{}])[0].get("axes", [])]
    n_channels = shape[axes.index("c")] if "c" in axes else 1
    describe_attrs(attrs, describe_series(planes), n_channels, np.dtype(array_meta["data_type"]))
    tmp = group_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(group, indent=2), encoding="utf-8")
    os.replace(tmp, group_file)
    return on_disk
