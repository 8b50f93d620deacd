"""Raw frames as OME-Zarr (OME-NGFF) through ome-writers: one image per series (position).

``storage.format: ome-zarr`` writes each series to ``raw.<series>.ome.zarr`` (``raw.ome.zarr``
for a plain stream) as a (t, [c], [z], y, x) array: time is the growing axis; the numbers of
channels and z planes are the series' own where the driver names them
(``Frame.series_sizes``: a position whose sub-sequence differs, a burst with its own
channels), else the acquisition's, in the order the frames come. A frame with MDA indices
goes to the place they name; places the plan leaves out (a channel imaged without its
z-stack, ``acquire_every``) are skipped and read as zeros. Per-frame time and exposure go
into the image's metadata. Frames still in ome-writers' buffers when a process is killed
are lost; the crash-safe default is OME-TIFF (:mod:`.tiff`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smartscope.extras import needs_extra
from smartscope.frame import Frame

__all__ = ["ZarrSeriesWriter", "zarr_path"]

log = logging.getLogger(__name__)


def zarr_path(folder: Path, series: str) -> Path:
    return folder / (f"raw.{series}.ome.zarr" if series else "raw.ome.zarr")


class ZarrSeriesWriter:
    """One series' OME-Zarr stream; ``write`` puts each frame where its indices say."""

    def __init__(self, path: Path, first: Frame, sizes: Mapping[str, int], order: Sequence[str]) -> None:
        try:
            from ome_writers import AcquisitionSettings, Dimension, OmeZarrFormat, create_stream
        except ImportError as exc:  # pragma: no cover - ome-writers comes with pymmcore-plus
            raise ModuleNotFoundError(needs_extra("zarr", "storage.format ome-zarr"), name="zarr") from exc
        h, w = first.image.shape[-2:]
        if first.series_sizes:  # the series' own shape, keys outer to inner
            sizes, order = first.series_sizes, list(first.series_sizes)
        self.axes = [a for a in order if a in ("c", "z") and sizes.get(a, 1) > 1]
        self.sizes = {a: int(sizes[a]) for a in self.axes}
        dims = [Dimension(name="t", count=None, type="time")]
        dims += [
            Dimension(name=a, count=sizes[a], type="channel" if a == "c" else "space") for a in self.axes
        ]
        dims += [
            Dimension(name="y", count=int(h), type="space"),
            Dimension(name="x", count=int(w), type="space"),
        ]
        settings = AcquisitionSettings(
            root_path=str(path), dimensions=tuple(dims), dtype=str(first.image.dtype), format=OmeZarrFormat()
        )
        self.path = path
        self.shape = first.image.shape
        self.dtype = first.image.dtype
        self._stream: Any = create_stream(settings)
        self._t0 = first.camera_time_s
        self.n_frames = 0
        self.next_plane = 0  # planes (t, then c/z in ``axes`` order) written or skipped so far
        self._misplaced = 0

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

    def write(self, frame: Frame) -> int:
        """Write one frame where its indices say; returns its plane number in the stored
        array (t-major, then c, then z)."""
        plane = self.plane_of(frame)
        if plane > self.next_plane:
            self._stream.skip(frames=plane - self.next_plane)
        meta: dict[str, Any] = {"delta_t": frame.camera_time_s - self._t0, "index": frame.index}
        if frame.state is not None and frame.state.exposure_ms == frame.state.exposure_ms:  # not NaN
            meta["exposure_time"] = frame.state.exposure_ms / 1e3
        self._stream.append(frame.image, frame_metadata=meta)
        self.n_frames += 1
        self.next_plane = plane + 1
        return self._stored_plane(plane)

    def close(self) -> None:
        self._stream.close()
