"""``Client``: subscribe to a run's streams and send it commands, from scripts and notebooks.

>>> with Client("127.0.0.1", pub_port=5560, control_port=5561) as c:   # doctest: +SKIP
...     c.subscribe("telemetry", "event")
...     for msg in c.messages(timeout_s=5):
...         print(msg.topic, msg.meta)
...     c.override({"kind": "exposure", "exposure_ms": 20}, reason="by hand")

Each subscriber counts its own losses: messages carry a per-topic ``seq`` and
``Client.dropped[topic]`` is the number of gaps seen (the server dropped them for this
subscriber when it read too slowly).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import zmq
from pydantic import BaseModel

from smartscope.exceptions import InvalidValue, UserError
from smartscope.remote import wire
from smartscope.remote.keys import apply_client_keys

__all__ = ["Client", "RemoteError"]


class RemoteError(UserError, RuntimeError):
    """The server refused a command (reason in the message) or did not answer."""


class Client:
    def __init__(
        self,
        host: str = "127.0.0.1",
        pub_port: int = 5560,
        control_port: int = 5561,
        client_secret_key: Path | None = None,
        server_public_key: Path | None = None,
        rcvhwm: int = 64,
        timeout_s: float = 5.0,
    ) -> None:
        if (client_secret_key is None) != (server_public_key is None):
            raise InvalidValue(
                "client_secret_key (--secret-key) and server_public_key (--server-key) go together (CurveZMQ)"
            )
        self.host = host
        self.timeout_s = timeout_s
        self._keys = (client_secret_key, server_public_key)
        self.ctx: zmq.Context[Any] = zmq.Context()
        host_part = f"[{host}]" if ":" in host else host
        self.sub = self._socket(zmq.SUB)
        self.sub.rcvhwm = rcvhwm
        self.sub.connect(f"tcp://{host_part}:{pub_port}")
        self.control_address = f"tcp://{host_part}:{control_port}"
        self.ctl = self._make_control()
        self._ids = itertools.count(1)
        self._last_seq: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        sec, pub = self._keys
        if sec is not None and pub is not None:
            apply_client_keys(sock, sec, pub)
        return sock

    def _make_control(self) -> zmq.Socket[Any]:
        sock = self._socket(zmq.DEALER)
        sock.connect(self.control_address)
        return sock

    # ------------------------------------------------------------- streams

    def subscribe(self, *topics: str) -> None:
        """Topics to receive (``raw``, ``processed``, ``localizations``, ``analysis``,
        ``event``, ``action``, ``telemetry``); none: everything."""
        for t in topics or ("",):
            self.sub.setsockopt(zmq.SUBSCRIBE, t.encode("ascii"))

    def recv(self, timeout_s: float | None = None) -> wire.Message | None:
        """The next message, or None after ``timeout_s`` (default: the client's)."""
        t = self.timeout_s if timeout_s is None else timeout_s
        if not self.sub.poll(int(t * 1000)):
            return None
        msg = wire.recv(self.sub)
        self._count(msg)
        return msg

    def _count(self, msg: wire.Message) -> None:
        self.received[msg.topic] = self.received.get(msg.topic, 0) + 1
        seq = msg.meta.get("seq")
        if isinstance(seq, int):
            last = self._last_seq.get(msg.topic)
            if last is not None and seq > last + 1:
                self.dropped[msg.topic] = self.dropped.get(msg.topic, 0) + seq - last - 1
            self._last_seq[msg.topic] = seq

    def messages(self, timeout_s: float | None = None) -> Iterator[wire.Message]:
        """Messages until none arrives for ``timeout_s``."""
        while (msg := self.recv(timeout_s)) is not None:
            yield msg

    def wait_for(self, topic: str, timeout_s: float = 10.0) -> wire.Message | None:
        """The next message on ``topic`` within ``timeout_s`` (others are consumed)."""
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is not None and msg.topic == topic:
                return msg
        return None

    # ------------------------------------------------------------- control

    def command(self, cmd: str, timeout_s: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one command; returns its result or raises :class:`RemoteError`."""
        req_id = next(self._ids)
        wire.send(self.ctl, "cmd", {"id": req_id, "cmd": cmd, **fields})
        end = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while (left := end - time.monotonic()) > 0:
            if not self.ctl.poll(int(left * 1000) + 1):
                break
            reply = wire.recv(self.ctl)
            if reply.meta.get("id") != req_id:
                continue  # a late answer to an earlier, timed-out request
            if not reply.meta.get("ok"):
                raise RemoteError(str(reply.meta.get("error")))
            result = reply.meta.get("result", {})
            return result if isinstance(result, dict) else {"result": result}
        # lazy pirate: a fresh socket so a late reply cannot be mistaken for the next one
        self.ctl.close(0)
        self.ctl = self._make_control()
        raise RemoteError(f"no reply from {self.control_address} to {cmd!r} within the timeout")

    def query(self) -> dict[str, Any]:
        return self.command("query")

    def stop(self, reason: str = "stopped remotely") -> dict[str, Any]:
        return self.command("stop", reason=reason)

    def pause(self) -> dict[str, Any]:
        return self.command("pause")

    def resume(self) -> dict[str, Any]:
        return self.command("resume")

    def pause_controller(self, name: str, paused: bool = True) -> dict[str, Any]:
        return self.command("pause_controller", name=name, paused=paused)

    def override(
        self, action: Mapping[str, Any] | BaseModel, reason: str = "remote override"
    ) -> dict[str, Any]:
        """Ask for a typed action (e.g. ``{"kind": "exposure", "exposure_ms": 20}``); the
        result holds the audit record (applied, clamped or refused by safety)."""
        act = action.model_dump(mode="json") if isinstance(action, BaseModel) else dict(action)
        return self.command("override", action=act, reason=reason)

    def close(self) -> None:
        self.sub.close(0)
        self.ctl.close(0)
        self.ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
