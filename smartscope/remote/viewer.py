"""A napari viewer for a remote run: frames, processed channels, the growing SMLM render,
event markers and telemetry, with the control commands one click away.

Two parts:

* :class:`ViewerModel` (no Qt, no napari): turns stream messages into
  :class:`LayerUpdate` s (image layers by name, a points layer of event markers) and a
  telemetry summary. All the logic lives here and is tested headless.
* :func:`make_widget` (needs napari and a Qt binding: the optional ``viewer`` extra):
  a dock widget that polls a :class:`smartscope.remote.Client` on a Qt timer, applies the
  updates to ``napari.Viewer.layers``, lists the actions as they are audited, and offers
  stop / pause / resume, pausing one controller, and an exposure override.
  ``smartscope.remote.viewer.main`` opens it: ``python -m smartscope.remote.viewer --pub-port ...``;
  in napari it is the plugin's "Live run" widget (:mod:`smartscope.napari_plugin`).

Layers: ``raw`` (newest raw frame), ``<stage>:<image>`` for each processed image
(``[c]`` suffix per channel of a (C, Y, X) output), ``smlm render`` (histogram of every
localization streamed so far, ``render_pixel_nm`` per pixel, rendered by
:func:`smartscope.models.smlm.render.render_histogram`), ``events`` (a point per event
that names a position, ``x_px``/``y_px``).
"""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from smartscope.exceptions import InvalidValue
from smartscope.remote.client import Client, RemoteError
from smartscope.remote.wire import Message

__all__ = ["LayerUpdate", "ViewerModel", "main", "make_widget"]


@dataclass
class LayerUpdate:
    name: str
    kind: Literal["image", "points"]
    data: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


class ViewerModel:
    """Stream messages -> layer updates and a telemetry summary (headless)."""

    def __init__(
        self, camera_pixel_nm: float = 100.0, render_pixel_nm: float = 20.0, max_events: int = 500
    ) -> None:
        if camera_pixel_nm <= 0 or render_pixel_nm <= 0:
            raise InvalidValue("camera_pixel_nm and render_pixel_nm must be positive")
        self.camera_pixel_nm = camera_pixel_nm
        self.render_pixel_nm = render_pixel_nm
        self.frame_shape: tuple[int, int] | None = None
        self.render: np.ndarray | None = None
        self.n_localizations = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.actions: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._markers: deque[tuple[float, float]] = deque(maxlen=max_events)
        self.telemetry: dict[str, Any] = {}
        self.last_index: int | None = None

    def apply(self, msg: Message) -> list[LayerUpdate]:
        handler = getattr(self, f"_on_{msg.topic}", None)
        return handler(msg) if handler is not None else []

    def _on_raw(self, msg: Message) -> list[LayerUpdate]:
        img = msg.arrays.get("image")
        if img is None or img.ndim != 2:
            return []
        self.frame_shape = (int(img.shape[0]), int(img.shape[1]))
        self.last_index = msg.meta.get("index")
        return [LayerUpdate("raw", "image", img, {"index": self.last_index})]

    def _on_processed(self, msg: Message) -> list[LayerUpdate]:
        stage = str(msg.meta.get("stage", "stage"))
        out: list[LayerUpdate] = []
        for key, arr in msg.arrays.items():
            if arr.ndim == 2:
                out.append(LayerUpdate(f"{stage}:{key}", "image", arr, {"index": msg.meta.get("index")}))
            elif arr.ndim == 3:
                for c in range(arr.shape[0]):
                    out.append(
                        LayerUpdate(f"{stage}:{key}[{c}]", "image", arr[c], {"index": msg.meta.get("index")})
                    )
        return out

    def _on_localizations(self, msg: Message) -> list[LayerUpdate]:
        x, y = msg.arrays.get("x_nm"), msg.arrays.get("y_nm")
        if x is None or y is None or self.frame_shape is None or x.shape != y.shape:
            return []
        from smartscope.models.smlm.render import render_histogram
        from smartscope.models.smlm.table import COLUMNS, LocTable

        n = x.shape[0]
        cols = {c: msg.arrays.get(c, np.full(n, np.nan)) for c in COLUMNS}
        cols["frame"] = np.full(n, int(msg.meta.get("index", 0)))
        table = LocTable.from_columns(**cols)
        extent = (self.frame_shape[0] * self.camera_pixel_nm, self.frame_shape[1] * self.camera_pixel_nm)
        part = render_histogram(table, self.render_pixel_nm, extent)
        self.render = part if self.render is None or self.render.shape != part.shape else self.render + part
        self.n_localizations += n
        return [LayerUpdate("smlm render", "image", self.render, {"n": self.n_localizations})]

    def _on_event(self, msg: Message) -> list[LayerUpdate]:
        self.events.append(dict(msg.meta))
        x, y = msg.meta.get("x_px"), msg.meta.get("y_px")
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            self._markers.append((float(y), float(x)))
            return [LayerUpdate("events", "points", np.asarray(self._markers, dtype=np.float64))]
        return []

    def _on_action(self, msg: Message) -> list[LayerUpdate]:
        self.actions.append(dict(msg.meta))
        return []

    @staticmethod
    def action_line(record: Mapping[str, Any]) -> str:
        """One audit record as a line: frame, source, action, verdict, reason (the record's own
        ``seq`` is not shown: the stream's per-topic ``seq`` replaces it on the wire)."""
        req = record.get("request") or {}
        act = dict(req.get("action") or {})
        kind = act.pop("kind", "?")
        vals = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in act.items())
        frame = record.get("first_frame_index", req.get("frame_index", "?"))
        return (
            f"frame {frame} {req.get('source', '')}: {kind} {vals} -> "
            f"{record.get('verdict', '?')} ({req.get('reason', '')})"
        )

    def _on_telemetry(self, msg: Message) -> list[LayerUpdate]:
        self.telemetry = dict(msg.meta)
        return []

    def summary(self) -> str:
        """The telemetry as a few human lines."""
        t = self.telemetry
        if not t:
            return "waiting for telemetry..."
        lat = t.get("latency_decision") or {}
        remote = t.get("remote") or {}
        paused = ", ".join(t.get("paused_controllers", [])) or "-"
        lines = [
            f"stored {t.get('frames_stored', 0)}  analysed {t.get('frames_analysed', 0)}  "
            f"skipped {t.get('frames_skipped', 0)}  failed {t.get('frames_failed', 0)}",
            f"{t.get('fps_stored', 0.0):.1f} frames/s  decision p50/p99 "
            f"{lat.get('p50_ms', float('nan')):.1f}/{lat.get('p99_ms', float('nan')):.1f} ms",
            f"actions {t.get('actions_applied', 0)}  paused {paused}",
            f"stream drops (server queue) {remote.get('dropped_queue', 0)}",
        ]
        if t.get("fault"):
            lines.append(f"FAULT: {t['fault']}")
        state = t.get("state")
        if isinstance(state, Mapping):
            shown = {k: v for k, v in state.items() if isinstance(v, (int, float, str))}
            lines.append("  ".join(f"{k}={v}" for k, v in list(shown.items())[:6]))
        return "\n".join(lines)


def apply_to_napari(viewer: Any, updates: list[LayerUpdate]) -> None:
    """Create or refresh napari layers from updates."""
    for u in updates:
        if u.name in viewer.layers:
            viewer.layers[u.name].data = u.data
        elif u.kind == "image":
            viewer.add_image(u.data, name=u.name)
        else:
            viewer.add_points(u.data, name=u.name, size=8, face_color="red")


def make_widget(viewer: Any, client: Client, model: ViewerModel | None = None, interval_ms: int = 30) -> Any:
    """A napari dock widget bound to ``client`` (requires napari and a Qt binding)."""
    try:
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import (
            QComboBox,
            QDoubleSpinBox,
            QHBoxLayout,
            QLabel,
            QListWidget,
            QPushButton,
            QVBoxLayout,
            QWidget,
        )
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            "the viewer needs napari and a Qt binding: pip install 'smartscope[viewer]'"
        ) from exc
    model = model or ViewerModel()
    root: Any = QWidget()
    layout = QVBoxLayout(root)
    label = QLabel(model.summary())
    status = QLabel("")
    layout.addWidget(label)
    buttons = QHBoxLayout()

    def command(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
            status.setText("ok")
        except RemoteError as exc:
            status.setText(f"refused: {exc}")

    for text, fn in (("stop", client.stop), ("pause", client.pause), ("resume", client.resume)):
        b = QPushButton(text)
        b.clicked.connect(lambda _=False, f=fn: command(f))
        buttons.addWidget(b)
    layout.addLayout(buttons)
    row = QHBoxLayout()
    exposure = QDoubleSpinBox()
    exposure.setRange(0.01, 10000.0)
    exposure.setValue(10.0)
    exposure.setSuffix(" ms")
    set_exp = QPushButton("set exposure")
    set_exp.clicked.connect(
        lambda _=False: command(
            client.override, {"kind": "exposure", "exposure_ms": exposure.value()}, "viewer"
        )
    )
    row.addWidget(exposure)
    row.addWidget(set_exp)
    layout.addLayout(row)
    ctl_row = QHBoxLayout()
    controllers = QComboBox()
    controllers.setToolTip("controllers of the run (from a query)")

    def refresh_controllers() -> None:
        try:
            names = client.query().get("controllers", [])
        except RemoteError as exc:
            status.setText(f"refused: {exc}")
            return
        controllers.clear()
        controllers.addItems([str(n) for n in names])

    for text, paused in (("pause controller", True), ("resume controller", False)):
        b = QPushButton(text)
        b.clicked.connect(
            lambda _=False, p=paused: (
                command(client.pause_controller, controllers.currentText(), p)
                if controllers.currentText()
                else status.setText("no controller selected (refresh)")
            )
        )
        ctl_row.addWidget(b)
    refresh = QPushButton("refresh")
    refresh.clicked.connect(lambda _=False: refresh_controllers())
    ctl_row.insertWidget(0, controllers)
    ctl_row.addWidget(refresh)
    layout.addLayout(ctl_row)
    layout.addWidget(QLabel("actions"))
    actions = QListWidget()
    layout.addWidget(actions)
    layout.addWidget(status)

    def poll() -> None:
        for _ in range(50):  # bounded work per tick keeps the GUI responsive
            msg = client.recv(0)
            if msg is None:
                break
            apply_to_napari(viewer, model.apply(msg))
            if msg.topic == "action":
                actions.addItem(model.action_line(msg.meta))
        while actions.count() > (model.actions.maxlen or 500):
            actions.takeItem(0)
        label.setText(model.summary())

    timer = QTimer(root)
    timer.timeout.connect(poll)
    timer.start(interval_ms)
    root.poll = poll  # for tests and scripted use
    root.model = model
    root.actions = actions
    root.controllers = controllers
    root.refresh_controllers = refresh_controllers
    return root


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - interactive
    p = argparse.ArgumentParser(description="napari viewer for a remote smartscope run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--pub-port", type=int, default=5560)
    p.add_argument("--control-port", type=int, default=5561)
    a = p.parse_args(argv)
    import napari

    client = Client(a.host, a.pub_port, a.control_port)
    client.subscribe()
    viewer = napari.Viewer(title="smartscope")
    viewer.window.add_dock_widget(make_widget(viewer, client), name="smartscope", area="right")
    napari.run()
    client.close()


if __name__ == "__main__":  # pragma: no cover
    main()
