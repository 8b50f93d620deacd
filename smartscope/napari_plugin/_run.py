"""Run folders and localization tables as napari layer data (no napari, no Qt needed here).

A run folder becomes, in world units of µm (time in frames):

* ``raw`` (one layer per raw file): every frame, read page by page on demand (a lazy dask
  array, so a run larger than memory opens at once), scale ``(1, px, px)``;
* ``<stage>.<output>`` per engine output: shown at every raw frame as the newest output of
  a frame at or before it (what the live loop showed), channels split into layers;
* ``superres`` renders at their own calibrated pixel size;
* ``localizations``: a Points layer at ``(frame, y, x)`` µm with photons, precision and
  probability as features (the final table, or the live columnar rows of a run that died);
* ``run events`` (start, faults, safe state, pause, stop) and detected events on the time
  axis, and ``actions`` at the first frame each applied action was in force, with the
  audit record as features (:func:`action_rows` gives the table the dock widget shows).

The camera pixel size comes from, in order: a ``pixel_size_um`` in the frame records, the
OME ``PhysicalSizeX``, the SMLM stage or engine bundle in ``config.yaml``, the virtual
microscope's 0.1 µm; otherwise layers stay in pixels and say so in their metadata.
Localizations are placed so that a molecule at the centre of pixel (i, j) sits on that
pixel's centre in napari (tables count from the pixel's outer corner).

Table files (ThunderSTORM or smartscope CSV, Picasso HDF5) become a Points layer in µm.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LayerData",
    "action_rows",
    "camera_pixel_size_um",
    "is_run_folder",
    "is_table_file",
    "run_layers",
    "table_layers",
]

LayerData = tuple[Any, dict[str, Any], str]
_VIRTUAL_PIXEL_UM = 0.1  # smartscope.simulators.microscope.VirtualMicroscope's default


def is_run_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "frames.jsonl").is_file() and any(p.glob("raw*.ome.tif"))


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


def _ome_pixel_um(tif_path: Path) -> float | None:
    import tifffile

    with tifffile.TiffFile(tif_path) as tif:
        xml = tif.ome_metadata or ""
    m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml)
    return float(m.group(1)) if m else None


def camera_pixel_size_um(run_dir: Path, frames: list[dict[str, Any]] | None = None) -> float | None:
    """The camera pixel in the sample plane (µm), from the run's own records (see module doc)."""
    import yaml

    recs = frames if frames is not None else _jsonl(run_dir / "frames.jsonl")[:1]
    for r in recs[:1]:
        v = (r.get("state") or {}).get("pixel_size_um") or r.get("pixel_size_um")
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    for raw in sorted(run_dir.glob("raw*.ome.tif"))[:1]:
        v = _ome_pixel_um(raw)
        if v:
            return v
    cfg_path = run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    cfg = cfg or {}
    for st in (cfg.get("pipeline") or {}).get("stages", []):
        if st.get("kind") == "smlm" and st.get("pixel_size_um"):
            return float(st["pixel_size_um"])
        if st.get("kind") in ("engine", "stain") and st.get("bundle"):
            try:
                from smartscope.engines.bundle import load_bundle

                px = load_bundle(st["bundle"]).manifest.pixel_size_um
            except Exception:
                px = None
            if px:
                return float(px)
    if (cfg.get("microscope") or {}).get("config_file") == "virtual":
        return _VIRTUAL_PIXEL_UM
    return None


def _lazy_pages(path: Path, pages: list[int], shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    """A (len(pages), *shape) dask array reading one TIFF page per frame when napari asks."""
    import dask.array as da
    import tifffile
    from dask.delayed import delayed

    def read(k: int) -> np.ndarray:
        with tifffile.TiffFile(path) as tif:
            return np.asarray(tif.pages[k].asarray())

    parts = [da.from_delayed(delayed(read)(k), shape=shape, dtype=dtype) for k in pages]
    return da.stack(parts) if parts else np.zeros((0, *shape), dtype)


def _page_meta(path: Path) -> tuple[list[dict[str, Any]], tuple[int, ...], np.dtype[Any]]:
    """Per page: the JSON the writer put in its description (index, channel); shape; dtype."""
    import tifffile

    metas: list[dict[str, Any]] = []
    with tifffile.TiffFile(path) as tif:
        first = tif.pages.first
        shape, dtype = tuple(first.shape), np.dtype(first.dtype)
        for k, page in enumerate(tif.pages):
            # page 0's description becomes the OME header when the stack is closed
            desc = str(getattr(page, "description", "")) if k else ""
            try:
                metas.append(json.loads(desc) if desc.startswith("{") else {})
            except json.JSONDecodeError:
                metas.append({})
    return metas, shape, dtype


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


def _loc_points(tab: Any, px_um: float | None, with_frame: bool, name: str) -> LayerData:
    """Localizations as napari points in µm: (frame, y, x) or (y, x)."""
    half = 0.5 * px_um if px_um else 0.0
    y = tab.y_nm / 1000.0 - half
    x = tab.x_nm / 1000.0 - half
    coords = np.stack([tab.frame.astype(np.float64), y, x], 1) if with_frame else np.stack([y, x], 1)
    feats = {
        "frame": tab.frame,
        "photons": tab.photons,
        "precision_nm": np.sqrt(0.5 * (tab.sigma_x_nm**2 + tab.sigma_y_nm**2)),
        "prob": tab.prob,
    }
    kw: dict[str, Any] = {
        "name": name,
        "features": feats,
        "size": 0.05,
        "face_color": "yellow",
        "border_width": 0,
        "metadata": {"units": "um", "n_localizations": len(tab)},
    }
    return coords, kw, "points"


def _events_layer(
    run_dir: Path, idx: np.ndarray, times: np.ndarray, centre: tuple[float, float]
) -> LayerData | None:
    evs = _jsonl(run_dir / "events.jsonl")
    if not evs:
        return None
    pts = [(_frame_at(float(e.get("t", 0.0)), idx, times), *centre) for e in evs]
    labels = [str(e.get("event", "?")) + (f": {e['reason']}" if e.get("reason") else "") for e in evs]
    return (
        np.asarray(pts, np.float64),
        {
            "name": "run events",
            "features": {"event": labels},
            "text": {"string": "{event}", "color": "white", "size": 10},
            "size": 0.5,
            "face_color": "magenta",
            "metadata": {"kind": "events"},
        },
        "points",
    )


def run_layers(run_dir: str | Path) -> list[LayerData]:
    """Everything a run folder holds, as layer data (see module doc)."""
    from smartscope.models.smlm.io import read_tiff_pixel_size_um
    from smartscope.models.smlm.table import LocTable

    rd = Path(run_dir)
    if not is_run_folder(rd):
        raise ValueError(f"{rd}: not a smartscope run folder (needs frames.jsonl and raw*.ome.tif)")
    frames = _jsonl(rd / "frames.jsonl")
    idx, times = _frame_times(frames)
    px = camera_pixel_size_um(rd, frames)
    s = px or 1.0
    units = "um" if px else "pixel"
    meta = {"smartscope_run": str(rd), "pixel_size_um": px, "units": units}
    layers: list[LayerData] = []
    n_frames = int(idx.max()) + 1 if len(idx) else 0
    shape2d: tuple[int, ...] = (1, 1)
    for raw in sorted(rd.glob("raw*.ome.tif")):
        metas, shape2d, dtype = _page_meta(raw)
        recs = [r for r in frames if r.get("file") == raw.name]
        first = int(recs[0]["index"]) if recs else 0
        data = _lazy_pages(raw, list(range(len(metas))), shape2d, dtype)
        layers.append(
            (
                data,
                {
                    "name": raw.name.removesuffix(".ome.tif"),
                    "scale": (1.0, s, s),
                    "translate": (float(first), 0.0, 0.0),
                    "axis_labels": ("t", "y", "x"),
                    "colormap": "gray",
                    "metadata": {**meta, "frames": len(metas)},
                },
                "image",
            )
        )
    analysis = _jsonl(rd / "analysis.jsonl")
    for out in sorted((rd / "outputs").glob("*.ome.tif")):
        layers.extend(_output_layers(out, analysis, n_frames, s, meta))
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
        data, kw, kind = _loc_points(tab, px, True, "localizations")
        kw["metadata"].update(meta)
        layers.append((data, kw, kind))
    centre = (0.5 * shape2d[0] * s, 0.5 * shape2d[1] * s)
    ev = _events_layer(rd, idx, times, centre)
    if ev is not None:
        layers.append(ev)
    det = _detected_events(rd, s)
    if det is not None:
        layers.append(det)
    acts = action_rows(rd)
    if acts:
        pts = np.asarray([(float(a["frame"] or 0), *centre) for a in acts], np.float64)
        layers.append(
            (
                pts,
                {
                    "name": "actions",
                    "features": {k: [a[k] for a in acts] for k in acts[0]},
                    "text": {
                        "string": "{action} ({verdict})",
                        "color": "cyan",
                        "size": 10,
                        "translation": (0.0, 0.0, 0.0),
                    },
                    "size": 0.5,
                    "face_color": "cyan",
                    "metadata": {**meta, "kind": "actions"},
                },
                "points",
            )
        )
    return layers


def _detected_events(rd: Path, s: float) -> LayerData | None:
    from smartscope.storage import read_columns

    for rows in sorted((rd / "outputs").glob("*.rows.h5")):
        cols = read_columns(rows)
        if {"y_px", "x_px", "frame"} <= set(cols):
            pts = np.stack([cols["frame"].astype(np.float64), cols["y_px"] * s, cols["x_px"] * s], 1)
            feats = {k: v for k, v in cols.items() if k not in ("y_px", "x_px")}
            return (
                pts,
                {
                    "name": f"{rows.name.split('.')[0]} events",
                    "features": feats,
                    "size": 8 * s,
                    "face_color": "red",
                    "symbol": "ring",
                },
                "points",
            )
    return None


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
    path: Path, analysis: list[dict[str, Any]], n_frames: int, s: float, meta: dict[str, Any]
) -> list[LayerData]:
    """An engine output stack on the raw time axis (newest output at or before each frame)."""
    metas, shape2d, dtype = _page_meta(path)
    if not metas:
        return []
    n_c = max(1, next((k for k, m in enumerate(metas) if k and m.get("channel", 0) == 0), len(metas)))
    metas[0] = {"index": _first_output_frame(path, analysis), "channel": 0}
    chans = list(range(n_c))
    frames_of = [int(m.get("index", metas[k - k % n_c].get("index", 0))) for k, m in enumerate(metas)]
    out_frames = sorted(set(frames_of))
    page_of: dict[tuple[int, int], int] = {}
    for k, m in enumerate(metas):
        page_of[(frames_of[k], int(m.get("channel", 0)))] = k
    first = out_frames[0]
    timeline = [f for f in range(first, max(n_frames, out_frames[-1] + 1))]
    pick = np.searchsorted(out_frames, timeline, side="right") - 1
    name = path.name.removesuffix(".ome.tif")
    layers: list[LayerData] = []
    base = _lazy_pages(path, list(range(len(metas))), shape2d, dtype)
    for c in chans:
        pages = [page_of.get((out_frames[i], c), 0) for i in pick]
        data = base[np.asarray(pages, dtype=np.int64)]
        layers.append(
            (
                data,
                {
                    "name": name if n_c == 1 else f"{name}[{c}]",
                    "scale": (1.0, s, s),
                    "translate": (float(first), 0.0, 0.0),
                    "axis_labels": ("t", "y", "x"),
                    "blending": "additive",
                    "visible": c == chans[0],
                    "metadata": {**meta, "output_frames": len(out_frames)},
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
    data, kw, kind = _loc_points(tab, px_um, True, p.stem)
    kw["metadata"]["source"] = str(p)
    return [(data, kw, kind)]
