"""The raw stack's OME header: one series per position, calibrated scale, positions, channel
names, exposure and DeltaT per plane, the instrument, and the run's actions; also after a
crash (``recover``) and for what tifffile (napari, Fiji's Bio-Formats) reads from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import ome_types
import pytest
import tifffile

from smartscope.frame import Frame
from smartscope.state import DriverState
from smartscope.storage import RunFolder, recover

CHANNELS = ("DAPI", "FITC")


def _frames() -> list[Frame]:
    """2 positions x 3 time points x 2 channels x 4 z planes, in t-p-c-z order."""
    frames = []
    i = 0
    for t in range(3):
        for p, (x, y) in enumerate(((100.0, 200.0), (-50.0, 75.0))):
            for c, name in enumerate(CHANNELS):
                for z in range(4):
                    img = np.full((32, 48), 1000 * p + 100 * c + 10 * z + t, np.uint16)
                    state = DriverState(
                        exposure_ms=5.0 + 5 * c, xy_um=(x, y), z_um=-1.0 + 0.5 * z, pixel_size_um=0.108
                    )
                    f = Frame(i, img, camera_time_s=1000.0 + 2.0 * t + 0.01 * i, channel=name, state=state)
                    f.axes = {"t": t, "p": p, "c": c, "z": z}
                    f.series = f"p{p}"
                    f.metadata["mm"] = {"Camera": "Camera"}
                    frames.append(f)
                    i += 1
    return frames


def _write(tmp_path: Path, close: bool = True) -> RunFolder:
    run = RunFolder(tmp_path, "ome")
    run.actions.write(
        {
            "seq": 1,
            "verdict": "applied",
            "applied": {"kind": "laser_power", "laser": "488", "power_mw": 3.0},
            "first_frame_index": 16,
            "request": {"source": "density", "reason": "too dense"},
        }
    )
    frames = _frames()
    run.write_raw(frames[:20])
    run.write_raw(frames[20:])
    if close:
        run.close()
    return run


def _check(path: Path) -> None:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        assert len(tif.series) == 2
        for p, s in enumerate(tif.series):
            assert s.axes == "TCZYX" and s.shape == (3, 2, 4, 32, 48)
            data = s.asarray()
            assert data[2, 1, 3, 0, 0] == 1000 * p + 100 + 30 + 2  # t=2, FITC, z=3
        ome = ome_types.from_xml(tif.ome_metadata or "")
    assert [im.name for im in ome.images] == ["raw p0", "raw p1"]
    px = ome.images[1].pixels
    assert px.physical_size_x == pytest.approx(0.108) and px.physical_size_y == pytest.approx(0.108)
    assert px.physical_size_z == pytest.approx(0.5)
    assert [c.name for c in px.channels] == list(CHANNELS)
    plane = next(q for q in px.planes if (q.the_t, q.the_c, q.the_z) == (1, 1, 2))
    assert plane.position_x == -50.0 and plane.position_y == 75.0 and plane.position_z == pytest.approx(0.0)
    assert plane.exposure_time == 10.0 and plane.delta_t is not None and plane.delta_t > 1.9
    assert ome.instruments[0].detectors[0].model == "Camera"
    (note,) = ome.structured_annotations.comment_annotations
    assert "laser_power" in note.value and "frame 16" in note.value and "too dense" in note.value


def test_positions_become_series_at_the_calibrated_scale(tmp_path: Path) -> None:
    run = _write(tmp_path)
    _check(run.path / "raw.ome.tif")
    lines = [json.loads(x) for x in (run.path / "frames.jsonl").read_text().splitlines()]
    assert lines[5]["axes"] == {"t": 0, "p": 0, "c": 1, "z": 1} and lines[9]["series"] == "p1"


def test_recover_writes_the_same_header_after_a_crash(tmp_path: Path) -> None:
    run = _write(tmp_path, close=False)  # no header: as if the process had died
    for j in (run.frames, run.actions):
        j.close()
    assert recover(run.path) == {"raw.ome.tif": 48}
    _check(run.path / "raw.ome.tif")


def test_ome_zarr_writes_one_image_per_position(tmp_path: Path) -> None:
    tensorstore = pytest.importorskip("tensorstore")
    run = RunFolder(tmp_path, "zarr", fmt="ome-zarr", layout=({"t": 3, "p": 2, "c": 2, "z": 4}, "tpgcz"))
    frames = _frames()
    run.write_raw(frames[:20])
    run.write_raw(frames[20:])
    run.close()
    for p in (0, 1):
        path = run.path / f"raw.p{p}.ome.zarr"
        attrs = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
        assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["t", "c", "z", "y", "x"]
        arr = tensorstore.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "0")}}
        ).result()
        data = arr.read().result()
        assert data.shape == (3, 2, 4, 32, 48)
        assert data[2, 1, 3, 0, 0] == 1000 * p + 100 + 30 + 2
    lines = [json.loads(x) for x in (run.path / "frames.jsonl").read_text().splitlines()]
    assert lines[9]["file"] == "raw.p1.ome.zarr" and lines[9]["page"] == 1


@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
@pytest.mark.parametrize("source", ["run folder", "file", "file without frames.jsonl"])
def test_replay_reproduces_the_dimensions(tmp_path: Path, fmt: str, source: str) -> None:
    from smartscope.drivers.replay import ReplayDriver

    if fmt == "ome-zarr":
        pytest.importorskip("tensorstore")
    run = RunFolder(tmp_path, "r", fmt=fmt, layout=({"t": 3, "p": 2, "c": 2, "z": 4}, "tpgcz"))
    written = _frames()
    run.write_raw(written)
    run.close()
    if source == "run folder":
        path = run.path
    else:
        path = run.path / ("raw.ome.tif" if fmt == "ome-tiff" else "raw.p1.ome.zarr")
        if source == "file without frames.jsonl":
            (run.path / "frames.jsonl").unlink()
    drv = ReplayDriver(path, fps=1000)
    drv.start(None)
    got = []
    while True:
        try:
            f = drv.next_frame(1.0)
        except StopIteration:
            break
        if f is not None:
            got.append(f)
    drv.close()
    expected = (
        written if source == "run folder" or fmt == "ome-tiff" else [f for f in written if f.series == "p1"]
    )
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert np.array_equal(g.image, e.image)
        assert (g.axes.get("t"), g.axes.get("c"), g.axes.get("z")) == (e.axes["t"], e.axes["c"], e.axes["z"])
        if fmt == "ome-tiff" or source == "run folder":
            assert g.series == e.series
        # the pixel size and channel names, from frames.jsonl or else from the file's metadata
        assert g.state is not None and g.state.pixel_size_um == pytest.approx(0.108)
        assert g.channel == e.channel


def _plan_frames(seq: object) -> list[Frame]:
    """Frames as the MDA driver makes them from a useq plan's events: indices, series and
    the series' own shape; each pixel value encodes where the frame belongs."""
    import useq

    from smartscope.config.mda import event_index
    from smartscope.drivers.mda import series_of, series_sizes

    assert isinstance(seq, useq.MDASequence)
    events = list(seq)
    sizes = series_sizes(events, seq.axis_order)
    frames = []
    for i, e in enumerate(events):
        axes = event_index(e)
        t, c, z, p = (axes.get(a, 0) for a in "tczp")
        value = 1 + 1000 * t + 100 * c + 10 * z + p
        f = Frame(i, np.full((16, 24), value, np.uint16), camera_time_s=float(i), axes=axes)
        f.series = series_of(e)
        f.series_sizes = sizes[f.series]
        frames.append(f)
    return frames


RAGGED_PLANS = {
    # a channel imaged without its z-stack, one every other time point, and a position
    # whose own sub-sequence has fewer planes
    "do_stack, acquire_every, sub-sequence": {
        "axis_order": "tpcz",
        "time_plan": {"interval": 0, "loops": 3},
        "z_plan": {"range": 3, "step": 1},
        "channels": [
            {"config": "DAPI", "do_stack": False},
            {"config": "FITC"},
            {"config": "Cy5", "acquire_every": 2},
        ],
        "stage_positions": [
            {"x": 0, "y": 0},
            {"x": 100, "y": 0, "sequence": {"z_plan": {"range": 1, "step": 1}}},
        ],
    },
    "z outside c": {
        "axis_order": "tpzc",
        "time_plan": {"interval": 0, "loops": 2},
        "z_plan": {"range": 2, "step": 1},
        "channels": [{"config": "DAPI"}, {"config": "FITC", "do_stack": False}],
    },
}


@pytest.mark.parametrize("plan", list(RAGGED_PLANS))
def test_ome_zarr_places_frames_of_ragged_plans_by_their_indices(tmp_path: Path, plan: str) -> None:
    import useq

    tensorstore = pytest.importorskip("tensorstore")
    seq = useq.MDASequence.model_validate(RAGGED_PLANS[plan])
    frames = _plan_frames(seq)
    run = RunFolder(tmp_path, "ragged", fmt="ome-zarr", layout=({"c": 3, "z": 4}, "tpcz"))
    run.write_raw(frames[:7])
    run.write_raw(frames[7:])
    run.close()
    lines = [json.loads(x) for x in (run.path / "frames.jsonl").read_text().splitlines()]
    arrays = {}
    for name in {f.series for f in frames}:
        path = run.path / f"raw.{name}.ome.zarr"
        meta = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
        axes = [a["name"] for a in meta["axes"]]
        store = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "0")}}
        arrays[path.name] = (axes, tensorstore.open(store).result().read().result())
    for f, line in zip(frames, lines, strict=True):
        axes, data = arrays[line["file"]]
        plane_shape = data.shape[: len(axes) - 2]
        where = np.unravel_index(line["page"], plane_shape)
        # the frame is stored at its own (t, c, z), whatever the storage order
        assert dict(zip(axes[:-2], (int(i) for i in where), strict=True)) == {
            a: f.axes.get(a, 0) for a in axes[:-2]
        }
        assert np.array_equal(data[where], f.image)
    # a position's own shape: p1 has 2 planes per channel, p0 has 4
    assert arrays["raw.p0.ome.zarr"][1].shape[:-2] == (
        (3, 3, 4) if plan.startswith("do_stack") else (2, 2, 3)
    )
    if plan.startswith("do_stack"):
        assert arrays["raw.p1.ome.zarr"][1].shape[:-2] == (3, 3, 2)


@pytest.mark.parametrize("source", ["run folder", "image"])
def test_replay_of_a_ragged_ome_zarr_plays_the_frames_taken(tmp_path: Path, source: str) -> None:
    import useq

    from smartscope.drivers.replay import ReplayDriver

    pytest.importorskip("tensorstore")
    seq = useq.MDASequence.model_validate(RAGGED_PLANS["z outside c"])
    written = _plan_frames(seq)
    run = RunFolder(tmp_path, "r", fmt="ome-zarr", layout=({}, "tpcz"))
    run.write_raw(written)
    run.close()
    drv = ReplayDriver(run.path if source == "run folder" else run.path / "raw.p0.ome.zarr", fps=1000)
    drv.start(None)
    got = []
    while (f := _next(drv)) is not None:
        got.append(f)
    drv.close()
    assert [g.image[0, 0] for g in got] == [w.image[0, 0] for w in written]  # no empty planes
    assert [(g.axes.get("t"), g.axes.get("c"), g.axes.get("z")) for g in got] == [
        (w.axes["t"], w.axes["c"], w.axes.get("z", 0)) for w in written
    ]


def _next(drv: object) -> Frame | None:
    from smartscope.drivers.replay import ReplayDriver

    assert isinstance(drv, ReplayDriver)
    while True:
        try:
            f = drv.next_frame(1.0)
        except StopIteration:
            return None
        if f is not None:
            return f


def test_raw_pages_carry_resolution_tags(tmp_path: Path) -> None:
    """Readers that skip the OME header (ImageJ's TIFF reader, tifffile's resolution) see the
    calibrated scale on every raw page; a page without a pixel size says no unit."""
    run = _write(tmp_path)
    with tifffile.TiffFile(run.path / "raw.ome.tif") as tif:
        for page in tif.pages:
            assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
            x, y = page.get_resolution(tifffile.RESUNIT.MICROMETER)
            assert 1 / x == pytest.approx(0.108, rel=1e-4) and 1 / y == pytest.approx(0.108, rel=1e-4)
    run = RunFolder(tmp_path, "no-scale")
    run.write_raw([Frame(0, np.zeros((8, 8), np.uint16), camera_time_s=0.0)])
    run.close()
    with tifffile.TiffFile(run.path / "raw.ome.tif") as tif:
        assert tif.pages.first.resolutionunit == tifffile.RESUNIT.NONE
        assert tif.pages.first.resolution == (1.0, 1.0)


def test_recover_describes_a_killed_ome_zarr_run(tmp_path: Path) -> None:
    """A killed run's OME-Zarr lacks what is written at close (per-frame metadata, steps,
    channels); recover writes them from frames.jsonl, as the close would have."""
    pytest.importorskip("tensorstore")
    run = RunFolder(tmp_path, "zarr", fmt="ome-zarr", layout=({"t": 3, "p": 2, "c": 2, "z": 4}, "tpgcz"))
    run.write_raw(_frames())
    run.close()
    path = run.path / "raw.p1.ome.zarr"
    closed = json.loads((path / "zarr.json").read_text())
    killed = json.loads(json.dumps(closed))
    attrs = killed["attributes"]
    del attrs["ome_writers"]["frame_metadata"], attrs["ome"]["omero"]
    (tf,) = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    tf["scale"] = [1.0] * len(tf["scale"])  # as created, before the close measured the steps
    (path / "zarr.json").write_text(json.dumps(killed))
    recover(run.path)
    got = json.loads((path / "zarr.json").read_text())["attributes"]
    want = closed["attributes"]
    assert got["ome"]["omero"] == want["ome"]["omero"]
    assert got["ome"]["multiscales"] == want["ome"]["multiscales"]  # z 0.5 µm, pixel 0.108 µm, t
    timing = [
        sorted((m["index"], m["delta_t"]) for m in a["ome_writers"]["frame_metadata"]) for a in (got, want)
    ]
    assert timing[0] == timing[1]  # every frame's time since the run's start
