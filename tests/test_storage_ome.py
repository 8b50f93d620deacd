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
