"""Inputs of the offline commands: files, globs, run folders, OME-Zarr; lazy reads; scales."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from smartscope.batch.stacks import Stack, StackError, StackReader, resolve_inputs
from smartscope.frame import Frame
from smartscope.state import DriverState
from smartscope.storage import RunFolder

zarr = pytest.importorskip("zarr")


def _ome(path: Path, data: np.ndarray, axes: str, px_um: float | None = None, **meta: object) -> Path:
    md: dict[str, object] = {"axes": axes, **meta}
    if px_um is not None:
        md.update(PhysicalSizeX=px_um, PhysicalSizeXUnit="µm", PhysicalSizeY=px_um, PhysicalSizeYUnit="µm")
    tifffile.imwrite(path, data, ome=True, metadata=md, photometric="minisblack")
    return path


def write_ome_zarr(path: Path, data: np.ndarray, axes: str, px_um: float, version: str = "0.4") -> Path:
    """An OME-Zarr image (one resolution level), as ome-zarr-py and bioformats2raw write it."""
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    ax = [{"name": a, "type": kinds[a], **({"unit": "micrometer"} if a in "yx" else {})} for a in axes]
    scale = [px_um if a in "yx" else 1.0 for a in axes]
    ms = {
        "axes": ax,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }
    if version == "0.4":
        g = zarr.open_group(str(path), mode="w", zarr_format=2)
        g.attrs["multiscales"] = [{"version": "0.4", **ms}]
    else:
        g = zarr.open_group(str(path), mode="w", zarr_format=3)
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    chunks = tuple(1 if a not in "yx" else n for a, n in zip(axes, data.shape, strict=True))
    arr = g.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype)
    arr[:] = data
    return path


def _all(stack: Stack) -> np.ndarray:
    with StackReader(stack) as r:
        return np.stack([f for _, f in r.frames(0, stack.n_frames)])


def test_tiff_layouts_scales_and_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tcyx = rng.integers(0, 4000, (5, 3, 12, 16), dtype=np.uint16)
    _ome(tmp_path / "a.ome.tif", tcyx, "TCYX", 0.065, Channel={"Name": ["dapi", "gfp", "phase"]})
    tzyx = rng.integers(0, 4000, (2, 4, 12, 16), dtype=np.uint16)
    _ome(tmp_path / "b.ome.tif", tzyx, "TZYX", None, PhysicalSizeX=130, PhysicalSizeXUnit="nm")
    plain = rng.integers(0, 4000, (7, 12, 16), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", plain)
    tifffile.imwrite(
        tmp_path / "d.tif", plain, imagej=True, resolution=(1 / 0.16, 1 / 0.16), metadata={"unit": "um"}
    )
    a, b, c, d = resolve_inputs([str(tmp_path / n) for n in ("a.ome.tif", "b.ome.tif", "c.tif", "d.tif")])

    assert (a.frame_axes, a.n_frames, a.channels, a.pixel_size_um) == (
        "T",
        5,
        ("dapi", "gfp", "phase"),
        (0.065, 0.065),
    )
    np.testing.assert_array_equal(_all(a), tcyx)
    with StackReader(a) as r:  # a subset of channels, in the order asked
        np.testing.assert_array_equal(r.frame(3, [2, 0]), tcyx[3, [2, 0]])
    assert (b.frame_axes, b.frame_shape, b.n_channels) == ("TZ", (2, 4), 1)
    assert b.pixel_size_um is not None and b.pixel_size_um[1] == pytest.approx(0.13)
    np.testing.assert_array_equal(_all(b)[:, 0], tzyx.reshape(8, 12, 16))  # frames in C order over T, Z
    assert c.n_frames == 7 and c.pixel_size_um is None
    np.testing.assert_array_equal(_all(c)[:, 0], plain)
    assert d.pixel_size_um == pytest.approx((0.16, 0.16))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_read_lazily_with_its_scale(tmp_path: Path, version: str) -> None:
    data = np.random.default_rng(1).integers(0, 4000, (6, 2, 1, 20, 24), dtype=np.uint16)
    path = write_ome_zarr(tmp_path / "img.ome.zarr", data, "tczyx", 0.108, version)
    (s,) = resolve_inputs([path])
    assert (s.kind, s.name, s.frame_axes, s.frame_shape, s.n_channels) == ("zarr", "img", "TZ", (6, 1), 2)
    assert s.pixel_size_um == pytest.approx((0.108, 0.108))
    np.testing.assert_array_equal(_all(s), data[:, :, 0])


def test_run_folders_globs_folders_and_unique_names(tmp_path: Path) -> None:
    runs = []
    for k in range(2):
        rf = RunFolder(tmp_path / "archive", f"smlm{k}")
        rf.write_raw(
            [
                Frame(
                    i,
                    np.full((8, 10), 100 + i, np.uint16),
                    camera_time_s=float(i),
                    state=DriverState(exposure_ms=10.0),
                )
                for i in range(4)
            ]
        )
        rf.close()
        runs.append(rf.path)
    (tmp_path / "loose").mkdir()
    for name in ("x.tif", "y.tiff"):
        tifffile.imwrite(tmp_path / "loose" / name, np.zeros((3, 8, 10), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((2, 8, 10), np.uint16))

    by_run = resolve_inputs([runs[0]])  # a run folder: its raw*.ome.tif, named after the run
    assert [s.name for s in by_run] == [runs[0].name] and by_run[0].n_frames == 4
    np.testing.assert_array_equal(_all(by_run[0])[:, 0, 0, 0], [100, 101, 102, 103])
    archive = resolve_inputs([tmp_path / "archive"])  # a folder of run folders
    assert [s.name for s in archive] == [r.name for r in runs]
    globbed = resolve_inputs([str(tmp_path / "loose" / "*.tif*"), tmp_path / "x.tif"])
    assert [s.name for s in globbed] == ["x", "y", "x-2"]  # unique names in input order
    assert len(resolve_inputs([tmp_path / "loose", str(tmp_path / "loose" / "x.tif")])) == 2  # once each


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "missing.tif", "does not exist"),
        (lambda p: p / "*.nothing", "no file matches"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "not a TIFF"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no TIFF stacks"),
        (lambda p: (p / "bad.tif").write_bytes(b"not a tiff") and p / "bad.tif", "not a readable TIFF"),
        (
            lambda p: (
                tifffile.imwrite(p / "rgb.tif", np.zeros((4, 4, 3), np.uint8), photometric="rgb")
                or p / "rgb.tif"
            ),
            "RGB",
        ),
    ],
)
def test_bad_inputs_are_named_with_the_reason(tmp_path: Path, make, match: str) -> None:
    target = make(tmp_path)
    with pytest.raises(StackError, match=match) as err:
        resolve_inputs([str(target)])
    assert "\n" not in str(err.value)


def test_reading_keeps_one_frame_in_memory(tmp_path: Path) -> None:
    """Frames come page by page: the peak of Python allocations stays near one frame,
    whatever the stack's size (here 300 frames, 19.7 MB)."""
    frame_bytes = 128 * 256 * 2
    with tifffile.TiffWriter(tmp_path / "big.tif", bigtiff=True) as tw:
        for i in range(300):
            tw.write(np.full((128, 256), i, np.uint16), contiguous=True)
    (s,) = resolve_inputs([tmp_path / "big.tif"])
    assert s.n_frames == 300
    tracemalloc.start()
    with StackReader(s) as r:
        total = sum(int(f[0, 0, 0]) for _, f in r.frames(0, s.n_frames))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == sum(range(300))
    assert peak < 8 * frame_bytes, f"peak {peak / 1e6:.1f} MB for a 19.7 MB stack"


@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_a_multi_position_run_is_one_stack_per_position_at_its_scale(tmp_path: Path, fmt: str) -> None:
    """Every position of a run (OME-TIFF series, or one OME-Zarr image each) is an input of
    its own, with the run's channel names and pixel size; frame i is the same plane in both."""
    from tests.test_storage_ome import CHANNELS, _frames

    pytest.importorskip("tensorstore")
    run = RunFolder(tmp_path, "multi", fmt=fmt, layout=({"t": 3, "p": 2, "c": 2, "z": 4}, "tpgcz"))
    written = _frames()  # 2 positions x 3 t x 2 channels x 4 z at 0.108 µm
    run.write_raw(written)
    run.close()
    stacks = resolve_inputs([run.path])
    assert [s.name for s in stacks] == [f"{run.path.name}.p0", f"{run.path.name}.p1"]
    for p, s in enumerate(stacks):
        assert s.channels == CHANNELS and s.pixel_size_um == pytest.approx((0.108, 0.108))
        assert s.frame_axes == "TZ" and s.frame_shape == (3, 4)
        mine = {(f.axes["t"], f.axes["z"], f.axes["c"]): f.image for f in written if f.axes["p"] == p}
        with StackReader(s) as r:
            for i in range(s.n_frames):
                t, z = np.unravel_index(i, s.frame_shape)
                got = r.frame(i)
                for c in range(2):
                    np.testing.assert_array_equal(got[c], mine[(t, z, c)])
    if fmt == "ome-zarr":  # one position's image on its own is named after the run and position
        (one,) = resolve_inputs([run.path / "raw.p1.ome.zarr"])
        assert one.name == f"{run.path.name}.p1"
