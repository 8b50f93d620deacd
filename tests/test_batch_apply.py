"""``smartscope apply``: shipped bundles over real files, in one process (ONNX Runtime)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from smartscope.cli import app
from smartscope.engines.runtime import Engine
from smartscope.models import shipped_bundle
from smartscope.simulators.datasets import denoise_pairs, write_dataset
from tests.test_batch_stacks import write_ome_zarr

runner = CliRunner()


def _read(path: Path) -> tuple[np.ndarray, str, str]:
    """(data, OME-XML, axes as written) of an OME-TIFF."""
    with tifffile.TiffFile(path) as tf:
        xml = tf.ome_metadata or ""
        order = re.search(r'DimensionOrder="(\w+)"', xml)
        assert order is not None
        return tf.series[0].asarray(), xml, order.group(1)


def _physical(xml: str) -> tuple[float, float]:
    x = re.search(r'PhysicalSizeX="([^"]+)"', xml)
    y = re.search(r'PhysicalSizeY="([^"]+)"', xml)
    assert x and y, "no physical pixel size in the output"
    assert 'PhysicalSizeXUnit="µm"' in xml
    return float(y.group(1)), float(x.group(1))


def test_apply_denoiser_tiles_large_frames_and_keeps_the_scale(tmp_path: Path) -> None:
    noisy, _ = denoise_pairs(3, (300, 280), seed=5)
    raw = noisy.astype(np.uint16)  # larger than the 256 px tile: 2 x 2 blended tiles
    src = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        src,
        raw,
        ome=True,
        photometric="minisblack",
        metadata={"axes": "TYX", "PhysicalSizeX": 0.065, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.065},
    )
    bundle = shipped_bundle("denoise-n2v-lowlight")
    res = runner.invoke(app, ["apply", str(bundle), str(src), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    data, xml, _ = _read(tmp_path / "out" / "cells.denoised.ome.tif")
    assert data.dtype == np.float32 and data.shape[-2:] == (300, 280) and data.size == raw.size
    assert _physical(xml) == (0.065, 0.065)
    assert 'Name="fluorescence"' in xml
    eng = Engine.open(bundle, "onnxruntime")
    want = np.stack([eng.infer(f)["denoised"] for f in raw])
    np.testing.assert_allclose(data.reshape(want.shape), want, rtol=1e-6, atol=1e-4)
    assert not list((tmp_path / "out").glob(".*")), "temporary files left behind"


def test_apply_stain_assembles_completion_channels_by_name(tmp_path: Path) -> None:
    from smartscope.models.stain.predict import predict

    write_dataset("cells", 2, tmp_path / "cells", seed=2, size=96)  # TCYX: 3 fluorescence + label_free
    src = tmp_path / "cells" / "raw.ome.tif"
    bundle = shipped_bundle("stain-l1-small")
    out = tmp_path / "out"
    only_lf = runner.invoke(
        app, ["apply", str(bundle), str(src), "-o", str(out / "lf"), "--channels", "label_free"]
    )
    assert only_lf.exit_code == 0, only_lf.output
    given = runner.invoke(app, ["apply", str(bundle), str(src), "-o", str(out / "all")])
    assert given.exit_code == 0, given.output

    raw = tifffile.imread(src)  # (T, C, Y, X); channels nuclei, mitochondria, membrane, label_free
    eng = Engine.open(bundle, "onnxruntime")
    names = ["nuclei", "mitochondria", "membrane"]
    lf_pred = np.stack([predict(eng, f[3], tta=1).virtual for f in raw])
    all_pred = np.stack(
        [predict(eng, f[3], dict(zip(names, f[:3], strict=True)), tta=1).virtual for f in raw]
    )
    got_lf, xml, order = _read(out / "lf" / "raw.virtual.ome.tif")
    got_all, _, _ = _read(out / "all" / "raw.virtual.ome.tif")
    np.testing.assert_allclose(got_lf.reshape(lf_pred.shape), lf_pred, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_all.reshape(all_pred.shape), all_pred, rtol=1e-5, atol=1e-5)
    assert not np.allclose(lf_pred, all_pred)  # the given channels did change the prediction
    assert order == "XYZCT" and [f'Name="{n}"' in xml for n in names] == [True] * 3
    assert _physical(xml) == (0.1, 0.1)


def test_apply_ome_zarr_keeps_its_axes_and_scale(tmp_path: Path) -> None:
    noisy, _ = denoise_pairs(4, (64, 72), seed=1)
    data = noisy.astype(np.uint16).reshape(2, 1, 2, 64, 72)  # t, c, z, y, x
    src = write_ome_zarr(tmp_path / "stack.ome.zarr", data, "tczyx", 0.108, "0.5")
    res = runner.invoke(
        app, ["apply", str(shipped_bundle("denoise-care-lowlight")), str(src), "-o", str(tmp_path / "out")]
    )
    assert res.exit_code == 0, res.output
    got, xml, _ = _read(tmp_path / "out" / "stack.denoised.ome.tif")
    with tifffile.TiffFile(tmp_path / "out" / "stack.denoised.ome.tif") as tf:
        assert tf.series[0].axes == "TZYX" and tf.series[0].shape == (2, 2, 64, 72)
    assert _physical(xml) == pytest.approx((0.108, 0.108))
    eng = Engine.open(shipped_bundle("denoise-care-lowlight"), "onnxruntime")
    want = np.stack([eng.infer(f)["denoised"][0] for f in data[:, 0].reshape(4, 64, 72)])
    np.testing.assert_allclose(got.reshape(4, 64, 72), want, rtol=1e-6, atol=1e-4)


def test_apply_refuses_mismatched_channels_and_bad_bundles(tmp_path: Path) -> None:
    src = tmp_path / "two.ome.tif"
    tifffile.imwrite(
        src,
        np.zeros((2, 2, 32, 32), np.uint16),
        ome=True,
        metadata={"axes": "TCYX", "Channel": {"Name": ["a", "b"]}},
    )
    res = runner.invoke(
        app, ["apply", str(shipped_bundle("denoise-n2v-lowlight")), str(src), "-o", str(tmp_path)]
    )
    assert res.exit_code == 1
    assert (
        "two.ome.tif: has channels ['a', 'b']; engine 'denoise-n2v-lowlight' takes ['fluorescence']"
        in res.output
    )
    res = runner.invoke(app, ["apply", str(tmp_path / "nobundle"), str(src), "-o", str(tmp_path)])
    assert res.exit_code == 1 and "bundle not found" in res.output
    res = runner.invoke(
        app,
        [
            "apply",
            str(shipped_bundle("denoise-n2v-lowlight")),
            str(src),
            "-o",
            str(tmp_path),
            "--channels",
            "c",
        ],
    )
    assert res.exit_code == 1 and "--channels ['c'] not among its channels ['a', 'b']" in res.output
    assert not (tmp_path / "two.denoised.ome.tif").exists()
