"""Run folders, OME files and localization tables as napari layer data (no napari, no Qt here).

A run folder (raw frames in OME-TIFF or OME-Zarr) becomes layers on the named axes
``(t, p, z, y, x)``, time in s, z, y and x in µm (``units`` set on every layer):

* one image layer per channel, named by it (``DAPI``, ``FITC``; ``raw`` for an unnamed
  one): each frame at its own (t, c, z) and its series' place on ``p`` (positions and grid
  tiles of the plan, in order); what a ragged plan leaves out reads as zeros. A series with
  its own shape (a burst: ``FITC p0-burst1``) or a later raw file of another frame size gets
  layers of its own. Frames are read one plane at a time when napari asks (a lazy dask
  array), so a run larger than memory opens at once;
* ``<stage>.<output>`` per engine output (its channels named as the output's OME header
  names them): shown at every plane as the newest output of a frame at or before it (what
  the live loop showed);
* ``superres`` renders at their own calibrated pixel size;
* ``localizations``: a Points layer at (t, p, z, y, x) with photons, precision and
  probability as features (the final table, or the live columnar rows of a run that died);
* ``run events`` (start, faults, safe state, pause, stop) and detected events on the time
  axis, and ``actions`` at the first frame each applied action was in force, with the
  audit record as features (:func:`action_rows` gives the table the dock widget shows).

Each frame's (t, c, z) and each series' steps come from :func:`smartscope.storage.describe_series`,
the function the OME headers are written with. The camera pixel size comes from, in order: a
``pixel_size_um`` in the frame records, the raw file's own metadata, the SMLM stage or engine
bundle in ``config.yaml``, the virtual microscope's 0.1 µm; otherwise layers stay in pixels
and say so. Localizations are placed so that a molecule at the centre of pixel (i, j) sits on
that pixel's centre in napari (tables count from the pixel's outer corner).

An OME-TIFF or OME-Zarr image opened alone gives one layer per channel (and series), on the
file's own axes with its physical sizes. Table files (ThunderSTORM or smartscope CSV,
Picasso HDF5) become a Points layer in µm.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.exceptions import InvalidValue

__all__ = [
    "AXES",
    "LayerData",
    "action_rows",
    "camera_pixel_size_um",
    "is_ome_image",
    "is_run_folder",
    "is_table_file",
    "ome_layers",
    "run_layers",
    "table_layers",
]

LayerData = tuple[Any, dict[str, Any], str]
AXES = ("t", "p", "z", "y", "x")  # a run's named axes (channels are layers)
_VIRTUAL_PIXEL_UM = 0.1  # smartscope.simulators.microscope.VirtualMicroscope's default
_PLAN_SERIES = re.compile(r"(p\d+(-g\d+)?)?")  # a plan's positions and grid tiles share the p axis


def _raw_files(p: Path) -> list[Path]:
    return sorted(p.glob("raw*.ome.tif")) + sorted(q for q in p.glob("raw*.ome.zarr") if q.is_dir())


def is_run_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "frames.jsonl").is_file() and bool(_raw_files(p))


def is_ome_image(path: str | Path) -> bool:
    """An OME-TIFF file, or an OME-Zarr image folder that is not inside a run."""
    p = Path(path)
    name = p.name.lower()
    if p.is_file():
        return name.endswith((".ome.tif", ".ome.tiff"))
    return p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zattrs").is_file())


def is_table_file(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix == ".hdf5":
        import h5py

        try:
            with h5py.File(p, "r") as f:
                return "locs" in f
        except OSError:
            return False
    if p.suffix == ".csv":
        with p.open(encoding="utf-8", errors="replace") as fh:
            head = fh.readline()
        return "x [nm]" in head or head.startswith("frame,x_nm,y_nm")
    return False


def _jsonl(path: Path) -> list[dict[str, Any]]:
    from smartscope.storage import read_jsonl

    return read_jsonl(path)


def camera_pixel_size_um(run_dir: Path, frames: list[dict[str, Any]] | None = None) -> float | None:
    """The camera pixel in the sample plane (µm), from the run's own records (see module doc)."""
    import yaml

    from smartscope.batch.stacks import StackError, resolve_inputs

    recs = frames if frames is not None else _jsonl(run_dir / "frames.jsonl")[:1]
    for r in recs[:1]:
        v = (r.get("state") or {}).get("pixel_size_um") or r.get("pixel_size_um")
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    for raw in _raw_files(run_dir)[:1]:
        try:
            px = resolve_inputs([raw])[0].pixel_size_um
        except (StackError, IndexError):
            px = None
        if px:
            return px[1]
    cfg_path = run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    cfg = cfg or {}
    for st in (cfg.get("pipeline") or {}).get("stages", []):
        if st.get("kind") == "smlm" and st.get("pixel_size_um"):
            return float(st["pixel_size_um"])
        if st.get("kind") in ("engine", "stain") and st.get("bundle"):
            try:
                from smartscope.engines.bundle import load_bundle

                px_b = load_bundle(st["bundle"]).manifest.pixel_size_um
            except Exception:
                px_b = None
            if px_b:
                return float(px_b)
    if (cfg.get("microscope") or {}).get("config_file") == "virtual":
        return _VIRTUAL_PIXEL_UM
    return None


# ----------------------------------------------------------------------- reading planes


def _plane_reader(path: Path) -> tuple[Callable[[int], np.ndarray], tuple[int, int], np.dtype[Any]]:
    """Read plane ``k`` of a raw file (a TIFF page; an OME-Zarr plane counted t-major, as
    ``frames.jsonl`` counts them), its (height, width) and dtype."""
    if path.is_dir():
        from smartscope.batch.stacks import open_zarr_array

        arr, _axes = open_zarr_array(path)
        lead = tuple(int(n) for n in arr.shape[:-2])

        def read_zarr(k: int) -> np.ndarray:
            return np.asarray(arr[tuple(int(i) for i in np.unravel_index(k, lead))])

        return read_zarr, (int(arr.shape[-2]), int(arr.shape[-1])), np.dtype(arr.dtype)
    import tifffile

    with tifffile.TiffFile(path) as tif:
        first = tif.pages.first
        shape, dtype = (int(first.shape[0]), int(first.shape[1])), np.dtype(first.dtype)

    def read_tiff(k: int) -> np.ndarray:
        with tifffile.TiffFile(path) as tif:
            return np.asarray(tif.pages[k].asarray())

    return read_tiff, shape, dtype


def _lazy(
    cells: list[tuple[Callable[[int], np.ndarray], int] | None],
    lead: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
) -> Any:
    """A dask array of shape ``lead + shape``: cell k reads its plane when napari asks, or
    is zeros where nothing was taken."""
    import dask.array as da
    from dask.delayed import delayed

    parts = [
        da.from_delayed(delayed(cell[0])(cell[1]), shape=shape, dtype=dtype)
        if cell is not None
        else da.zeros(shape, dtype=dtype)
        for cell in cells
    ]
    if not parts:
        return np.zeros((*lead, *shape), dtype)
    return da.stack(parts).reshape(*lead, *shape)


# ----------------------------------------------------------------------- a run's layout


@dataclass
class _Group:
    """Frames sharing one (t, p, z) grid and frame size: the plan's, or a burst's own."""

    label: str  # "" for the plan; a burst's series; a later raw file's frame size
    frame_shape: tuple[int, int]
    dtype: np.dtype[Any]
    series: list[str] = field(default_factory=list)  # along p
    channels: dict[int, str] = field(default_factory=dict)
    cells: dict[tuple[int, int, int, int], tuple[str, int, int]] = field(default_factory=dict)
    time_step_s: float | None = None
    z_step_um: float | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, P, Z)."""
        if not self.cells:
            return (0, 0, 0)
        keys = np.array(list(self.cells))
        return int(keys[:, 1].max()) + 1, len(self.series), int(keys[:, 3].max()) + 1

    def frame_at(self) -> dict[tuple[int, int, int], int]:
        """Per (t, p, z): the newest frame index there (all channels)."""
        out: dict[tuple[int, int, int], int] = {}
        for (_c, t, p, z), (_f, _k, index) in self.cells.items():
            out[(t, p, z)] = max(out.get((t, p, z), -1), index)
        return out


@dataclass
class RunLayout:
    """Where every raw frame of a run sits: its group and (t, p, z) there."""

    groups: list[_Group]
    where: dict[int, tuple[int, tuple[int, int, int]]]  # frame index -> (group, (t, p, z))
    pixel_size_um: float | None

    def tpz(self, frames: np.ndarray) -> np.ndarray:
        """(n, 3) coordinates of frame indices; a frame not in the run sits at t = its index."""
        return np.array(
            [self.where.get(int(f), (0, (int(f), 0, 0)))[1] for f in np.asarray(frames).ravel()], np.float64
        ).reshape(-1, 3)

    @property
    def scale(self) -> tuple[float, float, float, float, float]:
        main = self.groups[0] if self.groups else None
        s = self.pixel_size_um or 1.0
        dt = (main.time_step_s if main else None) or 1.0
        dz = (main.z_step_um if main else None) or 1.0
        return (dt, 1.0, dz, s, s)

    @property
    def units(self) -> tuple[str, str, str, str, str]:
        main = self.groups[0] if self.groups else None
        xy = "µm" if self.pixel_size_um else "pixel"
        t = "s" if main is not None and main.time_step_s else ""
        z = "µm" if main is not None and main.z_step_um else ""
        return (t, "", z, xy, xy)


def run_layout(run_dir: Path, frames: list[dict[str, Any]]) -> RunLayout:
    """Group a run's frames and place each at its (t, c, z) and series (module doc)."""
    from smartscope.storage import describe_series, plane_of_record

    files: dict[str, tuple[Callable[[int], np.ndarray], tuple[int, int], np.dtype[Any]]] = {}
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in frames:
        name = str(r.get("file", ""))
        if name not in files:
            if not (run_dir / name).exists():
                continue
            files[name] = _plane_reader(run_dir / name)
        _read, shape, dtype = files[name]
        series = str(r.get("series", ""))
        plan = _PLAN_SERIES.fullmatch(series) is not None
        by_key.setdefault((shape, str(dtype), "" if plan else series), []).append(r)
    t0 = min((float(r.get("camera_time_s", 0.0)) for r in frames), default=0.0)
    groups: list[_Group] = []
    first_plan_shape = next((k[0] for k in by_key if k[2] == ""), None)
    for (shape, _dtype, series_label), recs in by_key.items():
        label = series_label or ("" if shape == first_plan_shape else f"{shape[0]}x{shape[1]}")
        g = _Group(label, shape, files[str(recs[0]["file"])][2])
        by_series: dict[str, list[dict[str, Any]]] = {}
        for r in recs:
            by_series.setdefault(str(r.get("series", "")), []).append(r)
        g.series = list(by_series)
        for p, (_s, mine) in enumerate(by_series.items()):
            scale = describe_series([plane_of_record(r, t0) for r in mine])
            g.time_step_s = g.time_step_s or scale.time_step_s
            g.z_step_um = g.z_step_um or scale.z_step_um
            for r, (t, c, z) in zip(mine, scale.indices, strict=True):
                g.cells[(c, t, p, z)] = (str(r["file"]), int(r["page"]), int(r["index"]))
                if r.get("channel"):
                    g.channels.setdefault(c, str(r["channel"]))
        groups.append(g)
    groups.sort(key=lambda g: (g.label != "", -len(g.cells)))  # the plan first
    where = {
        index: (k, (t, p, z))
        for k, g in enumerate(groups)
        for (_c, t, p, z), (_f, _p, index) in g.cells.items()
    }
    return RunLayout(groups, where, camera_pixel_size_um(run_dir, frames))


def _channel_layers(layout: RunLayout, run_dir: Path, meta: dict[str, Any]) -> list[LayerData]:
    from smartscope.storage import channel_color

    names = {name for g in layout.groups for name, _k, _i in g.cells.values()}
    files = {name: _plane_reader(run_dir / name)[0] for name in names}
    layers: list[LayerData] = []
    for g in layout.groups:
        n_t, n_p, n_z = g.shape
        n_c = max((c for c, *_ in g.cells), default=0) + 1
        for c in range(n_c):
            cells: list[tuple[Callable[[int], np.ndarray], int] | None] = []
            for t, p, z in np.ndindex(n_t, n_p, n_z):
                hit = g.cells.get((c, t, p, z))
                cells.append((files[hit[0]], hit[1]) if hit is not None else None)
            name = g.channels.get(c) or ("raw" if n_c == 1 else f"c{c}")
            colour = channel_color(g.channels.get(c, ""))
            layers.append(
                (
                    _lazy(cells, (n_t, n_p, n_z), g.frame_shape, g.dtype),
                    {
                        "name": f"{name} {g.label}".strip(),
                        "scale": layout.scale,
                        "units": layout.units,
                        "axis_labels": AXES,
                        "colormap": colour if n_c > 1 else "gray",
                        "blending": "additive" if n_c > 1 else "translucent_no_depth",
                        "metadata": {**meta, "frames": sum(1 for cell in cells if cell is not None)},
                    },
                    "image",
                )
            )
    return layers


# ----------------------------------------------------------------------- the other layers


def _frame_times(frames: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.array([r["index"] for r in frames], dtype=np.int64)
    t = np.array([(r.get("times") or {}).get("stored", r.get("camera_time_s", 0.0)) for r in frames])
    return idx, t


def _frame_at(t: float, idx: np.ndarray, times: np.ndarray) -> int:
    if len(idx) == 0:
        return 0
    k = int(np.searchsorted(times, t, side="right")) - 1
    return int(idx[max(k, 0)])


def action_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The audit log as table rows: seq, frame, source, action, verdict, applied, reason."""
    rows = []
    for r in _jsonl(Path(run_dir) / "actions.jsonl"):
        req = r.get("request") or {}
        act = req.get("action") or {}
        applied = r.get("applied") or {}
        fmt = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in act.items() if k != "kind"
        )
        got = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in applied.items() if k != "kind"
        )
        rows.append(
            {
                "seq": r.get("seq"),
                "frame": r["first_frame_index"]
                if r.get("first_frame_index") is not None
                else req.get("frame_index"),
                "source": req.get("source", ""),
                "action": f"{act.get('kind', '?')}: {fmt}",
                "verdict": r.get("verdict", ""),
                "applied": got,
                "reason": req.get("reason", ""),
            }
        )
    return rows


def _loc_features(tab: Any) -> dict[str, Any]:
    return {
        "frame": tab.frame,
        "photons": tab.photons,
        "precision_nm": np.sqrt(0.5 * (tab.sigma_x_nm**2 + tab.sigma_y_nm**2)),
        "prob": tab.prob,
    }


def _yx_um(tab: Any, px_um: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Table positions (from the pixel's outer corner) in napari's µm (pixel centres at
    integer multiples of the pixel size)."""
    half = 0.5 * px_um if px_um else 0.0
    return tab.y_nm / 1000.0 - half, tab.x_nm / 1000.0 - half


def _marks(name: str, tpz: np.ndarray, yx: np.ndarray, layout: RunLayout, kw: dict[str, Any]) -> LayerData:
    """Points at (t, p, z) and (y, x) in µm, on the run's axes and scale."""
    dt, _p, dz, _y, _x = layout.scale
    data = np.concatenate([tpz, yx], axis=1) if len(tpz) else np.zeros((0, 5))
    return (
        data,
        {"name": name, "scale": (dt, 1.0, dz, 1.0, 1.0), "units": layout.units, "axis_labels": AXES, **kw},
        "points",
    )


def run_layers(run_dir: str | Path) -> list[LayerData]:
    """Everything a run folder holds, as layer data (see module doc)."""
    from smartscope.models.smlm.io import read_tiff_pixel_size_um
    from smartscope.models.smlm.table import LocTable

    rd = Path(run_dir)
    if not is_run_folder(rd):
        raise InvalidValue(
            f"{rd}: not a smartscope run folder (needs frames.jsonl and raw*.ome.tif or raw*.ome.zarr)"
        )
    frames = _jsonl(rd / "frames.jsonl")
    idx, times = _frame_times(frames)
    layout = run_layout(rd, frames)
    px = layout.pixel_size_um
    s = px or 1.0
    meta = {"smartscope_run": str(rd), "pixel_size_um": px, "units": "um" if px else "pixel"}
    layers = _channel_layers(layout, rd, meta)
    analysis = _jsonl(rd / "analysis.jsonl")
    for out in sorted((rd / "outputs").glob("*.ome.tif")):
        layers.extend(_output_layers(out, analysis, layout, meta))
    for render in sorted((rd / "outputs").glob("superres*.tif")):
        import tifffile

        rpx = read_tiff_pixel_size_um(render) or s
        layers.append(
            (
                tifffile.imread(render),
                {
                    "name": render.stem,
                    "scale": (rpx, rpx),
                    "translate": (0.5 * rpx - 0.5 * s, 0.5 * rpx - 0.5 * s),
                    "units": layout.units[-2:],
                    "axis_labels": AXES[-2:],
                    "colormap": "magma",
                    "blending": "additive",
                    "metadata": {**meta, "render_pixel_um": rpx},
                },
                "image",
            )
        )
    tab = None
    if (rd / "outputs" / "localizations.csv").is_file():
        tab = LocTable.read_csv(rd / "outputs" / "localizations.csv")
    else:
        from smartscope.storage import read_columns

        for rows in sorted((rd / "outputs").glob("*.rows.h5")):
            cols = read_columns(rows)
            if {"x_nm", "y_nm"} <= set(cols):
                from smartscope.models.smlm.table import COLUMNS

                tab = LocTable.from_columns(**{c: cols[c] for c in COLUMNS if c in cols})
                break
    if tab is not None:
        y, x = _yx_um(tab, px)
        kw = {
            "features": _loc_features(tab),
            "size": 0.05,
            "face_color": "yellow",
            "border_width": 0,
            "metadata": {**meta, "n_localizations": len(tab)},
        }
        layers.append(_marks("localizations", layout.tpz(tab.frame), np.stack([y, x], 1), layout, kw))
    g0 = layout.groups[0] if layout.groups else None
    h, w = g0.frame_shape if g0 is not None else (1, 1)
    centre = np.array([[0.5 * h * s, 0.5 * w * s]])
    evs = _jsonl(rd / "events.jsonl")
    if evs:
        at = np.array([_frame_at(float(e.get("t", 0.0)), idx, times) for e in evs])
        labels = [str(e.get("event", "?")) + (f": {e['reason']}" if e.get("reason") else "") for e in evs]
        kw = {
            "features": {"event": labels},
            "text": {"string": "{event}", "color": "white", "size": 10},
            "size": 0.5,
            "face_color": "magenta",
            "metadata": {"kind": "events"},
        }
        layers.append(_marks("run events", layout.tpz(at), np.repeat(centre, len(at), 0), layout, kw))
    det = _detected_events(rd, layout)
    if det is not None:
        layers.append(det)
    acts = action_rows(rd)
    if acts:
        at = np.array([int(a["frame"] or 0) for a in acts])
        kw = {
            "features": {k: [a[k] for a in acts] for k in acts[0]},
            "text": {"string": "{action} ({verdict})", "color": "cyan", "size": 10},
            "size": 0.5,
            "face_color": "cyan",
            "metadata": {**meta, "kind": "actions"},
        }
        layers.append(_marks("actions", layout.tpz(at), np.repeat(centre, len(at), 0), layout, kw))
    return layers


def _detected_events(rd: Path, layout: RunLayout) -> LayerData | None:
    from smartscope.storage import read_columns

    s = layout.pixel_size_um or 1.0
    for rows in sorted((rd / "outputs").glob("*.rows.h5")):
        cols = read_columns(rows)
        if {"y_px", "x_px", "frame"} <= set(cols):
            feats = {k: v for k, v in cols.items() if k not in ("y_px", "x_px")}
            kw = {"features": feats, "size": 8 * s, "face_color": "red", "symbol": "ring"}
            yx = np.stack([cols["y_px"] * s, cols["x_px"] * s], 1)
            return _marks(f"{rows.name.split('.')[0]} events", layout.tpz(cols["frame"]), yx, layout, kw)
    return None


def _page_meta(path: Path) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """Per page: the JSON the writer put in its description (index, channel); the OME
    header's channel names."""
    import tifffile

    from smartscope.batch.stacks import StackError, resolve_inputs

    metas: list[dict[str, Any]] = []
    with tifffile.TiffFile(path) as tif:
        for k, page in enumerate(tif.pages):
            # page 0's description becomes the OME header when the stack is closed
            desc = str(getattr(page, "description", "")) if k else ""
            try:
                metas.append(json.loads(desc) if desc.startswith("{") else {})
            except json.JSONDecodeError:
                metas.append({})
    try:
        names = resolve_inputs([path])[0].channels
    except (StackError, IndexError):
        names = ()
    return metas, names


def _first_output_frame(path: Path, analysis: list[dict[str, Any]]) -> int:
    """The frame of an output stack's first page (whose own record the OME header replaced):
    in the file name after a frame-size change, else the first frame the stage analysed."""
    name = path.name.removesuffix(".ome.tif")
    m = re.search(r"_(\d{6})$", name)
    if m:
        return int(m.group(1))
    key = f"stage:{name.split('.')[0]}"
    return next((int(r["index"]) for r in analysis if key in (r.get("times") or {})), 0)


def _output_layers(
    path: Path, analysis: list[dict[str, Any]], layout: RunLayout, meta: dict[str, Any]
) -> list[LayerData]:
    """An engine output on the run's axes: at each (t, p, z) of the plan, the newest output
    of a frame at or before the newest frame there."""
    metas, names = _page_meta(path)
    if not metas or not layout.groups:
        return []
    read, shape, dtype = _plane_reader(path)
    n_c = max(1, next((k for k, m in enumerate(metas) if k and m.get("channel", 0) == 0), len(metas)))
    metas[0] = {"index": _first_output_frame(path, analysis), "channel": 0}
    frames_of = [int(m.get("index", metas[k - k % n_c].get("index", 0))) for k, m in enumerate(metas)]
    out_frames = sorted(set(frames_of))
    page_of = {(frames_of[k], int(m.get("channel", 0))): k for k, m in enumerate(metas)}
    g = layout.groups[0]
    lead = g.shape
    newest = g.frame_at()
    name = path.name.removesuffix(".ome.tif")
    layers: list[LayerData] = []
    for c in range(n_c):
        cells: list[tuple[Callable[[int], np.ndarray], int] | None] = []
        for cell in np.ndindex(*lead):
            frame = newest.get((int(cell[0]), int(cell[1]), int(cell[2])), -1)
            k = int(np.searchsorted(out_frames, frame, side="right")) - 1
            page = page_of.get((out_frames[k], c)) if k >= 0 else None
            cells.append((read, page) if page is not None else None)
        label = (names[c] if c < len(names) and names[c] else f"c{c}") if n_c > 1 else ""
        layers.append(
            (
                _lazy(cells, lead, shape, dtype),
                {
                    "name": f"{name}[{label}]" if label else name,
                    "scale": layout.scale,
                    "units": layout.units,
                    "axis_labels": AXES,
                    "blending": "additive",
                    "visible": c == 0,
                    "metadata": {**meta, "output_frames": len(out_frames)},
                },
                "image",
            )
        )
    return layers


# ----------------------------------------------------------------------- files on their own


def _page_reader(path: Path, index: list[int]) -> Callable[[int], np.ndarray]:
    """Read plane ``j`` of a TIFF series: the file's page ``index[j]``."""

    def read(j: int) -> np.ndarray:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return np.asarray(tif.pages[index[j]].asarray())

    return read


def _ome_tiff_images(path: Path) -> list[tuple[Any, str, list[float], list[str], tuple[str, ...], str]]:
    """Per series of an OME-TIFF: (lazy data, axes, scale, units, channel names, label)."""
    import tifffile

    from smartscope.batch.stacks import _unit_um

    out = []
    with tifffile.TiffFile(path) as tif:
        doc = tifffile.xml2dict(tif.ome_metadata or "<OME/>").get("OME", {}) if tif.is_ome else {}
        images = doc.get("Image", []) if isinstance(doc, dict) else []
        images = images if isinstance(images, list) else [images]
        for k, series in enumerate(tif.series):
            axes = str(series.axes).lower()
            shape = tuple(int(n) for n in series.shape)
            pixels = images[k].get("Pixels", {}) if k < len(images) else {}
            steps = {
                "x": (pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"), "µm"),
                "y": (pixels.get("PhysicalSizeY"), pixels.get("PhysicalSizeYUnit"), "µm"),
                "z": (pixels.get("PhysicalSizeZ"), pixels.get("PhysicalSizeZUnit"), "µm"),
                "t": (pixels.get("TimeIncrement"), None, "s"),
            }
            scale, units = [], []
            for a in axes:
                value, unit, name = steps.get(a, (None, None, ""))
                factor = _unit_um(unit) if name == "µm" else 1.0
                if value is not None and factor is not None:
                    scale.append(float(value) * factor)
                    units.append(name)
                else:
                    scale.append(1.0)
                    units.append("pixel" if a in "yx" else "")
            chans = pixels.get("Channel", [])
            chans = chans if isinstance(chans, list) else [chans]
            names = tuple(str(c.get("Name", "")) for c in chans)
            pages = list(series.pages)

            read = _page_reader(path, [pg.index if pg is not None else -1 for pg in pages])
            lead, plane = shape[:-2], shape[-2:]
            cells = [(read, j) if pages[j] is not None else None for j in range(len(pages))]
            data = _lazy(cells, lead, plane, np.dtype(series.dtype))
            words = str(images[k].get("Name", "")).split() if k < len(images) else []
            out.append((data, axes, scale, units, names, words[-1] if words else f"s{k}"))
    return out


def _ome_zarr_image(path: Path) -> tuple[Any, str, list[float], list[str], tuple[str, ...], str]:
    import dask.array as da

    from smartscope.batch.stacks import _unit_um, _zarr_multiscales, open_zarr_array

    arr, axes_u = open_zarr_array(path)
    found = _zarr_multiscales(path)
    assert found is not None  # open_zarr_array raised otherwise
    g, ms, _sub = found
    axes_meta = [a if isinstance(a, dict) else {"name": a} for a in ms["axes"]]
    scale = [1.0] * len(axes_meta)
    ds = ms["datasets"][0]
    for tf in [*ds.get("coordinateTransformations", []), *ms.get("coordinateTransformations", [])]:
        if tf.get("type") == "scale":
            scale = [a * float(b) for a, b in zip(scale, tf["scale"], strict=True)]
    units = []
    for k, a in enumerate(axes_meta):
        unit = a.get("unit")
        if a.get("type") == "space" and unit is not None and _unit_um(unit) is not None:
            scale[k] *= float(_unit_um(unit) or 1.0)
            units.append("µm")
        elif a.get("type") == "time" and unit in ("second", "s"):
            units.append("s")
        else:
            units.append("pixel" if str(a["name"]).lower() in "yx" else "")
    attrs = dict(g.attrs)
    omero = attrs.get("omero") or attrs.get("ome", {}).get("omero") or {}
    names = tuple(str(c.get("label", "")) for c in omero.get("channels", []))
    label = path.name.removesuffix(".ome.zarr").removesuffix(".zarr")
    return (
        da.from_array(arr, chunks=(1,) * (arr.ndim - 2) + tuple(arr.shape[-2:])),
        axes_u.lower(),
        scale,
        units,
        names,
        label,
    )


def ome_layers(path: str | Path) -> list[LayerData]:
    """An OME-TIFF or OME-Zarr image: one layer per channel (and series), on the file's own
    named axes, at its physical sizes, named by channel."""
    from smartscope.storage import channel_color

    p = Path(path)
    images = [_ome_zarr_image(p)] if p.is_dir() else _ome_tiff_images(p)
    layers: list[LayerData] = []
    for data, axes, scale, units, names, label in images:
        ci = axes.find("c")
        n_c = int(data.shape[ci]) if ci >= 0 else 1
        keep = [k for k, a in enumerate(axes) if a != "c"]
        for c in range(n_c):
            part = data[(slice(None),) * ci + (c,)] if ci >= 0 else data
            name = (names[c] if c < len(names) and names[c] else "") or (f"c{c}" if n_c > 1 else p.name)
            layers.append(
                (
                    part,
                    {
                        "name": f"{name} {label}" if len(images) > 1 else name,
                        "scale": tuple(scale[k] for k in keep),
                        "units": tuple(units[k] for k in keep),
                        "axis_labels": tuple(axes[k] for k in keep),
                        "colormap": channel_color(names[c] if c < len(names) else "") if n_c > 1 else "gray",
                        "blending": "additive",
                        "metadata": {"source": str(p)},
                    },
                    "image",
                )
            )
    return layers


def table_layers(path: str | Path, pixel_nm: float | None = None) -> list[LayerData]:
    """A ThunderSTORM / smartscope CSV or Picasso HDF5 table as a Points layer in µm."""
    from smartscope.models.smlm.io import read_picasso
    from smartscope.models.smlm.table import LocTable

    p = Path(path)
    px_um: float | None = None
    if p.suffix == ".hdf5":
        tab, meta = read_picasso(p)
        px_um = float(meta["Pixelsize"]) / 1000.0
    elif "x [nm]" in p.open(encoding="utf-8", errors="replace").readline():
        tab = LocTable.read_thunderstorm_csv(p)
    else:
        tab = LocTable.read_csv(p)
    if pixel_nm is not None:
        px_um = pixel_nm / 1000.0
    y, x = _yx_um(tab, px_um)
    kw: dict[str, Any] = {
        "name": p.stem,
        "features": _loc_features(tab),
        "size": 0.05,
        "face_color": "yellow",
        "border_width": 0,
        "units": ("", "µm", "µm"),
        "axis_labels": ("t", "y", "x"),
        "metadata": {"units": "um", "n_localizations": len(tab), "source": str(p)},
    }
    return [(np.stack([tab.frame.astype(np.float64), y, x], 1), kw, "points")]
