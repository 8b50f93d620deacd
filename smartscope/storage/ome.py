"""OME-XML for a run's stacks, built with ome-types: one OME Image per image series.

Each stored page is a :class:`PlaneInfo` (series, its t/c/z indices, time, exposure, stage
position, pixel size, channel name). :func:`ome_xml` groups the pages of one TIFF file by
series (one series per stage position in a multi-position run), and describes each as an
Image: its size along T, C and Z, the physical pixel size (µm) from the core's pixel-size
calibration, the z step (µm) from the stage positions, the time increment (s: the plan's
interval, or the measured one where the frames share none), channel names and display
colours, a Plane per page (DeltaT, exposure, position) and TiffData mapping every plane to
its page (runs of consecutive pages in one block). The Instrument names the camera (and the
objective where known), and the run's actions go in as comment annotations, so Fiji,
napari and OMERO see the scale, the positions and what the controllers did.

:func:`describe_series` is the one place sizes and steps are derived (the OME-Zarr writer
uses it too). An index a frame does not carry is derived, not read from the page order
alone: a z-stack without a time plan is one time point, not one per plane.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ome_types import model as m

__all__ = [
    "CHANNEL_RGB",
    "MAX_ANNOTATED_ACTIONS",
    "PlaneInfo",
    "SeriesScale",
    "channel_color",
    "describe_series",
    "ome_xml",
]

MAX_ANNOTATED_ACTIONS = 1000  # more are summarised; actions.jsonl holds them all
_PIXEL_TYPES = {
    "uint8": "uint8",
    "uint16": "uint16",
    "int16": "int16",
    "uint32": "uint32",
    "float32": "float",
}


# display colours by name (napari colormap names too); a channel's comes from its dye or wavelength
CHANNEL_RGB: dict[str, tuple[int, int, int]] = {
    "blue": (0, 0, 255),
    "cyan": (0, 255, 255),
    "green": (0, 255, 0),
    "yellow": (255, 255, 0),
    "red": (255, 0, 0),
    "magenta": (255, 0, 255),
    "gray": (255, 255, 255),
}
_DYES = (  # (words in a channel name, colour); first match wins
    (("dapi", "hoechst", "bfp", "blue"), "blue"),
    (("cfp", "cyan"), "cyan"),
    (("fitc", "gfp", "alexa488", "af488", "green"), "green"),
    (("yfp", "venus", "citrine", "yellow"), "yellow"),
    (("cy5", "alexa647", "af647", "far"), "magenta"),
    (("tritc", "cy3", "rfp", "cherry", "tomato", "texas", "red"), "red"),
)


def channel_color(name: str) -> str:
    """The display colour of a channel (a :data:`CHANNEL_RGB` key): from a dye or colour
    word in its name, else from a wavelength in nm in it (405 blue … 640 magenta), else gray
    (brightfield, phase, unnamed)."""
    low = name.lower()
    for words, colour in _DYES:
        if any(w in low for w in words):
            return colour
    for num in re.findall(r"\d{3}", low):
        nm = int(num)
        if 350 <= nm <= 800:
            for edge, colour in ((430, "blue"), (470, "cyan"), (530, "green"), (555, "yellow"), (620, "red")):
                if nm < edge:
                    return colour
            return "magenta"
    return "gray"


@dataclass(slots=True)
class PlaneInfo:
    """One stored page, as the OME header describes it."""

    delta_t_s: float
    exposure_ms: float | None
    channel: str
    series: str = ""
    t: int | None = None  # MDA indices when the frame has them (else derived from the order)
    c: int | None = None
    z: int | None = None
    x_um: float | None = None
    y_um: float | None = None
    z_um: float | None = None
    pixel_size_um: float | None = None
    interval_s: float | None = None  # the time-lapse interval the frame was taken on, if any


def _indices(planes: Sequence[PlaneInfo]) -> tuple[list[tuple[int, int, int]], list[str]]:
    """(t, c, z) per plane and the channel names by c. An index the frame does not carry
    is derived: c from the order channel names first appear, z = 0, and t = how many
    earlier planes of the series sit at the same (c, z) (a z-stack without a time plan is
    one time point; a plain stream whose channels cycle advances t once per round)."""
    names: dict[int, str] = {}
    order = list(dict.fromkeys(p.channel for p in planes)) or [""]
    seen: dict[tuple[int, int], int] = {}
    out = []
    for p in planes:
        c = p.c if p.c is not None else order.index(p.channel)
        names.setdefault(c, p.channel)
        z = p.z if p.z is not None else 0
        if p.t is not None:
            t = p.t
        else:
            t = seen.get((c, z), 0)
            seen[(c, z)] = t + 1
        out.append((t, c, z))
    n_c = max(c for _, c, _ in out) + 1
    return out, [names.get(c, f"c{c}") or f"c{c}" for c in range(n_c)]


def _plane_fields(p: PlaneInfo) -> dict[str, Any]:
    """A Plane's optional fields, with their units, only where known."""
    out: dict[str, Any] = {"delta_t": p.delta_t_s, "delta_t_unit": m.UnitsTime.SECOND}
    if p.exposure_ms is not None:
        out.update(exposure_time=p.exposure_ms, exposure_time_unit=m.UnitsTime.MILLISECOND)
    for axis, value in (("x", p.x_um), ("y", p.y_um), ("z", p.z_um)):
        if value is not None:
            out[f"position_{axis}"] = value
            out[f"position_{axis}_unit"] = m.UnitsLength.MICROMETER
    return out


def _z_step(planes: Sequence[PlaneInfo], idx: Sequence[tuple[int, int, int]]) -> float | None:
    """The z step: the median difference of stage z between consecutive z indices."""
    by_z: dict[int, list[float]] = {}
    for p, (_, _, z) in zip(planes, idx, strict=True):
        if p.z_um is not None:
            by_z.setdefault(z, []).append(p.z_um)
    zs = sorted(by_z)
    if len(zs) < 2:
        return None
    means = [float(np.mean(by_z[z])) for z in zs]
    steps = np.diff(means) / np.diff(zs)
    step = float(np.median(np.abs(steps)))
    return step if step > 0 else None


def _time_increment(planes: Sequence[PlaneInfo], idx: Sequence[tuple[int, int, int]]) -> float | None:
    """The time step: the interval the planes were taken on where they share one (a plan's
    or the acquisition's; each plane's own time is its DeltaT), else the median difference
    of the first plane's time between consecutive time indices; None with one time point."""
    first: dict[int, float] = {}
    for p, (t, _, _) in zip(planes, idx, strict=True):
        first[t] = min(first.get(t, p.delta_t_s), p.delta_t_s)
    ts = sorted(first)
    if len(ts) < 2:
        return None
    nominal = [p.interval_s or 0.0 for p in planes]
    if min(nominal) > 0 and np.ptp(nominal) <= 1e-6 * max(nominal):
        return round(float(np.median(nominal)), 9)  # schedules carry float noise (0.09999999999999997)
    steps = np.diff([first[t] for t in ts]) / np.diff(ts)
    step = float(np.median(steps))
    return step if step > 0 else None


@dataclass(frozen=True, slots=True)
class SeriesScale:
    """What one image series' planes say of its dimensions and scale (both formats' headers).

    Attributes
    ----------
    indices : (t, c, z) per plane, in the order given
    sizes : (T, C, Z)
    channels : one name per channel index
    pixel_size_um, z_step_um, time_step_s : None where the planes do not tell
    """

    indices: tuple[tuple[int, int, int], ...]
    sizes: tuple[int, int, int]
    channels: tuple[str, ...]
    pixel_size_um: float | None
    z_step_um: float | None
    time_step_s: float | None


def describe_series(planes: Sequence[PlaneInfo]) -> SeriesScale:
    """Indices, sizes, channel names, pixel size, z step and time step of one series."""
    idx, names = _indices(planes)
    sizes = (max(v[0] for v in idx) + 1, max(v[1] for v in idx) + 1, max(v[2] for v in idx) + 1)
    return SeriesScale(
        indices=tuple(idx),
        sizes=sizes,
        channels=tuple(names),
        pixel_size_um=next((p.pixel_size_um for p in planes if p.pixel_size_um), None),
        z_step_um=_z_step(planes, idx),
        time_step_s=_time_increment(planes, idx),
    )


def _tiff_blocks(
    pages: Sequence[int], idx: Sequence[tuple[int, int, int]], single_plane_per_t: bool
) -> list[m.TiffData]:
    """One TiffData per page; with one channel and one z, consecutive pages of consecutive
    time points (a plain time series) share one block."""
    blocks: list[m.TiffData] = []
    start = 0
    for k in range(1, len(pages) + 1):
        run_on = k < len(pages) and single_plane_per_t
        if run_on and pages[k] == pages[k - 1] + 1 and idx[k][0] == idx[k - 1][0] + 1:
            continue
        t, c, z = idx[start]
        blocks.append(m.TiffData(ifd=pages[start], first_t=t, first_c=c, first_z=z, plane_count=k - start))
        start = k
    return blocks


def ome_xml(
    name: str,
    planes: Sequence[PlaneInfo],
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    camera: str = "",
    objective: str = "",
    actions: Sequence[str] = (),
) -> str:
    """The OME-XML of one TIFF file whose pages are ``planes`` (in page order)."""
    h, w = int(shape[-2]), int(shape[-1])
    series = list(dict.fromkeys(p.series for p in planes)) or [""]
    instrument = m.Instrument(
        id="Instrument:0",
        detectors=[m.Detector(id="Detector:0", model=camera or None)],
        objectives=[m.Objective(id="Objective:0", model=objective)] if objective else [],
    )
    images = []
    for s_i, s in enumerate(series):
        mine = [(k, p) for k, p in enumerate(planes) if p.series == s]
        scale = describe_series([p for _, p in mine])
        idx, sizes, px = scale.indices, scale.sizes, scale.pixel_size_um
        pixels = m.Pixels(
            id=f"Pixels:{s_i}",
            dimension_order=m.Pixels_DimensionOrder.XYZCT,
            type=m.PixelType(_PIXEL_TYPES.get(str(dtype), str(dtype))),
            size_x=w,
            size_y=h,
            size_t=sizes[0],
            size_c=sizes[1],
            size_z=sizes[2],
            physical_size_x=px,
            physical_size_x_unit=m.UnitsLength.MICROMETER,
            physical_size_y=px,
            physical_size_y_unit=m.UnitsLength.MICROMETER,
            physical_size_z=scale.z_step_um,
            physical_size_z_unit=m.UnitsLength.MICROMETER,
            time_increment=scale.time_step_s,
            time_increment_unit=m.UnitsTime.SECOND,
            channels=[
                m.Channel(
                    id=f"Channel:{s_i}:{c}",
                    name=n or None,
                    samples_per_pixel=1,
                    color=m.Color(CHANNEL_RGB[channel_color(n)]),
                )
                for c, n in enumerate(scale.channels)
            ],
            tiff_data_blocks=_tiff_blocks([k for k, _ in mine], idx, sizes[1] == sizes[2] == 1),
            planes=[
                m.Plane(the_t=t, the_c=c, the_z=z, **_plane_fields(p))
                for (_, p), (t, c, z) in zip(mine, idx, strict=True)
            ],
        )
        label = f"{name} {s}".strip()
        images.append(
            m.Image(
                id=f"Image:{s_i}",
                name=label,
                pixels=pixels,
                instrument_ref=m.InstrumentRef(id="Instrument:0"),
            )
        )
    notes = [
        m.CommentAnnotation(id=f"Annotation:{i}", value=a)
        for i, a in enumerate(actions[:MAX_ANNOTATED_ACTIONS])
    ]
    if len(actions) > MAX_ANNOTATED_ACTIONS:
        notes.append(
            m.CommentAnnotation(
                id=f"Annotation:{len(notes)}",
                value=f"{len(actions) - MAX_ANNOTATED_ACTIONS} more actions in actions.jsonl",
            )
        )
    ome = m.OME(
        creator="smartscope",
        images=images,
        instruments=[instrument],
        structured_annotations=m.StructuredAnnotations(comment_annotations=notes) if notes else None,
    )
    return ome.to_xml()
