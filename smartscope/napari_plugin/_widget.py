"""The plugin's dock widgets (Qt): connect to a live run, and a run's action log as a table.

* :class:`LiveWidget`: host and ports of a run's ``remote:`` section, then the live
  controls of :func:`smartscope.remote.viewer.make_widget` (frames and outputs as layers,
  stop / pause / resume, pause one controller, exposure override, the actions as audited).
* :class:`ActionLogWidget`: the ``actions.jsonl`` of the run whose layers are open (layers
  read from a run folder carry ``metadata["smartscope_run"]``), one row per action.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from smartscope.napari_plugin._run import action_rows

__all__ = ["ActionLogWidget", "LiveWidget"]

COLUMNS = ("seq", "frame", "source", "action", "verdict", "applied", "reason")


class LiveWidget(QWidget):
    """Connect to a running loop's stream and control socket."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.client: Any = None
        self.live: Any = None
        self._layout = QVBoxLayout(self)
        layout = self._layout
        form = QFormLayout()
        self.host = QLineEdit("127.0.0.1")
        self.pub_port = QSpinBox()
        self.control_port = QSpinBox()
        for box, value in ((self.pub_port, 5560), (self.control_port, 5561)):
            box.setRange(1, 65535)
            box.setValue(value)
        form.addRow("host", self.host)
        form.addRow("stream port", self.pub_port)
        form.addRow("control port", self.control_port)
        layout.addLayout(form)
        self.connect_button = QPushButton("connect")
        self.connect_button.clicked.connect(lambda _=False: self.connect_to())
        layout.addWidget(self.connect_button)
        self.status = QLabel("not connected")
        layout.addWidget(self.status)

    def connect_to(
        self, host: str | None = None, pub_port: int | None = None, control_port: int | None = None
    ) -> None:
        """Subscribe to the run's stream and show its controls (closes a previous connection)."""
        from smartscope.remote.client import Client
        from smartscope.remote.viewer import make_widget

        self.close_connection()
        h = host or self.host.text()
        pp = pub_port or self.pub_port.value()
        cp = control_port or self.control_port.value()
        self.client = Client(h, pp, cp)
        self.client.subscribe()
        self.live = make_widget(self.viewer, self.client)
        self._layout.addWidget(self.live)
        self.status.setText(f"streaming from {h}:{pp} (control {cp})")
        self.live.refresh_controllers()

    def close_connection(self) -> None:
        if self.live is not None:
            self.live.close()
            self.live.deleteLater()
            self.live = None
        if self.client is not None:
            self.client.close()
            self.client = None

    def closeEvent(self, event: Any) -> None:
        self.disconnect()
        super().closeEvent(event)


class ActionLogWidget(QWidget):
    """The action log (audit records) of the run open in the viewer, as a table."""

    def __init__(self, napari_viewer: Any, run_dir: str | Path | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.run_dir: Path | None = Path(run_dir) if run_dir is not None else None
        layout = QVBoxLayout(self)
        self.title = QLabel("")
        layout.addWidget(self.title)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        layout.addWidget(self.table)
        reload_button = QPushButton("reload")
        reload_button.clicked.connect(lambda _=False: self.reload())
        layout.addWidget(reload_button)
        napari_viewer.layers.events.inserted.connect(lambda _event=None: self.reload())
        self.reload()

    def _find_run(self) -> Path | None:
        if self.run_dir is not None:
            return self.run_dir
        for layer in reversed(list(self.viewer.layers)):
            run = layer.metadata.get("smartscope_run")
            if run:
                return Path(run)
        return None

    def reload(self) -> None:
        run = self._find_run()
        rows = action_rows(run) if run is not None else []
        self.title.setText(f"{len(rows)} actions in {run.name}" if run is not None else "no run open")
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, col in enumerate(COLUMNS):
                v = row[col]
                self.table.setItem(i, j, QTableWidgetItem("" if v is None else str(v)))
        self.table.resizeColumnsToContents()
