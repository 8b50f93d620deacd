"""``smartscope serve CONFIG_DIR``: a daemon on the acquisition PC that starts runs on command.

It is the in-run :class:`~smartscope.remote.server.RemoteServer` kept alive between runs.
``start`` names one YAML file in ``CONFIG_DIR`` (a bare file name; never a path, never
config text from the network); the file is validated exactly as ``smartscope run`` does
(a bad field is refused with its path and reason), one run at a time. While a run is
going every other command (stop, pause, resume, pause_controller, override, query)
acts on it; between runs ``query`` answers ``running: false`` and the streams stay up.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from smartscope.config.loading import load_config
from smartscope.config.remote import RemoteConfig
from smartscope.exceptions import InvalidValue
from smartscope.loop import Loop, RunResult, StopReason
from smartscope.remote.commands import StartCmd
from smartscope.remote.server import RemoteServer
from smartscope.runner import run

log = logging.getLogger(__name__)

__all__ = ["RunService"]


class RunService:
    def __init__(self, remote_cfg: RemoteConfig, config_dir: Path, report: bool = True) -> None:
        if not config_dir.is_dir():
            raise FileNotFoundError(f"config folder {str(config_dir)!r} does not exist")
        self.config_dir = config_dir.resolve()
        self.report = report
        self._thread: threading.Thread | None = None
        self._attached = threading.Event()
        self.last_result: RunResult | None = None
        self.last_error: str | None = None
        self.server = RemoteServer(remote_cfg, starter=self._start)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _start(self, cmd: StartCmd, peer: str) -> dict[str, Any]:

        if self.running:
            raise RuntimeError("a run is in progress; stop it first")
        path = (self.config_dir / cmd.config).resolve()
        if path.parent != self.config_dir or not path.is_file():
            raise InvalidValue(f"config: {cmd.config!r} is not a file in the served config folder")
        cfg = load_config(path)  # ConfigError (a ValueError) names every bad field
        self._attached.clear()
        self.last_error = None
        self._thread = threading.Thread(target=self._run, args=(cfg, peer), name="smartscope-served-run")
        self._thread.start()
        if not self._attached.wait(60) or self.last_error is not None:
            raise RuntimeError(f"run from {cmd.config!r} did not start: {self.last_error or 'timeout'}")
        loop = self.server.loop
        return {"started": cmd.config, "run_dir": str(loop.run.path) if loop is not None else None}

    def _attach(self, loop: Loop) -> None:
        self.server.attach(loop)
        self._attached.set()

    def _run(self, cfg: Any, peer: str) -> None:

        log.info("starting a run for remote:%s", peer)
        try:
            self.last_result = run(cfg, report=self.report, on_loop=self._attach)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("served run failed: %s", self.last_error)
        finally:
            self.server.detach()
            self._attached.set()

    def stop_run(self, timeout_s: float = 60.0) -> None:
        loop = self.server.loop
        if loop is not None:
            loop.request_stop(StopReason.REMOTE, "daemon shutting down")
        if self._thread is not None:
            self._thread.join(timeout_s)

    def close(self) -> None:
        self.stop_run()
        self.server.close()
