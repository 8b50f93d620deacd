"""No silent guesses: what an offline command assumes about its input, it says.

* ``localize``: pixels that are not camera counts (float) are refused without the camera
  numbers; other integer types are read as counts with a warning naming the numbers; a
  stack without a pixel size gets a warning naming the size assumed.
* ``apply``: a warning when the data's pixel size is missing or differs from the model's
  by more than 10 %.
* Both take run folders in either format, every position, and keep the pixel size.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from smartscope.cli import app
from smartscope.frame import Frame
from smartscope.models import shipped_bundle
from smartscope.models.smlm.io import read_picasso
from smartscope.simulators.datasets import smlm_frames
from smartscope.state import DriverState
from smartscope.storage import RunFolder

runner = CliRunner()


@pytest.fixture(scope="module")
def movie() -> np.ndarray:
    frames, _gt, _scene = smlm_frames(12, (32, 32), seed=4, activation_mw=3.0)
    return frames


def _localize(tmp_path: Path, stack: Path, *extra: str) -> tuple[int, str]:
    res = runner.invoke(app, ["localize", str(stack), "--out", str(tmp_path / "locs"), *extra])
    return res.exit_code, res.output


def _px_tif(path: Path, data: np.ndarray, px_um: float | None) -> Path:
    meta: dict[str, object] = {"axes": "TYX"}
    if px_um is not None:
        meta.update(PhysicalSizeX=px_um, PhysicalSizeXUnit="µm", PhysicalSizeY=px_um, PhysicalSizeYUnit="µm")
    tifffile.imwrite(path, data, ome=True, metadata=meta, photometric="minisblack")
    return path


def test_float_pixels_are_refused_without_camera_numbers(tmp_path: Path, movie: np.ndarray) -> None:
    stack = _px_tif(tmp_path / "f.ome.tif", movie.astype(np.float32), 0.1)
    code, out = _localize(tmp_path, stack)
    assert code == 1
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    assert "float32 pixels are not camera counts" in line and "--offset-adu" in line and "f.ome.tif" in line
    # with the numbers given (here: the simulator's camera), they are read as ADU, without a word
    code, out = _localize(tmp_path, stack, "--offset-adu", "100", "--gain-adu-per-e", "2")
    assert code == 0, out
    assert "warning:" not in out


@pytest.mark.parametrize("dtype", ["int32", "uint8"])
def test_other_integer_pixels_are_read_as_counts_with_the_numbers_named(
    tmp_path: Path, movie: np.ndarray, dtype: str
) -> None:
    data = movie if dtype == "int32" else np.clip(movie // 8, 0, 255)
    stack = _px_tif(tmp_path / "i.ome.tif", data.astype(dtype), 0.1)
    code, out = _localize(tmp_path, stack)
    assert code == 0, out
    (line,) = [x for x in out.splitlines() if x.startswith("warning:")]
    assert f"{dtype} pixels read as camera counts" in line
    assert "offset 100 ADU, gain 2 ADU/e⁻" in line and "--camera-file" in line
    code, out = _localize(tmp_path, stack, "--offset-adu", "100", "--gain-adu-per-e", "2")
    assert code == 0 and "warning:" not in out


def test_a_missing_pixel_size_is_named_with_the_value_assumed(tmp_path: Path, movie: np.ndarray) -> None:
    stack = tmp_path / "plain.tif"
    tifffile.imwrite(stack, movie, photometric="minisblack")
    code, out = _localize(tmp_path, stack)
    assert code == 0, out
    assert "warning:" in out and "records no pixel size; assuming 0.1 µm (give --pixel-size-um)" in out
    _tab, meta = read_picasso(tmp_path / "locs" / "localizations.hdf5")
    assert meta["Pixelsize"] == pytest.approx(100.0)
    code, out = _localize(tmp_path, stack, "--pixel-size-um", "0.13")
    assert code == 0 and "warning:" not in out
    _tab, meta = read_picasso(tmp_path / "locs" / "localizations.hdf5")
    assert meta["Pixelsize"] == pytest.approx(130.0)


@pytest.mark.parametrize(
    ("px_um", "warned"),
    [
        (0.105, None),
        (0.2, "pixel size 0.2 µm, but engine 'denoise-n2v-lowlight' was made for 0.1 µm (+100 %)"),
        (None, "records no pixel size; engine 'denoise-n2v-lowlight' expects 0.1 µm"),
    ],
)
def test_apply_warns_when_the_data_and_the_model_pixel_sizes_differ(
    tmp_path: Path, px_um: float | None, warned: str | None
) -> None:
    data = np.random.default_rng(0).poisson(20, (2, 32, 32)).astype(np.uint16)
    src = _px_tif(tmp_path / "cells.ome.tif", data, px_um)
    res = runner.invoke(
        app, ["apply", str(shipped_bundle("denoise-n2v-lowlight")), str(src), "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    warnings = [x for x in res.output.splitlines() if x.startswith("warning:")]
    if warned is None:
        assert warnings == []
    else:
        (line,) = warnings
        assert warned in line and "cells.ome.tif" in line


@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_apply_and_localize_take_run_folders_in_both_formats(
    tmp_path: Path, movie: np.ndarray, fmt: str
) -> None:
    """Every position of a run, at the run's pixel size, whichever format it was written in."""
    pytest.importorskip("tensorstore")
    run = RunFolder(tmp_path, "smlm", fmt=fmt, layout=({"p": 2}, "tp"))
    frames = []
    for i, img in enumerate(movie):
        f = Frame(i, img, camera_time_s=0.1 * i, state=DriverState(exposure_ms=10.0, pixel_size_um=0.108))
        f.axes, f.series = {"t": i // 2, "p": i % 2}, f"p{i % 2}"
        frames.append(f)
    run.write_raw(frames)
    run.close()
    res = runner.invoke(
        app, ["localize", str(run.path), "--out", str(tmp_path / "locs"), "--cluster", "none"]
    )
    assert res.exit_code == 0, res.output
    assert "warning:" not in res.output
    for p in (0, 1):
        _tab, meta = read_picasso(tmp_path / "locs" / f"{run.path.name}.p{p}" / "localizations.hdf5")
        assert meta["Pixelsize"] == pytest.approx(108.0) and meta["Frames"] == 6
    bundle = shipped_bundle("denoise-n2v-lowlight")
    res = runner.invoke(
        app, ["apply", str(bundle), str(run.path), "-o", str(tmp_path / "out"), "--cluster", "none"]
    )
    assert res.exit_code == 0, res.output
    for p in (0, 1):
        out = tmp_path / "out" / f"{run.path.name}.p{p}.denoised.ome.tif"
        with tifffile.TiffFile(out) as tif:
            xml = tif.ome_metadata or ""
            assert tif.series[0].shape[0] == 6
        m = re.search(r'PhysicalSizeX="([^"]+)"', xml)
        assert m is not None and float(m.group(1)) == pytest.approx(0.108)
