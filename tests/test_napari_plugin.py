"""The napari plugin, headless (napari's own ViewerModel, offscreen Qt): manifest and what its
readers claim, run folders in both formats (channels as named layers on axes t, p, z, y, x in
s and µm), OME images and tables, the action log table, the live widget and ``smartscope view``.

napari's own pytest plugin stays disabled (``-p no:napari`` in pyproject): its fixtures are
not needed here, and it would import napari/Qt for every test of the suite.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
napari = pytest.importorskip("napari")

from smartscope.cli import app  # noqa: E402
from smartscope.models.smlm.table import LocTable  # noqa: E402
from smartscope.storage import read_jsonl  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def smlm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smlm")
    res = runner.invoke(app, ["demo", "--scenario", "smlm", "--frames", "40", "--out", str(out)])
    assert res.exit_code == 0, res.output
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("denoise")
    res = runner.invoke(app, ["demo", "--frames", "24", "--denoise", "--out", str(out)])
    assert res.exit_code == 0, res.output
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def _viewer() -> Any:
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    return ViewerModel()


def test_manifest_is_discovered_and_valid() -> None:
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    man = pm.get_manifest("smartscope")
    assert man.display_name == "smartscope"
    readers = {r.command for r in man.contributions.readers or []}
    widgets = {w.display_name for w in man.contributions.widgets or []}
    assert readers == {"smartscope.read_run", "smartscope.read_ome", "smartscope.read_table"}
    assert widgets == {"Live run", "Action log"}


def test_napari_opens_a_plain_tiff_with_its_own_reader_without_asking(tmp_path: Path) -> None:
    """The plugin claims run folders, OME files and localization tables, never every file."""
    from napari.plugins._npe2 import get_readers

    plain = tmp_path / "cells.tif"
    tifffile.imwrite(plain, np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8))
    assert "smartscope" not in get_readers(str(plain))
    v = _viewer()
    (layer,) = v.open(str(plain))  # no plugin named, no MultipleReaderError
    np.testing.assert_array_equal(np.asarray(layer.data), tifffile.imread(plain))
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    assert "smartscope" not in get_readers(str(tmp_path / "table.csv"))
    for name in ("x.ome.tif", "localizations.csv", "localizations_thunderstorm.csv", "movie_locs.hdf5"):
        assert "smartscope" in get_readers(str(tmp_path / name)), name


def test_smlm_run_folder_layers_scales_and_counts(smlm_run: Path) -> None:
    v = _viewer()
    v.open(str(smlm_run), plugin="smartscope")
    layers = {layer.name: layer for layer in v.layers}
    assert set(layers) == {"raw", "superres_gaussian", "localizations", "run events", "actions"}
    raw = layers["raw"]
    frames = read_jsonl(smlm_run / "frames.jsonl")
    stored = len(frames)
    assert raw.data.shape == (stored, 1, 1, 256, 256)  # t, p, z, y, x
    assert raw.axis_labels == ("t", "p", "z", "y", "x")
    assert tuple(raw.scale)[-2:] == pytest.approx((0.1, 0.1))  # the SMLM stage's 0.1 µm camera pixel
    assert [str(u) for u in raw.units][-2:] == ["micrometer", "micrometer"] and str(raw.units[0]) == "second"
    steps = np.diff([f["camera_time_s"] for f in frames])
    assert raw.scale[0] == pytest.approx(float(np.median(steps)))  # the time step in s
    np.testing.assert_array_equal(
        np.asarray(raw.data[7, 0, 0]), tifffile.imread(smlm_run / "raw.ome.tif", key=7)
    )
    assert tuple(layers["superres_gaussian"].scale) == pytest.approx((0.02, 0.02))
    table = LocTable.read_csv(smlm_run / "outputs" / "localizations.csv")
    pts = layers["localizations"]
    assert len(pts.data) == len(table) > 0
    np.testing.assert_array_equal(pts.data[:, 0], table.frame)  # a plain stream: t = frame
    np.testing.assert_allclose(pts.data[:, 3], table.y_nm / 1000 - 0.05)  # µm, on pixel centres
    assert tuple(pts.scale) == pytest.approx((*raw.scale[:3], 1.0, 1.0))  # data already in µm
    np.testing.assert_allclose(pts.features["photons"], table.photons)
    events = layers["run events"]
    run_events = read_jsonl(smlm_run / "events.jsonl")
    assert events.features["event"][0] == "start" and len(events.data) == len(run_events)
    assert events.data[:, 0].min() >= 0 and events.data[:, 0].max() <= stored - 1
    acts = read_jsonl(smlm_run / "actions.jsonl")
    assert len(layers["actions"].data) == len(acts) > 0
    # applied actions sit where they came into force; others (refused, never applied) where decided
    when = [
        a["first_frame_index"] if a.get("first_frame_index") is not None else a["request"]["frame_index"]
        for a in acts
    ]
    np.testing.assert_array_equal(layers["actions"].data[:, 0], when)


def test_engine_output_follows_the_raw_time_axis(denoise_run: Path) -> None:
    v = _viewer()
    v.open(str(denoise_run), plugin="smartscope")
    raw, den = v.layers["raw"], v.layers["denoise.denoised"]
    assert tuple(den.scale) == tuple(raw.scale) and tuple(raw.scale)[-2:] == pytest.approx((0.1, 0.1))
    analysed = sorted(r["index"] for r in read_jsonl(denoise_run / "analysis.jsonl") if r.get("values"))
    with tifffile.TiffFile(denoise_run / "outputs" / "denoise.denoised.ome.tif") as tif:
        outputs = [page.asarray() for page in tif.pages]  # one page per analysed frame
    assert len(outputs) == len(analysed)
    first = analysed[0]
    assert den.data.shape == raw.data.shape
    assert not np.asarray(den.data[first - 1]).any() if first else True  # nothing before the first
    for t in (first, first + 5, raw.data.shape[0] - 1):
        k = int(np.searchsorted(analysed, t, side="right")) - 1  # newest output at or before t
        np.testing.assert_array_equal(np.asarray(den.data[t, 0, 0]), outputs[k])


def test_thunderstorm_and_picasso_tables_open_as_points(smlm_run: Path) -> None:
    table = LocTable.read_csv(smlm_run / "outputs" / "localizations.csv")
    v = _viewer()
    v.open(str(smlm_run / "outputs" / "localizations_thunderstorm.csv"), plugin="smartscope")
    v.open(str(smlm_run / "outputs" / "localizations.hdf5"), plugin="smartscope")
    ts, pic = v.layers
    assert len(ts.data) == len(table)
    assert ts.axis_labels == ("t", "y", "x") and str(ts.units[-1]) == "micrometer"
    # Picasso's file holds the rows inside its frame (pixel centres at integers)
    x_px, y_px = table.x_nm / 100 - 0.5, table.y_nm / 100 - 0.5
    inside = (x_px >= 0) & (y_px >= 0) & (x_px < 256) & (y_px < 256)
    assert len(pic.data) == inside.sum() > 0
    # a ThunderSTORM table does not know the camera pixel: plain µm from the table's origin;
    # Picasso's metadata does, so its points sit on napari's pixel centres like the run's
    np.testing.assert_allclose(np.sort(ts.data[:, 2]), np.sort(table.x_nm / 1000), atol=1e-6)
    np.testing.assert_allclose(np.sort(pic.data[:, 2]), np.sort(table.x_nm[inside] / 1000 - 0.05), atol=1e-5)


def test_action_log_widget_and_view_command(smlm_run: Path) -> None:
    from qtpy.QtWidgets import QApplication

    from smartscope.napari_plugin.cli import populate

    app_ = QApplication.instance() or QApplication([])
    viewer = _viewer()  # `smartscope view` does this on a napari.Viewer (needs OpenGL: not here)
    dock = populate(viewer, smlm_run)
    assert {"raw", "localizations", "actions"} <= {layer.name for layer in viewer.layers}
    acts = read_jsonl(smlm_run / "actions.jsonl")
    assert dock.table.rowCount() == len(acts)
    assert dock.table.item(0, 3).text().startswith("laser_power: laser=405")
    assert dock.title.text() == f"{len(acts)} actions in {smlm_run.name}"
    dock.close()
    assert app_ is not None
    bad = runner.invoke(app, ["view", str(smlm_run / "config.yaml")])
    assert bad.exit_code == 2 and "neither a run folder" in bad.output and "Traceback" not in bad.output


def _mda_run(tmp_path: Path, fmt: str) -> Path:
    """A 2-position × 3 t × 2-channel × 4 z run at 0.108 µm (tests/test_storage_ome.py's)."""
    from smartscope.storage import RunFolder
    from tests.test_storage_ome import _frames

    run = RunFolder(tmp_path, "mda", fmt=fmt, layout=({"t": 3, "p": 2, "c": 2, "z": 4}, "tpgcz"))
    run.write_raw(_frames())
    run.close()
    return run.path


@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_a_run_opens_with_named_axes_units_and_a_layer_per_channel(tmp_path: Path, fmt: str) -> None:
    from smartscope.napari_plugin.cli import populate
    from tests.test_storage_ome import _frames

    if fmt == "ome-zarr":
        pytest.importorskip("tensorstore")
    run = _mda_run(tmp_path, fmt)
    v = _viewer()
    v.open(str(run), plugin="smartscope")
    for name, colour in (("DAPI", "blue"), ("FITC", "green")):
        layer = v.layers[name]
        assert layer.axis_labels == ("t", "p", "z", "y", "x")
        assert layer.data.shape == (3, 2, 4, 32, 48)
        assert tuple(layer.scale)[1:] == pytest.approx((1.0, 0.5, 0.108, 0.108))  # p, z step, pixel
        assert [str(u) for u in layer.units][2:] == ["micrometer"] * 3 and str(layer.units[0]) == "second"
        assert layer.colormap.name == colour
    for f in _frames():  # every frame where its (t, p, c, z) say
        t, p, c, z = (f.axes[a] for a in "tpcz")
        np.testing.assert_array_equal(np.asarray(v.layers[("DAPI", "FITC")[c]].data[t, p, z]), f.image)
    assert tuple(v.dims.axis_labels) == ("t", "p", "z", "y", "x")
    from qtpy.QtWidgets import QApplication

    app_ = QApplication.instance() or QApplication([])  # the action-log dock is a Qt widget
    other = _viewer()  # what `smartscope view` does
    populate(other, run).close()
    assert {"DAPI", "FITC"} <= {layer.name for layer in other.layers}
    assert app_ is not None


@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_an_ome_image_opens_on_its_own_axes_and_scale(tmp_path: Path, fmt: str) -> None:
    if fmt == "ome-zarr":
        pytest.importorskip("tensorstore")
    run = _mda_run(tmp_path, fmt)
    v = _viewer()
    if fmt == "ome-tiff":
        v.open(str(run / "raw.ome.tif"), plugin="smartscope")
        names = {"DAPI p0", "FITC p0", "DAPI p1", "FITC p1"}  # one OME-TIFF, one series per position
    else:
        v.open(str(run / "raw.p1.ome.zarr"), plugin="smartscope")
        names = {"DAPI", "FITC"}
    assert {layer.name for layer in v.layers} == names
    for layer in v.layers:
        assert layer.axis_labels == ("t", "z", "y", "x")
        assert tuple(layer.scale)[1:] == pytest.approx((0.5, 0.108, 0.108))
        assert [str(u) for u in layer.units][1:] == ["micrometer"] * 3


def test_live_widget_connects_streams_and_lists_actions() -> None:
    from qtpy.QtWidgets import QApplication, QLabel, QPushButton

    from smartscope.napari_plugin._widget import LiveWidget
    from smartscope.remote import RemoteConfig
    from smartscope.remote.server import RemoteServer

    app_ = QApplication.instance() or QApplication([])
    viewer = _viewer()
    with RemoteServer(RemoteConfig(pub_port=0, control_port=0, telemetry_interval_s=0.05)) as server:
        w = LiveWidget(viewer)
        w.connect_to("127.0.0.1", server.pub_port, server.control_port)
        try:
            live = w.live
            img = np.full((16, 16), 7, np.uint16)
            audit = {
                "seq": 3,
                "request": {
                    "action": {"kind": "exposure", "exposure_ms": 12.5},
                    "reason": "too dim",
                    "source": "band",
                    "frame_index": 4,
                },
                "verdict": "applied",
                "first_frame_index": 6,
            }
            deadline = time.monotonic() + 10
            while (live.actions.count() == 0 or "raw" not in viewer.layers) and time.monotonic() < deadline:
                server._queue_frame("raw", {"index": 0, "camera_time_s": 0.0, "channel": ""}, {"image": img})
                server._queue_small("action", audit)
                time.sleep(0.05)
                live.poll()
            assert "raw" in viewer.layers
            assert (
                live.actions.item(0).text() == "frame 6 band: exposure exposure_ms=12.5 -> applied (too dim)"
            )
            buttons = {b.text(): b for b in live.findChildren(QPushButton)}
            assert {"stop", "pause", "resume", "pause controller", "resume controller"} <= set(buttons)
            buttons["pause controller"].click()  # no controller listed: no run is attached here
            assert any(
                "no controller selected" in lb.text() or "no run attached" in lb.text()
                for lb in live.findChildren(QLabel)
            )
        finally:
            w.close_connection()
    assert app_ is not None
