"""Remote engines: a worker process runs a pipeline stage; the loop calls it like a local one.

Worker side (``smartscope worker --stage '{"kind": "engine", "bundle": "..."}'``): a ROUTER
socket; each request is a wire message ``process`` with the frame (meta: index,
camera_time_s, channel; array ``image``); the worker builds the Frame, runs its ordinary
local stage (any pipeline stage config: ``engine``, ``stats``, ``smlm``...) and answers
``result`` (meta: values, rows, worker_ms; one float32 array per output image) or
``error``. Requests are served in order; the stage sees no upstream results (a remote
stage analyses the raw frame).

Loop side (:class:`RemoteStage`, config ``kind: remote``): sends the frame, waits at most
``timeout_ms`` and raises :class:`smartscope.pipeline.StageSkipped` if no answer came, so
a lost or slow worker costs analysed frames ("analysis skipped"), never raw frames or a
stuck loop. After a timeout the socket is rebuilt, so a late answer is never taken for
the next frame's. Stamps ``remote:<name>:sent`` and ``remote:<name>:received`` go into
``frame.times`` (the loop's latency breakdown), and the stage adds the values
``remote_network_ms`` (round trip minus the worker's compute time, clock-independent)
and ``remote_worker_ms``.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import typer
import zmq
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from smartscope.frame import Frame, now_s
from smartscope.pipeline import StageError, StageOutput, StageSkipped
from smartscope.remote import wire
from smartscope.remote.keys import (
    CurveAuthenticator,
    apply_client_keys,
    apply_server_keys,
    load_authorized,
)
from smartscope.remote.server import is_loopback, jsonable

if TYPE_CHECKING:
    from smartscope.pipeline import Stage

log = logging.getLogger(__name__)

__all__ = ["RemoteStage", "RemoteStageConfig", "Worker", "spawn_worker", "worker_cmd"]

MAX_REQUEST_BYTES = 1 << 30


class RemoteStageConfig(BaseModel):
    """Pipeline-stage config for a stage run by a ``smartscope worker`` (``kind: remote``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["remote"] = "remote"
    name: str = Field(default="remote", min_length=1, description="stage name; keys its results")
    address: str = Field(
        default="tcp://127.0.0.1:5570", pattern=r"^tcp://.+:\d+$", description="the worker's tcp://host:port"
    )
    timeout_ms: float = Field(default=500.0, gt=0, description="no answer within this: frame skipped")
    client_secret_key: Path | None = Field(default=None, description="CurveZMQ .key_secret of this side")
    server_public_key: Path | None = Field(default=None, description="the worker's public .key")

    def build(self) -> RemoteStage:
        return RemoteStage(self)


class RemoteStage:
    """Implements :class:`smartscope.pipeline.Stage` by calling a worker over ZMQ."""

    def __init__(self, config: RemoteStageConfig, ctx: zmq.Context[Any] | None = None) -> None:
        if (config.client_secret_key is None) != (config.server_public_key is None):
            raise ValueError(f"stage {config.name!r}: client_secret_key and server_public_key go together")
        self.config = config
        self.name = config.name
        self.ctx = ctx or zmq.Context()
        self._own_ctx = ctx is None
        self._lock = threading.Lock()
        self._seq = 0
        self._sock: zmq.Socket[Any] | None = self._connect()
        self.timeouts = 0

    def _connect(self) -> zmq.Socket[Any]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.immediate = True  # no queueing toward a worker that is not connected
        sock.sndhwm = 2
        if self.config.client_secret_key is not None and self.config.server_public_key is not None:
            apply_client_keys(sock, self.config.client_secret_key, self.config.server_public_key)
        sock.connect(self.config.address)
        return sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        self._sock = self._connect()

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        with self._lock:
            sock = self._sock
            if sock is None:
                raise StageSkipped(f"stage {self.name!r}: closed")
            self._seq += 1
            seq = self._seq
            meta = {
                "seq": seq,
                "index": frame.index,
                "camera_time_s": frame.camera_time_s,
                "channel": frame.channel,
            }
            key = f"remote:{self.name}"
            end = time.monotonic() + self.config.timeout_ms / 1e3
            t_sent = frame.stamp(f"{key}:sent")
            try:  # with `immediate`, writable means a worker is connected (handshake done)
                if not sock.poll(max(1, int(self.config.timeout_ms)), zmq.POLLOUT):
                    raise zmq.Again()
                wire.send(sock, "process", meta, {"image": frame.image}, flags=zmq.NOBLOCK)
            except zmq.Again:
                self.timeouts += 1
                self._reset()
                raise StageSkipped(
                    f"stage {self.name!r}: worker {self.config.address} not connected"
                ) from None
            while (left := end - time.monotonic()) > 0:
                if not sock.poll(max(1, int(left * 1000))):
                    break
                try:
                    reply = wire.recv(sock)
                except wire.WireError as exc:
                    raise StageError(f"stage {self.name!r}: malformed answer from worker: {exc}") from None
                if reply.meta.get("seq") != seq:
                    continue  # stale
                t_recv = frame.stamp(f"{key}:received")
                if reply.topic == "error":
                    raise StageError(f"stage {self.name!r}: worker failed: {reply.meta.get('error')}")
                return self._output(reply, t_recv - t_sent)
            self.timeouts += 1
            self._reset()
            raise StageSkipped(
                f"stage {self.name!r}: no answer from worker {self.config.address} "
                f"in {self.config.timeout_ms:g} ms"
            )

    def _output(self, reply: wire.Message, rtt_s: float) -> StageOutput:
        values_in = reply.meta.get("values", {})
        rows = reply.meta.get("rows", [])
        worker_ms = reply.meta.get("worker_ms", 0.0)
        if (
            not isinstance(values_in, dict)
            or not isinstance(rows, list)
            or not isinstance(worker_ms, (int, float))
        ):
            raise StageError(f"stage {self.name!r}: worker answer has wrong field types")
        values = {str(k): float(v) for k, v in values_in.items()}
        values["remote_worker_ms"] = float(worker_ms)
        values["remote_network_ms"] = max(0.0, rtt_s * 1e3 - float(worker_ms))
        images = {k: np.asarray(v, dtype=np.float32) for k, v in reply.arrays.items()}
        return StageOutput(images=images, values=values, rows=[r for r in rows if isinstance(r, dict)])

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None
        if self._own_ctx:
            self.ctx.term()


# -------------------------------------------------------------------- worker


def build_stage(stage_config: Mapping[str, Any] | str) -> Stage:
    """A local stage from a pipeline-stage config (a mapping or its JSON text)."""
    from smartscope.config import StageConfig  # late: config imports this module

    data = json.loads(stage_config) if isinstance(stage_config, str) else dict(stage_config)
    if data.get("kind") == "remote":
        raise ValueError("stage.kind: a worker cannot run a remote stage (it would call itself)")
    try:
        cfg: Any = TypeAdapter(StageConfig).validate_python(data)
    except ValidationError as exc:
        probs = "; ".join(f"stage.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ValueError(probs) from None
    return cfg.build()


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
            raise ValueError("server_secret_key and authorized_keys go together (CurveZMQ)")
        if not is_loopback(bind_address) and server_secret_key is None:
            raise ValueError(
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
        meta = {"seq": seq, "values": out.values, "rows": jsonable(out.rows), "worker_ms": worker_ms}
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


def worker_cmd(
    stage: Annotated[
        str, typer.Option(help='stage config as JSON, e.g. \'{"kind":"engine","bundle":"..."}\'')
    ],
    bind: Annotated[str, typer.Option(help="address to listen on (non-loopback needs keys)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 5570,
    secret_key: Annotated[Path | None, typer.Option(help="CurveZMQ server .key_secret")] = None,
    authorized_keys: Annotated[Path | None, typer.Option(help="folder of client public .key files")] = None,
) -> None:
    """Run a pipeline stage for remote loops (a `kind: remote` stage points at it)."""
    try:
        local = build_stage(stage)
        worker = Worker(local, bind, port, secret_key, authorized_keys)
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def _stop(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    typer.echo(f"worker: stage {local.name!r} on {worker.address}", err=True)
    try:
        worker.serve()
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo(
            f"worker: served {worker.served}, refused {worker.refused}, failed {worker.failed}", err=True
        )
        worker.close()


def spawn_worker(stage: Mapping[str, Any]) -> tuple[subprocess.Popen[str], str]:
    """Start ``smartscope worker`` for ``stage`` in a child process on a free loopback port.

    Returns the process and the address it listens on (read from its first log line).
    The caller owns the process (terminate/kill it when done).
    """
    code = "import typer; from smartscope.remote.worker import worker_cmd; typer.run(worker_cmd)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--stage", json.dumps(dict(stage)), "--port", "0"],
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
