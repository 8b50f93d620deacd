"""Every plan shape, both formats, read back by the ecosystem's own readers.

Each plan runs through pymmcore-plus's runner on the demo core (40× objective: 0.25 µm
pixels) into OME-TIFF and into OME-Zarr. The run is then read with tools smartscope does
not own: tifffile, ome-types and bioio-ome-tiff for the OME-TIFF; ome-zarr-py and
bioio-ome-zarr for the OME-Zarr. For every image series (a position, a grid tile, a burst)
the readers must give what the *plan* says: T/C/Z sizes in T, C, Z order, x/y/z physical
sizes in µm, the time increment in seconds (the plan's interval; for a multi-phase plan,
what the frames' own timestamps say), and channel names. Each frame's pixels
must sit at its (t, c, z) and what the plan leaves out must be empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq

from smartscope.actions import AcquireAt
from smartscope.storage import read_jsonl
from tests.test_mda import SMALL, Z_SEQUENCES, _run_script, rich_sequence

PIXEL_UM = 0.25  # the demo configuration's 40× objective
OBJECTIVE_40X = {"device": "Objective", "property": "Label", "value": "Nikon 40X Plan Fluor ELWD"}

PLANS: dict[str, useq.MDASequence] = {
    "t": useq.MDASequence(time_plan={"interval": 0.1, "loops": 4}),
    "z": useq.MDASequence(z_plan={"range": 2.0, "step": 0.5}),
    "c": useq.MDASequence(channels=["DAPI", "FITC"]),
    "p": useq.MDASequence(stage_positions=[(0.0, 0.0, 0.0), (100.0, 50.0, 0.0), (-80.0, 20.0, 0.0)]),
    "grid": useq.MDASequence(grid_plan=useq.GridRowsColumns(rows=1, columns=2)),
    "t×z": useq.MDASequence(time_plan={"interval": 0.15, "loops": 4}, z_plan={"range": 1.0, "step": 0.5}),
    "c×z": useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"range": 0.6, "step": 0.3}),
    "p×c×z": useq.MDASequence(
        stage_positions=[(0.0, 0.0, 0.0), (100.0, 0.0, 0.0)],
        channels=["DAPI", "FITC"],
        z_plan={"range": 1.0, "step": 0.5},
    ),
    "t×p×c×z": useq.MDASequence(
        time_plan={"interval": 0.3, "loops": 4},
        stage_positions=[(0.0, 0.0, 0.0), (100.0, 0.0, 0.0)],
        channels=["DAPI", "FITC"],
        z_plan={"range": 1.0, "step": 0.5},
    ),
    "ragged": rich_sequence(),  # sub-sequence with a grid, do_stack=False, acquire_every, 2 phases
}
# the ragged plan also gets a burst at position 0 with its own channel and four planes
BURST = AcquireAt(position=0, n_frames=2, z_offsets_um=(-1.0, 0.0, 1.0, 2.0), channels=("FITC",))


@dataclass
class Series:
    """What the plan says one image series must be."""

    sizes: dict[str, int] = field(default_factory=lambda: {"T": 1, "C": 1, "Z": 1})
    channels: dict[int, str] = field(default_factory=dict)
    z_step_um: float | None = None
    interval_s: float | None = None  # one interval for the whole plan (not a multi-phase one)


def _z_step(seq: useq.MDASequence) -> float | None:
    step = getattr(seq.z_plan, "step", None)
    return float(step) if step else None


def expected(seq: useq.MDASequence, burst: AcquireAt | None) -> dict[str, Series]:
    """Per series (``p<p>``, ``p<p>-g<g>``, ``p<p>-burst1``): sizes, channel names, steps,
    from the plan's own events (useq-schema), not from anything smartscope wrote."""
    out: dict[str, Series] = {}
    phases = getattr(seq.time_plan, "phases", [seq.time_plan]) if seq.time_plan is not None else []
    intervals = [float(p.interval.total_seconds()) for p in phases]
    for e in seq:
        idx = {str(getattr(k, "value", k)): int(v) for k, v in e.index.items()}
        name = f"p{idx.get('p', 0)}" + (f"-g{idx['g']}" if "g" in idx else "")
        s = out.setdefault(name, Series())
        for axis in "tcz":
            s.sizes[axis.upper()] = max(s.sizes[axis.upper()], idx.get(axis, 0) + 1)
        if e.channel is not None:
            s.channels[idx.get("c", 0)] = e.channel.config
        sub = seq.stage_positions[idx["p"]].sequence if "p" in idx and seq.stage_positions else None
        s.z_step_um = _z_step(sub) if sub is not None and sub.z_plan is not None else _z_step(seq)
        if len(intervals) == 1 and s.sizes["T"] > 1:
            s.interval_s = intervals[0]
    if burst is not None:
        offsets = burst.z_offsets_um
        out[f"p{burst.position}-burst1"] = Series(
            {"T": burst.n_frames, "C": len(burst.channels), "Z": len(offsets)},
            dict(enumerate(burst.channels)),
            float(np.median(np.diff(offsets))),
            None,
        )
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Path]]:
    """Every plan run once per format (one core for all: the runs are what is read)."""
    import gc

    from pymmcore_plus import CMMCorePlus

    from tests.conftest import ADAPTERS, _release

    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([ADAPTERS])
    core.loadSystemConfiguration(str(Path(ADAPTERS) / "MMConfig_demo.cfg"))
    done: dict[tuple[str, str], Path] = {}
    try:
        for fmt in ("ome-tiff", "ome-zarr"):
            for name, seq in PLANS.items():
                tmp = tmp_path_factory.mktemp(f"{fmt}-{name.replace('×', 'x')}")
                script = {("p0", 1): [BURST]} if name == "ragged" else {}
                res, _, _ = _run_script(
                    core,
                    tmp,
                    seq,
                    script,
                    microscope={"startup": [*SMALL, Z_SEQUENCES, OBJECTIVE_40X], "buffer_size_mb": 16},
                    storage={"root": str(tmp / "runs"), "name": "shape", "format": fmt},
                )
                assert res.status == "completed", (name, fmt, res.reason)
                done[(fmt, name)] = Path(res.run_dir)
        yield done
    finally:
        _release(core)
        del core
        gc.collect()


def _frames_by_series(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in read_jsonl(run_dir / "frames.jsonl"):
        out.setdefault(f["series"], []).append(f)
    return out


def _recorded_interval(frames: list[dict[str, Any]]) -> float | None:
    """The time step the frames' own timestamps give (median over consecutive t)."""
    first: dict[int, float] = {}
    for f in frames:
        t = f["axes"].get("t", 0)
        first[t] = min(first.get(t, f["camera_time_s"]), f["camera_time_s"])
    ts = sorted(first)
    if len(ts) < 2:
        return None
    return float(np.median(np.diff([first[t] for t in ts]) / np.diff(ts)))


def _check_steps(want: Series, frames: list[dict[str, Any]], z: float | None, dt: float | None) -> None:
    if want.z_step_um is not None and want.sizes["Z"] > 1:
        assert z == pytest.approx(want.z_step_um)
    if want.interval_s is not None:
        assert dt == pytest.approx(want.interval_s)
    elif want.sizes["T"] > 1:  # no one interval: what the frames' timestamps say
        assert dt == pytest.approx(_recorded_interval(frames), rel=1e-6)


def _where(f: dict[str, Any]) -> tuple[int, int, int]:
    return f["axes"].get("t", 0), f["axes"].get("c", 0), f["axes"].get("z", 0)


@pytest.mark.parametrize("plan", list(PLANS))
def test_ome_tiff_reads_back_as_planned(runs: dict[tuple[str, str], Path], plan: str) -> None:
    import bioio_ome_tiff
    import ome_types
    import tifffile
    from bioio import BioImage

    run_dir = runs[("ome-tiff", plan)]
    want = expected(PLANS[plan], BURST if plan == "ragged" else None)
    frames = _frames_by_series(run_dir)
    path = run_dir / "raw.ome.tif"
    ome = ome_types.from_tiff(path)
    names = [im.name.removeprefix("raw ") for im in ome.images]
    assert sorted(names) == sorted(want)
    bio = BioImage(path, reader=bioio_ome_tiff.Reader)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == len(want)
        for k, name in enumerate(names):
            w, px = want[name], ome.images[k].pixels
            # ome-types: sizes, units, steps, channel names
            assert (px.size_t, px.size_c, px.size_z) == (w.sizes["T"], w.sizes["C"], w.sizes["Z"])
            assert px.physical_size_x == pytest.approx(PIXEL_UM) and px.physical_size_y == pytest.approx(
                PIXEL_UM
            )
            assert px.physical_size_x_unit.value == px.physical_size_y_unit.value == "µm"
            if w.sizes["Z"] > 1:
                assert px.physical_size_z_unit.value == "µm"
            if w.interval_s is not None:
                assert px.time_increment_unit.value == "s"
            _check_steps(w, frames[name], px.physical_size_z, px.time_increment)
            for c, label in w.channels.items():
                assert px.channels[c].name == label
            planes = {(q.the_t, q.the_c, q.the_z): q for q in px.planes}
            t0 = min(f["camera_time_s"] for fs in frames.values() for f in fs)
            for f in frames[name]:  # per-plane time since the run's start, as the frame recorded it
                assert planes[_where(f)].delta_t == pytest.approx(f["camera_time_s"] - t0, abs=1e-6)
            # tifffile: the series' axes and shape (singleton T, C, Z squeezed)
            series = tif.series[k]
            full = dict(zip("TCZ", (w.sizes["T"], w.sizes["C"], w.sizes["Z"]), strict=True))
            assert series.axes == "".join(a for a in "TCZ" if full[a] > 1) + "YX"
            assert series.shape[:-2] == tuple(n for n in full.values() if n > 1)
            # bioio: dims in T, C, Z order, physical sizes, channel names, time coordinates
            bio.set_scene(k)
            assert bio.dims.order == "TCZYX"
            assert {a: getattr(bio.dims, a) for a in "TCZ"} == w.sizes
            assert tuple(bio.physical_pixel_sizes)[1:] == pytest.approx((PIXEL_UM, PIXEL_UM))
            _check_steps(
                w,
                frames[name],
                bio.physical_pixel_sizes.Z,
                float(np.diff(bio.xarray_dask_data.coords["T"].values)[0]) if w.sizes["T"] > 1 else None,
            )
            for c, label in w.channels.items():
                assert str(bio.channel_names[c]) == label
            # pixels: each frame where its indices say (bioio) = its page (tifffile)
            data = bio.get_image_data("TCZYX")
            stored = set()
            for f in frames[name]:
                assert f["file"] == "raw.ome.tif"
                np.testing.assert_array_equal(data[_where(f)], tif.pages[f["page"]].asarray())
                stored.add(_where(f))
            assert len(stored) == len(frames[name])
            for where in np.ndindex(*data.shape[:3]):  # what the plan leaves out is empty
                if where not in stored:
                    assert not data[where].any(), (name, where)


@pytest.mark.parametrize("plan", list(PLANS))
def test_ome_zarr_reads_back_as_planned(runs: dict[tuple[str, str], Path], plan: str) -> None:
    import bioio_ome_zarr
    from bioio import BioImage
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    run_dir = runs[("ome-zarr", plan)]
    want = expected(PLANS[plan], BURST if plan == "ragged" else None)
    frames = _frames_by_series(run_dir)
    assert sorted(p.name for p in run_dir.glob("raw*.ome.zarr")) == sorted(f"raw.{s}.ome.zarr" for s in want)
    for name, w in want.items():
        path = run_dir / f"raw.{name}.ome.zarr"
        full = {"t": w.sizes["T"], "c": w.sizes["C"], "z": w.sizes["Z"]}
        # ome-zarr-py: axes with units, scale, omero channel labels, the array
        (node, *_) = Reader(parse_url(str(path)))()
        meta = node.metadata
        axes = [a["name"] for a in meta["axes"]]
        assert axes == ["t", *[a for a in "cz" if full[a] > 1], "y", "x"]  # OME order, t always
        units = {a["name"]: a.get("unit") for a in meta["axes"]}
        assert units["x"] == units["y"] == "micrometer" and units["t"] == "second"
        if "z" in units:
            assert units["z"] == "micrometer"
        (scale,) = [tf["scale"] for tf in meta["coordinateTransformations"][0] if tf["type"] == "scale"]
        step = dict(zip(axes, scale, strict=True))
        assert step["x"] == pytest.approx(PIXEL_UM) and step["y"] == pytest.approx(PIXEL_UM)
        _check_steps(w, frames[name], step.get("z"), step["t"] if w.sizes["T"] > 1 else None)
        for c, label in w.channels.items():
            assert meta["channel_names"][c] == label
        data = np.asarray(node.data[0])
        assert data.shape[:-2] == tuple(full[a] for a in axes[:-2])
        # bioio-ome-zarr: dims, physical sizes, channel names, time interval
        bio = BioImage(path, reader=bioio_ome_zarr.Reader)
        assert {a: getattr(bio.dims, a) for a in "TCZ"} == w.sizes
        assert tuple(bio.physical_pixel_sizes)[1:] == pytest.approx((PIXEL_UM, PIXEL_UM))
        _check_steps(
            w,
            frames[name],
            bio.physical_pixel_sizes.Z,
            float(bio.time_interval) if w.sizes["T"] > 1 else None,
        )
        for c, label in w.channels.items():
            assert str(bio.channel_names[c]) == label
        # ome-writers' per-frame metadata: the time of every plane, as recorded
        attrs = json.loads((path / "zarr.json").read_text())["attributes"]
        t0 = min(f["camera_time_s"] for fs in frames.values() for f in fs)
        times = sorted(m["delta_t"] for m in attrs["ome_writers"]["frame_metadata"])
        assert times == pytest.approx(sorted(f["camera_time_s"] - t0 for f in frames[name]), abs=1e-6)
        # pixels: each frame at its indices, the rest empty
        stored = set()
        for f in frames[name]:
            where = tuple(int(i) for i in np.unravel_index(f["page"], data.shape[:-2]))
            assert dict(zip(axes[:-2], where, strict=True)) == {a: f["axes"].get(a, 0) for a in axes[:-2]}
            assert data[where].any()
            stored.add(where)
        for where in np.ndindex(*data.shape[:-2]):
            assert data[where].any() == (where in stored), (name, where)
