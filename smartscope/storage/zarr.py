"""Raw frames as OME-Zarr (OME-NGFF) through ome-writers: one image per series (position).

``storage.format: ome-zarr`` writes each series to ``raw.<series>.ome.zarr`` (``raw.ome.zarr``
for a plain stream) as a (t, [c], [z], y, x) array: time is the growing axis, channels and
z planes come from the acquisition (their order from the MDA's axis order), and frames are
appended in the order they were taken. Per-frame time and exposure go into the image's
metadata. Frames still in ome-writers' buffers when a process is killed are lost; the
crash-safe default is OME-TIFF (:mod:`.tiff`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smartscope.extras import needs_extra
from smartscope.frame import Frame

__all__ = ["ZarrSeriesWriter", "zarr_path"]


def zarr_path(folder: Path, series: str) -> Path:
    return folder / (f"raw.{series}.ome.zarr" if series else "raw.ome.zarr")


class ZarrSeriesWriter:
    """One series' OME-Zarr stream; ``write`` appends frames in acquisition order."""

    def __init__(self, path: Path, first: Frame, sizes: Mapping[str, int], order: Sequence[str]) -> None:
        try:
            from ome_writers import AcquisitionSettings, Dimension, OmeZarrFormat, create_stream
        except ImportError as exc:  # pragma: no cover - ome-writers comes with pymmcore-plus
            raise ModuleNotFoundError(needs_extra("zarr", "storage.format ome-zarr"), name="zarr") from exc
        h, w = first.image.shape[-2:]
        self.axes = [a for a in order if a in ("c", "z") and sizes.get(a, 1) > 1]
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

    def accepts(self, frame: Frame) -> bool:
        return frame.image.shape == self.shape and frame.image.dtype == self.dtype

    def write(self, frame: Frame) -> int:
        """Append one frame; returns its plane number in this series."""
        meta: dict[str, Any] = {"delta_t": frame.camera_time_s - self._t0, "index": frame.index}
        if frame.state is not None and frame.state.exposure_ms == frame.state.exposure_ms:  # not NaN
            meta["exposure_time"] = frame.state.exposure_ms / 1e3
        self._stream.append(frame.image, frame_metadata=meta)
        self.n_frames += 1
        return self.n_frames - 1

    def close(self) -> None:
        self._stream.close()
