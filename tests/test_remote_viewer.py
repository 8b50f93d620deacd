"""The remote viewer: message -> layer logic headless; the napari widget offscreen if installed."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

from smartscope.remote import Client, RemoteConfig
from smartscope.remote.server import RemoteServer
from smartscope.remote.viewer import ViewerModel
from smartscope.remote.wire import Message


def test_frames_and_processed_channels_become_named_image_layers() -> None:
    m = ViewerModel()
    raw = np.arange(12, dtype=np.uint16).reshape(3, 4)
    (u,) = m.apply(Message("raw", {"index": 5}, {"image": raw}))
    assert (u.name, u.kind, u.meta["index"]) == ("raw", "image", 5)
    np.testing.assert_array_equal(u.data, raw)
    den = np.ones((3, 4), np.float32)
    virt = np.stack([np.zeros((3, 4)), np.full((3, 4), 2.0)]).astype(np.float32)
    ups = m.apply(Message("processed", {"index": 5, "stage": "denoise"}, {"denoised": den, "virtual": virt}))
    assert [x.name for x in ups] == ["denoise:denoised", "denoise:virtual[0]", "denoise:virtual[1]"]
    assert float(ups[2].data.mean()) == 2.0


def test_localizations_grow_the_render_where_the_molecules_are() -> None:
    m = ViewerModel(camera_pixel_nm=100.0, render_pixel_nm=50.0)
    assert m.apply(Message("localizations", {"index": 0}, {"x_nm": np.zeros(1), "y_nm": np.zeros(1)})) == []
    m.apply(Message("raw", {"index": 0}, {"image": np.zeros((10, 20), np.uint16)}))  # field 1000 x 2000 nm
    x = np.array([125.0, 125.0, 1990.0, 5000.0])  # the last lies outside the field
    y = np.array([260.0, 260.0, 990.0, 10.0])
    (u,) = m.apply(Message("localizations", {"index": 1, "stage": "smlm"}, {"x_nm": x, "y_nm": y}))
    assert u.data.shape == (20, 40)
    assert u.data[5, 2] == 2 and u.data[19, 39] == 1 and u.data.sum() == 3
    (u2,) = m.apply(Message("localizations", {"index": 2}, {"x_nm": x[:1], "y_nm": y[:1]}))
    assert u2.data[5, 2] == 3 and m.n_localizations == 5


def test_events_with_positions_become_markers_and_telemetry_a_summary() -> None:
    m = ViewerModel()
    assert m.apply(Message("event", {"event": "start"})) == []
    (u,) = m.apply(Message("event", {"event": "burst", "x_px": 3.0, "y_px": 7.5}))
    assert u.kind == "points" and u.data.tolist() == [[7.5, 3.0]]
    assert [e["event"] for e in m.events] == ["start", "burst"]
    assert m.summary().startswith("waiting")
    m.apply(
        Message(
            "telemetry",
            {
                "frames_stored": 120,
                "frames_analysed": 100,
                "frames_skipped": 20,
                "frames_failed": 0,
                "fps_stored": 49.5,
                "latency_decision": {"p50_ms": 12.25, "p99_ms": 30.0},
                "paused_controllers": ["laser_band"],
                "remote": {"dropped_queue": 3},
                "state": {"exposure_ms": 20.0},
            },
        )
    )
    s = m.summary()
    assert "stored 120" in s and "skipped 20" in s and "49.5 frames/s" in s and "12.2/30.0 ms" in s
    assert "laser_band" in s and "exposure_ms=20.0" in s


def test_napari_widget_shows_a_live_stream_offscreen() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    pytest.importorskip("napari")
    from napari.components import ViewerModel as NapariViewerModel  # napari's layers, no OpenGL canvas
    from qtpy.QtWidgets import QApplication

    from smartscope.remote.viewer import make_widget

    app = QApplication.instance() or QApplication([])

    with RemoteServer(RemoteConfig(pub_port=0, control_port=0, telemetry_interval_s=0.05)) as server:
        client = Client(pub_port=server.pub_port, control_port=server.control_port)
        client.subscribe()
        viewer = NapariViewerModel()
        try:
            widget: Any = make_widget(viewer, client)
            img = np.random.default_rng(0).integers(0, 4000, (32, 32), dtype=np.uint16)
            deadline = time.monotonic() + 10
            while "raw" not in viewer.layers and time.monotonic() < deadline:
                server._queue_frame("raw", {"index": 0, "camera_time_s": 0.0, "channel": ""}, {"image": img})
                time.sleep(0.05)
                widget.poll()
            np.testing.assert_array_equal(viewer.layers["raw"].data, img)
            while not widget.model.telemetry and time.monotonic() < deadline:
                time.sleep(0.05)
                widget.poll()
            assert "stream drops" in widget.model.summary()
            from qtpy.QtWidgets import QLabel, QPushButton

            buttons = {b.text(): b for b in widget.findChildren(QPushButton)}
            assert set(buttons) == {
                "stop",
                "pause",
                "resume",
                "set exposure",
                "pause controller",
                "resume controller",
                "refresh",
            }
            buttons["pause"].click()  # a real command round trip; no run is attached here
            assert any(
                "refused" in lb.text() and "no run attached" in lb.text()
                for lb in widget.findChildren(QLabel)
            )
            widget.close()
        finally:
            client.close()
        assert app is not None


def test_watch_command_prints_the_streamed_telemetry() -> None:
    import typer
    from typer.testing import CliRunner

    from smartscope.remote.cli import watch_cmd

    app = typer.Typer()
    app.command()(watch_cmd)
    with RemoteServer(RemoteConfig(pub_port=0, control_port=0, telemetry_interval_s=0.1)) as server:
        args = [
            "--pub-port",
            str(server.pub_port),
            "--control-port",
            str(server.control_port),
            "--seconds",
            "1.5",
        ]
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "stream drops (server queue) 0" in res.output
