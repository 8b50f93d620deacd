"""Remote engines: a worker process runs a pipeline stage; the loop calls it like a local one.

Worker side (``smartscope worker --stage '{"kind": "engine", "bundle": "..."}'``): a ROUTER
socket; each request is a wire message ``process`` with the frame (meta: index,
camera_time_s, channel; array ``image``); the worker builds the Frame, runs its ordinary
local stage (any pipeline stage config: ``engine``, ``stats``, ``smlm``...) and answers
``result`` (meta: values, rows, worker_ms; one float32 array per output image) or
``error``. Requests are served in order; the stage sees no upstream results (a remote
stage analyses the raw frame).

Loop side: :class:`smartscope.remote.stage.RemoteStage` (config ``kind: remote``).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from pydantic import TypeAdapter, ValidationError

from smartscope import registry
from smartscope.config.remote import is_loopback
from smartscope.config.stages import StageConfig
from smartscope.exceptions import InvalidValue
from smartscope.frame import Frame, now_s
from smartscope.pipeline import Stage
from smartscope.remote import wire
from smartscope.remote.keys import (
    CurveAuthenticator,
    apply_server_keys,
    load_authorized,
)

log = logging.getLogger(__name__)

__all__ = ["Worker", "build_stage", "spawn_worker"]

MAX_REQUEST_BYTES = 1 << 30


# -------------------------------------------------------------------- worker


def build_stage(stage_config: Mapping[str, Any] | str) -> Stage:
    """A local stage from a pipeline-stage config (a mapping or its JSON text)."""
    data = json.loads(stage_config) if isinstance(stage_config, str) else dict(stage_config)
    if data.get("kind") == "remote":
        raise InvalidValue("stage.kind: a worker cannot run a remote stage (it would call itself)")
    try:
        cfg: Any = TypeAdapter(StageConfig).validate_python(data)
    except ValidationError as exc:
        probs = "; ".join(f"stage.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidValue(probs) from None
    return registry.build_stage(cfg)


class Worker:
    """Serves one stage on ``tcp://bind_address:port`` until :meth:`close`."""

    def __init__(
        self,
        stage: Stage,
        bind_address: str = "127.0.0.1",
        port: int = 5570,
        server_secret_key: Path | None = None,
        authorized_keys: Path | None = None,
    ) -> None:
        if (server_secret_key is None) != (authorized_keys is None):
            raise InvalidValue("server_secret_key and authorized_keys go together (CurveZMQ)")
        if not is_loopback(bind_address) and server_secret_key is None:
            raise InvalidValue(
                f"bind address {bind_address!r} is not loopback: a worker listening there needs "
                "CurveZMQ keys (make them with `smartscope keys`)"
            )
        self.stage = stage
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._auth = (
            CurveAuthenticator(self.ctx, load_authorized(authorized_keys)) if authorized_keys else None
        )
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.maxmsgsize = MAX_REQUEST_BYTES
        if server_secret_key is not None:
            self.sock.zap_domain = b"smartscope"
            apply_server_keys(self.sock, server_secret_key)
        host = f"[{bind_address}]" if ":" in bind_address else bind_address
        self.port = int(self.sock.bind_to_random_port(f"tcp://{host}")) if port == 0 else port
        if port:
            self.sock.bind(f"tcp://{host}:{port}")
        self.address = f"tcp://{bind_address}:{self.port}"
        self.served = 0
        self.refused = 0
        self.failed = 0
        self._stop = threading.Event()

    def serve(self, max_requests: int | None = None) -> None:
        """Answer requests until :meth:`stop` (or ``max_requests`` answered)."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            if max_requests is not None and self.served >= max_requests:
                return
            try:
                if not poller.poll(100):
                    continue
                frames = self.sock.recv_multipart(copy=False)
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
                continue
            try:
                self._handle(frames)
            except Exception as exc:  # never die on one request
                self.failed += 1
                log.error("worker: %s: %s", type(exc).__name__, exc)

    def _handle(self, frames: list[zmq.Frame]) -> None:
        envelope = [frames[0].bytes]
        try:
            req = wire.decode(frames[1:])
            image = req.arrays.get("image")
            if req.topic != "process" or image is None or image.ndim != 2:
                raise wire.WireError("expected 'process' with a 2-D array 'image'")
            seq, index = req.meta.get("seq"), req.meta.get("index")
            if not isinstance(seq, int) or not isinstance(index, int):
                raise wire.WireError("meta.seq and meta.index must be integers")
        except wire.WireError as exc:
            self.refused += 1
            self._answer(envelope, "error", {"seq": None, "error": f"malformed request: {exc}"})
            return
        cam_t = req.meta.get("camera_time_s")
        frame = Frame(
            index=index,
            image=image,
            camera_time_s=float(cam_t) if isinstance(cam_t, (int, float)) else now_s(),
            channel=str(req.meta.get("channel", "")),
        )
        t0 = time.perf_counter()
        try:
            out = self.stage.process(frame, {})
            out.check_finite(self.stage.name)
        except Exception as exc:
            self.failed += 1
            self._answer(envelope, "error", {"seq": seq, "error": f"{type(exc).__name__}: {exc}"})
            return
        worker_ms = (time.perf_counter() - t0) * 1e3
        meta = {"seq": seq, "values": out.values, "rows": wire.jsonable(out.rows), "worker_ms": worker_ms}
        images = {k: np.asarray(v, dtype=np.float32) for k, v in out.images.items()}
        self._answer(envelope, "result", meta, images)
        self.served += 1

    def _answer(
        self,
        envelope: list[bytes],
        topic: str,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        try:
            wire.send(self.sock, topic, meta, arrays, flags=zmq.NOBLOCK, envelope=envelope)
        except (zmq.ZMQError, wire.WireError) as exc:
            log.warning("worker: answer not sent: %s", exc)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.sock.close(0)
        if self._auth is not None:
            self._auth.close()
        self.stage.close()
        self.ctx.term()


def spawn_worker(stage: Mapping[str, Any]) -> tuple[subprocess.Popen[str], str]:
    """Start ``smartscope worker`` for ``stage`` in a child process on a free loopback port.

    Returns the process and the address it listens on (read from its first log line).
    The caller owns the process (terminate/kill it when done).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "smartscope.cli", "worker", "--stage", json.dumps(dict(stage)), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r"tcp://127\.0\.0\.1:\d+", line)
    if found is None:
        proc.kill()
        raise RuntimeError(f"worker did not start: {line.strip()!r}")
    return proc, found.group(0)
