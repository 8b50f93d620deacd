"""The ``kind: remote`` pipeline stage: the loop's side of a remote engine.

It sends each frame to a ``smartscope worker`` (:mod:`smartscope.remote.worker`), waits at
most ``timeout_ms`` and raises :class:`smartscope.pipeline.StageSkipped` if no answer came,
so a lost or slow worker costs analysed frames ("analysis skipped"), never raw frames or a
stuck loop. After a timeout the socket is rebuilt, so a late answer is never taken for the
next frame's. Stamps ``remote:<name>:sent`` and ``remote:<name>:received`` go into
``frame.times`` (the loop's latency breakdown), and the stage adds the values
``remote_network_ms`` (round trip minus the worker's compute time, clock-independent) and
``remote_worker_ms``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from smartscope.config.stages import RemoteStageConfig
from smartscope.frame import Frame
from smartscope.pipeline import StageError, StageOutput, StageSkipped
from smartscope.remote import wire
from smartscope.remote.keys import apply_client_keys

__all__ = ["RemoteStage"]


class RemoteStage:
    """Implements :class:`smartscope.pipeline.Stage` by calling a worker over ZMQ."""

    def __init__(self, config: RemoteStageConfig, ctx: zmq.Context[Any] | None = None) -> None:
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
