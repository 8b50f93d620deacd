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
stage's step, t in seconds at the interval as kept, and an ``omero`` block naming each
channel with its display colour. Per-frame time, exposure and stage position go into
ome-writers' frame metadata. Steps, names and colours are written when the series is
closed (they are measured from its frames). Frames still in ome-writers' buffers when a
process is killed are lost; the crash-safe default is OME-TIFF (:mod:`.tiff`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.extras import needs_extra
from smartscope.frame import Frame
from smartscope.storage.ome import CHANNEL_RGB, PlaneInfo, channel_color, describe_series

__all__ = ["ZarrSeriesWriter", "preload", "zarr_path"]

log = logging.getLogger(__name__)


def preload() -> None:
    """Import ome-writers and its array backend now, before frames flow: imported by the
    writer thread at the first frame, they held the interpreter for 0.6-3 s and stalled
    the acquisition (a 0.1 s time plan kept 2.6 s late on this 2-core machine)."""
    try:
        import ome_writers  # noqa: F401
        import tensorstore  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(needs_extra("zarr", "storage.format ome-zarr"), name="zarr") from exc


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
            root_path=str(path), dimensions=tuple(dims), dtype=str(first.image.dtype), format=OmeZarrFormat()
        )
        self.path = path
        self.shape = first.image.shape
        self.dtype = first.image.dtype
        self._stream: Any = create_stream(settings)
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
        array (t-major, then c, then z). ``plane_info`` is what the OME header would say
        of it (its time since the run's first frame, exposure and stage position go into
        the frame metadata)."""
        plane = self.plane_of(frame)
        if plane > self.next_plane:
            self._stream.skip(frames=plane - self.next_plane)
        meta: dict[str, Any] = {"delta_t": plane_info.delta_t_s, "index": frame.index}
        if plane_info.exposure_ms is not None:
            meta["exposure_time"] = plane_info.exposure_ms / 1e3
        for axis in ("x", "y", "z"):
            value = getattr(plane_info, f"{axis}_um")
            if value is not None:
                meta[f"position_{axis}"] = value
        self._stream.append(frame.image, frame_metadata=meta)
        self.planes.append(plane_info)
        self.n_frames += 1
        self.next_plane = plane + 1
        return self._stored_plane(plane)

    def _describe(self) -> None:
        """Write the measured steps (t, z), the pixel size and the channels' names and
        colours into the image's metadata (module doc)."""
        if not self.planes:
            return
        scale = describe_series(self.planes)
        meta = self._stream.get_metadata()
        for attrs in meta.values():
            ome = attrs.get("ome", attrs)
            for ms in ome.get("multiscales", []):
                names = [a["name"] for a in ms["axes"]]
                steps = {"t": scale.time_step_s, "z": scale.z_step_um}
                steps.update(y=scale.pixel_size_um, x=scale.pixel_size_um)
                for ds in ms["datasets"]:
                    for tf in ds.get("coordinateTransformations", []):
                        if tf.get("type") == "scale":
                            tf["scale"] = [
                                float(steps.get(n) or v) for n, v in zip(names, tf["scale"], strict=True)
                            ]
            n_c = self.sizes.get("c", 1)
            labels = list(scale.channels) + [f"c{c}" for c in range(len(scale.channels), n_c)]
            info = np.iinfo(self.dtype) if self.dtype.kind in "ui" else np.finfo(self.dtype)
            window = {"min": float(info.min), "max": float(info.max), "start": 0.0, "end": float(info.max)}
            ome["omero"] = {
                "channels": [
                    {
                        "label": label,
                        "color": "{:02X}{:02X}{:02X}".format(*CHANNEL_RGB[channel_color(label)]),
                        "window": window,
                        "active": True,
                    }
                    for label in labels[:n_c]
                ]
            }
        self._stream.update_metadata(meta)

    def close(self) -> None:
        try:
            self._describe()
        finally:
            self._stream.close()
