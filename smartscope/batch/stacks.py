"""Recorded stacks as inputs of offline commands: found, described, read a few frames at a time.

An input named on the command line is a TIFF / OME-TIFF file, a glob, a run folder (its
``raw*.ome.tif`` or ``raw*.ome.zarr``), an OME-Zarr image (v0.4 or v0.5), or a folder
holding any of those. Each image series becomes one :class:`Stack` (an OME-TIFF with one
series per stage position gives one stack per position, named ``<file>.<series>``):
frames × channels × (Y, X), the axes the frames run over, channel names and the physical
pixel size when the file records them.

Invariants:

* reading never loads more than the frames asked for (TIFF page by page, Zarr by
  slices), so memory stays constant whatever the size of the stack;
* frame ``i`` of a stack is the same plane for every reader in every process: frames are
  numbered in C order over the frame axes (all axes but channel, Y and X);
* a :class:`Stack` is small and picklable; Dask workers reopen the file themselves;
* bad input raises :class:`StackError` with one line naming the input and the reason.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smartscope.exceptions import UserError

__all__ = [
    "Stack",
    "StackError",
    "StackReader",
    "open_stack",
    "open_zarr_array",
    "resolve_inputs",
]

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
_UNIT_UM = {
    "m": 1e6,
    "meter": 1e6,
    "mm": 1e3,
    "millimeter": 1e3,
    "µm": 1.0,
    "um": 1.0,
    "\\u00b5m": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
}


class StackError(UserError, ValueError):
    """An input that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class Stack:
    """One recorded stack: where it is, its layout, and what it records about its scale.

    Attributes
    ----------
    path : Path
        The TIFF file or the OME-Zarr image folder.
    name : str
        Unique among the inputs of one command; names its outputs.
    kind : "tiff" or "zarr"
    frame_axes : str
        Axes the frames run over, in file order (e.g. ``"T"``, ``"TZ"``; ``"I"`` or ``"Q"``
        for a plain multi-page TIFF).
    frame_shape : tuple of int
        Sizes of ``frame_axes``; ``n_frames`` is their product.
    channels : tuple of str
        One name per channel ("" where the file names none).
    height, width : int
    dtype : str
    pixel_size_um : (y, x) in µm, or None when the file does not record it.
    """

    path: Path
    name: str
    kind: Literal["tiff", "zarr"]
    frame_axes: str
    frame_shape: tuple[int, ...]
    channels: tuple[str, ...]
    height: int
    width: int
    dtype: str
    pixel_size_um: tuple[float, float] | None = None
    # how frames map onto the file: the file's non-YX axes (including C) and their sizes
    lead_axes: str = ""
    lead_shape: tuple[int, ...] = ()
    zarr_dataset: str = "0"
    series: int = 0  # the TIFF series (an OME Image: one per stage position)

    @property
    def n_frames(self) -> int:
        return math.prod(self.frame_shape)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def describe(self) -> str:
        px = (
            f", pixel {self.pixel_size_um[1]:.4g} µm"
            if self.pixel_size_um is not None
            else ", pixel size not recorded"
        )
        return (
            f"{self.path} ({self.kind}, {self.n_frames} frames over {self.frame_axes}, "
            f"{self.n_channels} channel(s), {self.height}×{self.width} {self.dtype}{px})"
        )

    def page_of(self, frame: int, channel: int) -> int:
        """TIFF page (index in the series) of ``channel`` of ``frame``."""
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"{self.path}: frame {frame} outside 0..{self.n_frames - 1}")
        frame_idx = np.unravel_index(frame, self.frame_shape) if self.frame_shape else ()
        full: list[int] = []
        k = 0
        for ax in self.lead_axes:
            if ax == "C":
                full.append(channel)
            else:
                full.append(int(frame_idx[k]))
                k += 1
        return int(np.ravel_multi_index(full, self.lead_shape)) if self.lead_shape else 0


class StackReader:
    """Reads frames of one :class:`Stack`; use as a context manager (closes the file)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._tif: Any = None
        self._series: Any = None
        self._zarr: Any = None
        self._zaxes: str = ""
        if stack.kind == "tiff":
            import tifffile

            try:
                self._tif = tifffile.TiffFile(stack.path)
            except Exception as exc:
                raise StackError(f"{stack.path}: not a readable TIFF ({exc})") from exc
            self._series = self._tif.series[stack.series]
        else:
            self._zarr, self._zaxes = open_zarr_array(stack.path, stack.zarr_dataset)

    def __enter__(self) -> StackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def frame(self, i: int, channels: Sequence[int] | None = None) -> np.ndarray:
        """Frame ``i`` as ``(C, Y, X)`` in the file's dtype (``channels``: a subset, in order)."""
        s = self.stack
        chans = list(range(s.n_channels)) if channels is None else list(channels)
        if s.kind == "tiff":
            planes = []
            pages = self._series.pages
            for c in chans:
                k = s.page_of(i, c)
                page = pages[k] if k < len(pages) else None
                if page is None:
                    raise StackError(
                        f"{s.path}: frame {i} channel {c}: plane {k} is missing from the file "
                        "(truncated? `smartscope recover` finishes a killed run's files)"
                    )
                planes.append(page.asarray())
            return np.stack(planes)
        idx = np.unravel_index(i, s.frame_shape) if s.frame_shape else ()
        key: list[Any] = []
        k = 0
        for ax in self._zaxes:
            if ax in "YX" or ax == "C":
                key.append(slice(None))
            else:
                key.append(int(idx[k]))
                k += 1
        arr = np.asarray(self._zarr[tuple(key)])
        if "C" not in self._zaxes:
            arr = arr[None]
        return arr[chans]

    def frames(
        self, start: int, stop: int, channels: Sequence[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, (C, Y, X) frame)`` for frames ``start <= index < stop``, one at a time."""
        for i in range(start, stop):
            yield i, self.frame(i, channels)


def open_stack(stack: Stack) -> StackReader:
    return StackReader(stack)


# ----------------------------------------------------------------------- describing files


def _unit_um(unit: str | None, default: float = 1.0) -> float | None:
    if unit is None or unit == "":
        return default
    return _UNIT_UM.get(str(unit).strip().lower())


def _ome_info(xml: str) -> list[tuple[tuple[str, ...] | None, tuple[float, float] | None, str]]:
    """Per OME image: channel names, (y, x) pixel size in µm, and a short series label
    (the last word of the image's name: ``raw p1`` → ``p1``; else ``s<k>``)."""
    import tifffile

    try:
        images = tifffile.xml2dict(xml)["OME"]["Image"]
    except Exception:
        return []
    out = []
    for k, image in enumerate(images if isinstance(images, list) else [images]):
        pixels = image.get("Pixels", {})
        chans = pixels.get("Channel")
        names: tuple[str, ...] | None = None
        if chans is not None:
            chans = chans if isinstance(chans, list) else [chans]
            names = tuple(str(c.get("Name", "")) for c in chans)
        px: tuple[float, float] | None = None
        if "PhysicalSizeX" in pixels:
            fx = _unit_um(pixels.get("PhysicalSizeXUnit"))
            sy = pixels.get("PhysicalSizeY", pixels["PhysicalSizeX"])
            fy = _unit_um(pixels.get("PhysicalSizeYUnit", pixels.get("PhysicalSizeXUnit")))
            if fx is not None and fy is not None:
                px = (float(sy) * fy, float(pixels["PhysicalSizeX"]) * fx)
        words = str(image.get("Name", "")).split()
        out.append((names, px, words[-1] if words else f"s{k}"))
    return out


def _imagej_pixel_um(tif: Any) -> tuple[float, float] | None:
    meta = tif.imagej_metadata or {}
    factor = _unit_um(meta.get("unit"), default=0.0)
    if not factor:
        return None
    try:
        rx, ry = tif.pages.first.get_resolution()
    except Exception:
        return None
    if not rx or not ry:
        return None
    return (factor / float(ry), factor / float(rx))


def _describe_tiff(path: Path, name: str) -> list[Stack]:
    """One stack per image series of a TIFF (``<name>.<series>`` when there are several)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise StackError(f"{path}: holds no images")
            ome: list[tuple[tuple[str, ...] | None, tuple[float, float] | None, str]] = []
            if tif.is_ome and tif.ome_metadata:
                ome = _ome_info(tif.ome_metadata)
            imagej_px = _imagej_pixel_um(tif) if tif.is_imagej else None
            found = [(str(s.axes), tuple(int(n) for n in s.shape), str(s.dtype)) for s in tif.series]
    except StackError:
        raise
    except Exception as exc:
        raise StackError(f"{path}: not a readable TIFF ({exc})") from exc
    stacks = []
    for k, (axes, shape, dtype) in enumerate(found):
        names, px, label = ome[k] if k < len(ome) else (None, imagej_px, f"s{k}")
        if "S" in axes:
            raise StackError(f"{path}: RGB / multi-sample pixels (axes {axes}) are not camera frames")
        if not axes.endswith("YX"):
            raise StackError(f"{path}: axes {axes!r} do not end in YX")
        lead_axes, lead_shape = axes[:-2], shape[:-2]
        if lead_axes.count("C") > 1:
            raise StackError(f"{path}: axes {axes!r} name more than one channel axis")
        n_c = lead_shape[lead_axes.index("C")] if "C" in lead_axes else 1
        frame_axes = "".join(a for a in lead_axes if a != "C")
        frame_shape = tuple(n for a, n in zip(lead_axes, lead_shape, strict=True) if a != "C")
        if not frame_axes:
            frame_axes, frame_shape = "T", (1,)
        channels = names if names is not None and len(names) == n_c else ("",) * n_c
        stacks.append(
            Stack(
                path=path,
                name=name if len(found) == 1 else f"{name}.{label}",
                kind="tiff",
                frame_axes=frame_axes,
                frame_shape=frame_shape,
                channels=tuple(channels),
                height=shape[-2],
                width=shape[-1],
                dtype=dtype,
                pixel_size_um=px,
                lead_axes=lead_axes,
                lead_shape=lead_shape,
                series=k,
            )
        )
    return stacks


def _zarr_multiscales(path: Path) -> tuple[Any, dict[str, Any], str] | None:
    """(group, multiscales[0], image group path) of an OME-Zarr image, or None."""
    try:
        import zarr
    except ImportError as exc:
        raise StackError(
            f"{path}: reading OME-Zarr needs the 'zarr' package: pip install 'smartscope[zarr]'"
        ) from exc
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:
        return None
    for sub in ("", "0"):  # an image, or a bioformats2raw layout whose first image is "0"
        try:
            g = group if sub == "" else group[sub]
        except Exception:
            continue
        attrs: dict[str, Any] = dict(g.attrs)
        ms = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
        if ms:
            return g, dict(ms[0]), sub
    return None


def open_zarr_array(path: Path, dataset: str = "0") -> tuple[Any, str]:
    """The array of one resolution level of an OME-Zarr image and its axes (``"TCZYX"``)."""
    found = _zarr_multiscales(path)
    if found is None:
        raise StackError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    g, ms, _sub = found
    axes = "".join(str(a["name"] if isinstance(a, dict) else a).upper() for a in ms["axes"])
    return g[dataset], axes


def _describe_zarr(path: Path, name: str) -> Stack:
    found = _zarr_multiscales(path)
    if found is None:
        raise StackError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    g, ms, _sub = found
    try:
        axes_meta = [a if isinstance(a, dict) else {"name": a} for a in ms["axes"]]
        axes = "".join(str(a["name"]).upper() for a in axes_meta)
        ds = ms["datasets"][0]
        arr = g[ds["path"]]
    except Exception as exc:
        raise StackError(f"{path}: malformed OME-Zarr multiscales metadata ({exc})") from exc
    if not axes.endswith("YX") or len(axes) != len(arr.shape):
        raise StackError(f"{path}: axes {axes!r} do not match its array of shape {arr.shape} ending in YX")
    scale = [1.0] * len(axes)
    for tf in [*ds.get("coordinateTransformations", []), *ms.get("coordinateTransformations", [])]:
        if tf.get("type") == "scale":
            scale = [a * float(b) for a, b in zip(scale, tf["scale"], strict=True)]
    units = [a.get("unit") for a in axes_meta]
    px: tuple[float, float] | None = None
    if units[-1] is not None or any(s != 1.0 for s in scale[-2:]):
        fy, fx = _unit_um(units[-2]), _unit_um(units[-1])
        if fy is not None and fx is not None:
            px = (scale[-2] * fy, scale[-1] * fx)
    shape = tuple(int(n) for n in arr.shape)
    n_c = shape[axes.index("C")] if "C" in axes else 1
    labels: tuple[str, ...] = ("",) * n_c
    omero = dict(g.attrs).get("omero") or dict(g.attrs).get("ome", {}).get("omero")
    if omero and len(omero.get("channels", [])) == n_c:
        labels = tuple(str(c.get("label", "")) for c in omero["channels"])
    frame_axes = "".join(a for a in axes[:-2] if a != "C")
    frame_shape = tuple(n for a, n in zip(axes[:-2], shape[:-2], strict=True) if a != "C")
    if not frame_axes:
        frame_axes, frame_shape = "T", (1,)
    return Stack(
        path=path,
        name=name,
        kind="zarr",
        frame_axes=frame_axes,
        frame_shape=frame_shape,
        channels=labels,
        height=shape[-2],
        width=shape[-1],
        dtype=str(arr.dtype),
        pixel_size_um=px,
        lead_axes=axes[:-2],
        lead_shape=shape[:-2],
        zarr_dataset=str(ds["path"]),
    )


# ----------------------------------------------------------------------- finding inputs


def _is_zarr_dir(p: Path) -> bool:
    return p.is_dir() and (p.suffix == ".zarr" or (p / ".zattrs").is_file() or (p / "zarr.json").is_file())


def _run_raw_files(p: Path) -> list[Path]:
    """A run folder's raw files (OME-TIFF, or OME-Zarr: one image per series)."""
    if not (p / "frames.jsonl").is_file():
        return sorted(p.glob("raw*.ome.tif"))
    return sorted(p.glob("raw*.ome.tif")) + sorted(q for q in p.glob("raw*.ome.zarr") if q.is_dir())


def _kind(p: Path) -> Literal["tiff", "zarr"]:
    return "zarr" if p.is_dir() else "tiff"


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", *TIFF_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def _candidates(arg: str) -> list[tuple[Path, str, str]]:
    """(path, kind, proposed name) for one command-line input."""
    p = Path(arg)
    if p.is_file():
        if p.suffix.lower() not in TIFF_SUFFIXES:
            raise StackError(f"{p}: not a TIFF (.tif/.tiff) file or an OME-Zarr folder")
        runs = _run_raw_files(p.parent)
        in_run = p in runs and (p.parent / "frames.jsonl").is_file()
        return [(p, "tiff", _run_name(p) if in_run else _stem(p))]
    if p.is_dir():
        if _is_zarr_dir(p):
            in_run = p in _run_raw_files(p.parent)
            return [(p, "zarr", _run_name(p) if in_run else _stem(p))]
        runs = _run_raw_files(p)
        if runs:
            return [(r, _kind(r), _run_name(r)) for r in runs]
        found: list[tuple[Path, str, str]] = []
        for child in sorted(p.iterdir()):
            if child.is_file() and child.suffix.lower() in TIFF_SUFFIXES:
                found.append((child, "tiff", _stem(child)))
            elif child.is_dir() and _is_zarr_dir(child):
                found.append((child, "zarr", _stem(child)))
            elif child.is_dir() and _run_raw_files(child):
                child_runs = _run_raw_files(child)
                found += [(r, _kind(r), _run_name(r)) for r in child_runs]
        if not found:
            raise StackError(f"{p}: folder holds no TIFF stacks, OME-Zarr images or run folders")
        return found
    if any(ch in arg for ch in "*?["):
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise StackError(f"{arg}: no file matches this pattern")
        out: list[tuple[Path, str, str]] = []
        for m in matches:
            out += _candidates(m)
        return out
    raise StackError(f"{p}: does not exist")


def _run_name(raw: Path) -> str:
    """A run folder's stack is named after the run (``raw_001`` adds its number, an
    OME-Zarr ``raw.p1`` its series)."""
    run = raw.parent.name
    tail = _stem(raw).removeprefix("raw.")
    return run if tail == "raw" else f"{run}.{tail}"


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Stack]:
    """Every stack the inputs name, described, in the order given, each named uniquely."""
    if not inputs:
        raise StackError("no inputs given")
    seen_paths: set[Path] = set()
    stacks: list[Stack] = []
    names: dict[str, int] = {}
    for arg in inputs:
        for path, kind, name in _candidates(str(arg)):
            key = path.resolve()
            if key in seen_paths:
                continue
            seen_paths.add(key)
            n = names.get(name, 0)
            names[name] = n + 1
            unique = name if n == 0 else f"{name}-{n + 1}"
            found = _describe_tiff(path, unique) if kind == "tiff" else [_describe_zarr(path, unique)]
            for stack in found:
                if stack.n_frames == 0:
                    raise StackError(f"{path}: holds no frames")
                stacks.append(stack)
    return stacks


def with_pixel_size(stack: Stack, pixel_size_um: float | None) -> Stack:
    """The stack with its pixel size set (only where the file does not record one)."""
    if stack.pixel_size_um is not None or pixel_size_um is None:
        return stack
    return replace(stack, pixel_size_um=(pixel_size_um, pixel_size_um))


def safe_name(name: str) -> str:
    """A file-system-safe version of a stack name."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
