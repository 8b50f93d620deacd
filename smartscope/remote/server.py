"""The in-run remote server: PUB streams out, validated control commands in.

Design (the simplest honest one): the server lives *inside* a run. The CLI attaches it
with :func:`attach_server` from ``runner.run(..., on_loop=...)`` and closes it when the
run returns. So over control a client can **stop** the run, **pause** / **resume** it
(pausing a run pauses every controller: acquisition and storage go on, nothing steers
the microscope until resumed), pause one controller, **override** a value (any typed
action, vetted by the run's own safety gate and written to ``actions.jsonl`` with
``source="remote:<peer>"``) and **query** the state. A run is *started* where the camera
is (``smartscope run cfg.yaml`` with a ``remote:`` section); an in-run server answers
``start`` with a refusal naming that reason. To start runs remotely, the acquisition PC
runs the small daemon ``smartscope serve CONFIG_DIR`` (:mod:`smartscope.remote.serve`):
the same server, idle between runs, whose ``start`` names one of the YAML configs in
that folder (never a path, never config text from the network), one run at a time.

Threads: the loop's callbacks only append to bounded deques (never block; the oldest
queued frame is dropped and counted when a deque is full). A publisher thread owns the
PUB socket (send high-water mark ``sndhwm`` per subscriber: ZeroMQ drops for a slow
subscriber only, never blocks the others); every message carries a per-topic ``seq`` so
each subscriber counts its own drops (:class:`smartscope.remote.Client.dropped`). A
control thread owns the ROUTER socket. Each client's commands per second are limited
(``max_commands_per_s``, a token bucket, before a command is validated or carried out), so a
flood costs a decode and one check per message; malformed, oversized, invalid or unauthenticated
messages are refused with a reason and counted in ``telemetry.remote.refused``. Every
accepted command (queries excepted) is written to the run's ``events.jsonl`` as a
``remote_command`` event with its origin ``remote:<peer address>``; overrides are also in
``actions.jsonl`` like any action (``source="remote:<peer>"``). Refusals are counted, not
written one by one: per client and kind, the first ``REFUSALS_IN_FULL`` of each second are
written in full (a ``remote_command`` event and a log line), the rest in one
``remote_refused`` event with their ``count`` once that second is over (or the run ends).

Streams (topic: meta / arrays):

* ``raw``: index, camera_time_s, channel, seq / ``image`` (uint16 Y,X)
* ``processed``: index, stage / one float32 array per stage image (denoised, virtual channels)
* ``localizations``: index, stage / one float64 array per numeric row column (x_nm, y_nm...)
* ``analysis``: index, times, values {stage: {name: value}}
* ``event``: the loop's event dict; ``action``: an audit record (``actions.jsonl`` line)
* ``telemetry``: ``Loop.telemetry()`` plus ``latency_breakdown`` (p50/p95/p99 ms between
  successive frame stamps, remote-stage network time included) and ``remote`` counters.

Binding: loopback (127.0.0.1) by default; any other address requires CurveZMQ keys
(``server_secret_key`` and ``authorized_keys``), enforced by :class:`RemoteConfig`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
from pydantic import BaseModel, ValidationError
from typing_extensions import assert_never

from smartscope.actions import ActionRequest, AuditRecord
from smartscope.config.remote import RemoteConfig
from smartscope.frame import Frame
from smartscope.loop import Loop, StopReason
from smartscope.metrics import percentiles_ms
from smartscope.pipeline import StageOutput
from smartscope.remote import wire
from smartscope.remote.commands import (
    COMMAND_ADAPTER,
    Command,
    OverrideCmd,
    PauseCmd,
    PauseControllerCmd,
    QueryCmd,
    ResumeCmd,
    StartCmd,
    StopCmd,
)
from smartscope.remote.keys import CurveAuthenticator, apply_server_keys, load_authorized
from smartscope.schema import RemoteCommandEvent, RemoteRefusedEvent, RunEvent

log = logging.getLogger(__name__)

__all__ = ["RemoteServer", "attach_server"]

MAX_COMMAND_BYTES = 65536
MAX_SOCKET_MESSAGE_BYTES = 1 << 20  # libzmq drops peers that send more than this
# refusals of one kind from one client: the first few of each window in full, then a count
REFUSAL_WINDOW_S = 1.0
REFUSALS_IN_FULL = 5


@dataclass
class _Refusals:
    """Refusals of one kind from one client since ``since``: ``full`` written in full, then
    ``count`` more (the last one's ``note``)."""

    since: float
    full: int = 0
    count: int = 0
    note: str = ""


# -------------------------------------------------------------------- server


class RemoteServer:
    """Streams a loop and takes commands for it (a :class:`smartscope.loop.LoopListener`)."""

    def __init__(
        self,
        cfg: RemoteConfig,
        ctx: zmq.Context[Any] | None = None,
        starter: Callable[[StartCmd, str], dict[str, Any]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.starter = starter
        self.ctx = ctx or zmq.Context()
        self._own_ctx = ctx is None
        self.loop: Loop | None = None
        self._frames: deque[tuple[str, dict[str, Any], dict[str, np.ndarray]]] = deque(
            maxlen=cfg.queue_frames
        )
        self._small: deque[tuple[str, dict[str, Any], dict[str, np.ndarray]]] = deque(maxlen=4096)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self.dropped_queue = 0  # frames dropped before reaching the socket (publisher behind)
        self.dropped_small = 0
        self.sent: dict[str, int] = {}
        self.refused: dict[str, int] = {"malformed": 0, "invalid": 0, "oversized": 0, "failed": 0, "rate": 0}
        self.commands_ok = 0
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)
        self._refusals: dict[tuple[str, str], _Refusals] = {}  # (client, kind) -> this window's
        self._refusal_lock = threading.Lock()
        self._breakdown: dict[str, deque[float]] = {}
        self._auth: CurveAuthenticator | None = None
        if cfg.secure:
            assert cfg.authorized_keys is not None
            self._auth = CurveAuthenticator(self.ctx, load_authorized(cfg.authorized_keys))
        self.pub = self._socket(zmq.PUB)
        self.pub.sndhwm = cfg.sndhwm
        self.control = self._socket(zmq.ROUTER)
        self.control.maxmsgsize = MAX_SOCKET_MESSAGE_BYTES
        self.control.router_mandatory = False
        try:
            self.pub_port = self._bind(self.pub, cfg.pub_port, "pub_port")
            self.control_port = self._bind(self.control, cfg.control_port, "control_port")
        except OSError:
            self._release_sockets()
            raise
        self._threads = [
            threading.Thread(target=self._publish_loop, name="smartscope-remote-pub", daemon=True),
            threading.Thread(target=self._control_loop, name="smartscope-remote-ctl", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        if self.cfg.secure:
            assert self.cfg.server_secret_key is not None
            sock.zap_domain = b"smartscope"
            apply_server_keys(sock, self.cfg.server_secret_key)
        return sock

    def _bind(self, sock: zmq.Socket[Any], port: int, field: str) -> int:
        host = f"[{self.cfg.bind_address}]" if ":" in self.cfg.bind_address else self.cfg.bind_address
        try:
            if port == 0:
                return int(sock.bind_to_random_port(f"tcp://{host}"))
            sock.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            raise OSError(f"remote.{field}: cannot listen on tcp://{host}:{port}: {exc}") from None
        return port

    @property
    def pub_address(self) -> str:
        return f"tcp://{self.cfg.bind_address}:{self.pub_port}"

    @property
    def control_address(self) -> str:
        return f"tcp://{self.cfg.bind_address}:{self.control_port}"

    # ------------------------------------------------------------ listener

    def attach(self, loop: Loop) -> RemoteServer:
        self.loop = loop
        loop.add_listener(self)
        return self

    def detach(self) -> None:
        """The run is over (a daemon keeps streaming and waits for the next)."""
        loop, self.loop = self.loop, None
        if loop is not None and self in loop.listeners:
            loop.listeners.remove(self)

    def _queue_frame(self, topic: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped_queue += 1  # the deque evicts the oldest
        self._frames.append((topic, meta, arrays))
        with self._wake:
            self._wake.notify()

    def _queue_small(
        self, topic: str, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
    ) -> None:
        if len(self._small) == self._small.maxlen:
            self.dropped_small += 1
        self._small.append((topic, meta, arrays or {}))
        with self._wake:
            self._wake.notify()

    def on_frame(self, frame: Frame) -> None:
        if frame.index % self.cfg.raw_every:
            return
        meta = {"index": frame.index, "camera_time_s": frame.camera_time_s, "channel": frame.channel}
        self._queue_frame("raw", meta, {"image": frame.image})

    def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
        self._record_breakdown(frame.times, frame.camera_time_s)
        values = {n: dict(o.values) for n, o in results.items() if o.values}
        self._queue_small(
            "analysis", {"index": frame.index, "times": dict(frame.times), "values": wire.jsonable(values)}
        )
        for name, out in results.items():
            if out.images:
                self._queue_frame("processed", {"index": frame.index, "stage": name}, dict(out.images))
            if out.rows:
                cols: dict[str, np.ndarray] = {}
                for key in out.rows[0]:
                    try:
                        cols[key] = np.asarray([r[key] for r in out.rows], dtype=np.float64)
                    except (KeyError, TypeError, ValueError):
                        continue  # non-numeric column: not streamed
                self._queue_small(
                    "localizations", {"index": frame.index, "stage": name, "n": len(out.rows)}, cols
                )

    def on_audit(self, record: AuditRecord) -> None:
        self._queue_small("action", record.model_dump(mode="json"))

    def on_event(self, event: RunEvent) -> None:
        self._queue_small("event", wire.jsonable(dict(event)))
        if event["event"] == "writing":  # the run is closing: its refusals, counted, go in now
            self.flush_refusals(all_of_them=True)

    def _record_breakdown(self, times: Mapping[str, float], camera_time_s: float) -> None:
        stamps = sorted([("camera", camera_time_s), *times.items()], key=lambda kv: kv[1])
        for (a, ta), (b, tb) in itertools.pairwise(stamps):
            d = self._breakdown.setdefault(f"{a}->{b}", deque(maxlen=500))
            d.append(tb - ta)

    # ------------------------------------------------------------ telemetry

    def telemetry(self) -> dict[str, Any]:
        loop_t: Mapping[str, Any] = self.loop.telemetry() if self.loop is not None else {}
        breakdown = {k: percentiles_ms(list(v)) for k, v in list(self._breakdown.items()) if v}
        remote = {
            "dropped_queue": self.dropped_queue,
            "dropped_small": self.dropped_small,
            "sent": dict(self.sent),
            "refused": dict(self.refused),
            "unauthenticated": self._auth.refused if self._auth else 0,
            "commands_ok": self.commands_ok,
        }
        return wire.jsonable({**loop_t, "latency_breakdown": breakdown, "remote": remote, "t": time.time()})

    # ------------------------------------------------------------ publisher

    def _send(self, topic: str, meta: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        seq = self.sent.get(topic, 0)
        try:
            wire.send(self.pub, topic, {**meta, "seq": seq}, arrays, flags=zmq.NOBLOCK)
        except zmq.Again:  # PUB never blocks; a full pipe drops inside ZeroMQ
            return
        except wire.WireError as exc:
            log.error("remote: cannot stream %s: %s", topic, exc)
            return
        self.sent[topic] = seq + 1

    def _publish_loop(self) -> None:
        next_tel = time.monotonic()
        while not self._stop.is_set():
            with self._wake:
                if not self._frames and not self._small:
                    self._wake.wait(max(0.0, min(0.05, next_tel - time.monotonic())))
            try:
                while self._small:
                    self._send(*self._small.popleft())
                while self._frames:
                    self._send(*self._frames.popleft())
                    while self._small:
                        self._send(*self._small.popleft())
                if time.monotonic() >= next_tel:
                    next_tel = time.monotonic() + self.cfg.telemetry_interval_s
                    self._send("telemetry", self.telemetry(), {})
            except zmq.ZMQError as exc:
                if self._stop.is_set():
                    return
                log.error("remote publisher: %s", exc)
            except Exception as exc:  # never let a bad value end the stream
                log.error("remote publisher: %s: %s", type(exc).__name__, exc)
        # final flush: what the run produced last (stop event, last actions)
        try:
            while self._small:
                self._send(*self._small.popleft())
            self._send("telemetry", self.telemetry(), {})
        except Exception as exc:
            log.debug("remote publisher final flush: %s", exc)

    # -------------------------------------------------------------- control

    def _refuse(
        self,
        kind: str,
        envelope: list[bytes],
        req_id: Any,
        reason: str,
        peer: str = "",
        cmd: Command | object = None,
    ) -> None:
        self.refused[kind] += 1
        self._record_refusal(kind, peer, cmd, reason)
        self._reply(envelope, {"id": req_id, "ok": False, "error": f"{kind}: {reason}"})

    def _record_refusal(self, kind: str, peer: str, cmd: Command | object, note: str) -> None:
        """The first few refusals of a kind from a client in a window are logged and audited
        in full; the rest are counted and written as one ``remote_refused`` event after it."""
        now = time.monotonic()
        with self._refusal_lock:
            window = self._refusals.get((peer, kind))
            if window is None or now - window.since >= REFUSAL_WINDOW_S:
                if window is not None:
                    self._summarise(peer, kind, window)
                self._refusals[(peer, kind)] = window = _Refusals(now)
            if window.full >= REFUSALS_IN_FULL:
                window.count += 1
                window.note = note
                return
            window.full += 1
        log.warning("remote control: refused (%s) from %s: %s", kind, peer or "?", note)
        self._audit(cmd if cmd is not None else "(unreadable)", peer, False, note)

    def _summarise(self, peer: str, kind: str, window: _Refusals) -> None:
        if not window.count:
            return
        log.warning(
            "remote control: %d more refused (%s) from %s within %g s; the last: %s",
            window.count,
            kind,
            peer or "?",
            REFUSAL_WINDOW_S,
            window.note,
        )
        event: RemoteRefusedEvent = {
            "t": time.time(),
            "event": "remote_refused",
            "origin": f"remote:{peer}",
            "kind": kind,
            "count": window.count,
            "note": window.note[:500],
        }
        self._write_event(event)
        window.count = 0

    def flush_refusals(self, all_of_them: bool = False) -> None:
        """Write the counts of windows that are over (``all_of_them``: every window)."""
        now = time.monotonic()
        with self._refusal_lock:
            for (peer, kind), window in list(self._refusals.items()):
                if all_of_them or now - window.since >= REFUSAL_WINDOW_S:
                    self._summarise(peer, kind, window)
                    del self._refusals[(peer, kind)]

    def _reply(self, envelope: list[bytes], meta: dict[str, Any]) -> None:
        try:
            wire.send(self.control, "reply", wire.jsonable(meta), flags=zmq.NOBLOCK, envelope=envelope)
        except (zmq.ZMQError, wire.WireError) as exc:
            log.warning("remote control: reply not sent: %s", exc)

    def _control_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                if not poller.poll(100):
                    self.flush_refusals()
                    continue
                frames = self.control.recv_multipart(copy=False)
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
                continue
            try:
                self._handle(frames)
            except Exception as exc:  # the server outlives any message
                self.refused["failed"] += 1
                log.error("remote control: %s: %s", type(exc).__name__, exc)

    def _handle(self, frames: list[zmq.Frame]) -> None:
        ident = frames[0].bytes
        body = frames[1:]
        envelope = [ident]
        if body and len(body[0]) == 0:  # a REQ peer: identity, empty delimiter, message
            envelope.append(b"")
            body = body[1:]
        peer = self._peer(frames)
        size = sum(len(f) for f in body)
        if size > MAX_COMMAND_BYTES:
            self._refuse(
                "oversized", envelope, None, f"{size} bytes; commands are at most {MAX_COMMAND_BYTES}", peer
            )
            return
        try:
            msg = wire.decode(body)
        except wire.WireError as exc:
            self._refuse("malformed", envelope, None, str(exc), peer)
            return
        req_id = msg.meta.get("id")
        if not isinstance(req_id, (int, str)) or isinstance(req_id, bool):
            req_id = None
        if not self._allow(peer):  # before validation: whatever a flood sends costs this much
            note = f"more than {self.cfg.max_commands_per_s:g} commands per second from this client"
            self._refuse("rate", envelope, req_id, note, peer, msg.meta.get("cmd"))
            return
        if msg.topic != "cmd" or msg.arrays:
            self._refuse(
                "malformed", envelope, req_id, f"expected topic 'cmd' with no arrays, got {msg.topic!r}", peer
            )
            return
        try:
            cmd = COMMAND_ADAPTER.validate_python({k: v for k, v in msg.meta.items() if k != "id"})
        except ValidationError as exc:
            probs = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'command'}: {e['msg']}" for e in exc.errors()[:5]
            )
            self._refuse("invalid", envelope, req_id, probs, peer, msg.meta.get("cmd"))
            return
        try:
            result = self.execute(cmd, peer)
        except (KeyError, ValueError, RuntimeError) as exc:
            note = str(exc).strip("'\"")
            self._refuse("invalid", envelope, req_id, note, peer, cmd)
            return
        self._audit(cmd, peer, True, "")
        self.commands_ok += 1
        self._reply(envelope, {"id": req_id, "ok": True, "result": result})

    def _allow(self, peer: str) -> bool:
        """A token bucket per client: ``max_commands_per_s``, bursts of as many."""
        rate = self.cfg.max_commands_per_s
        now = time.monotonic()
        tokens, last = self._buckets.get(peer, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[peer] = (tokens, now)
            return False
        self._buckets[peer] = (tokens - 1.0, now)
        return True

    def _audit(self, cmd: Command | object, peer: str, ok: bool, note: str) -> None:
        """Every validated-or-refused command (but queries) goes to the run's events.jsonl
        with its origin, and onto the event stream."""
        if isinstance(cmd, QueryCmd) or self.loop is None:
            return
        what = cmd.model_dump(mode="json") if isinstance(cmd, BaseModel) else {"cmd": str(cmd)[:200]}
        event: RemoteCommandEvent = {
            "t": time.time(),
            "event": "remote_command",
            "origin": f"remote:{peer}",
            "command": what,
            "accepted": ok,
            "note": note[:500],
        }
        self._write_event(event)

    def _write_event(self, event: RunEvent) -> None:
        loop = self.loop
        if loop is None:
            return
        try:
            loop.run.events.write(event)
        except ValueError:  # the run's files are closed: the run is over
            return
        self._queue_small("event", dict(event))

    @staticmethod
    def _peer(frames: list[zmq.Frame]) -> str:
        try:
            addr = frames[-1].get("Peer-Address")
        except (zmq.ZMQError, AttributeError, KeyError):
            addr = None
        return str(addr) if addr else frames[0].bytes.hex()

    def execute(self, cmd: Command, peer: str) -> dict[str, Any]:
        """Carry out one validated command (also usable in-process, e.g. by a viewer)."""
        if isinstance(cmd, StartCmd):
            if self.starter is None:
                raise RuntimeError(
                    "start is refused by an in-run server: runs are started where the camera is "
                    "(`smartscope run CONFIG` with a remote: section, or a `smartscope serve` daemon)"
                )
            return self.starter(cmd, peer)
        loop = self.loop
        if loop is None:
            if isinstance(cmd, QueryCmd) and self.starter is not None:
                return {"running": False, "telemetry": self.telemetry()}
            raise RuntimeError("no run attached")
        if isinstance(cmd, QueryCmd):
            return {
                "running": True,
                "telemetry": self.telemetry(),
                "controllers": loop.controller_names,
                "paused_controllers": sorted(loop.paused_controllers),
                "run_dir": str(loop.run.path),
            }
        if isinstance(cmd, StopCmd):
            loop.request_stop(StopReason.REMOTE, f"{cmd.reason} (remote:{peer})")
            return {"stopping": True}
        if isinstance(cmd, PauseCmd | ResumeCmd):
            pause = isinstance(cmd, PauseCmd)
            for name in loop.controller_names:
                if (name in loop.paused_controllers) != pause:
                    loop.pause_controller(name, pause)
            return {"paused_controllers": sorted(loop.paused_controllers)}
        if isinstance(cmd, PauseControllerCmd):
            loop.pause_controller(cmd.name, cmd.paused)
            return {"paused_controllers": sorted(loop.paused_controllers)}
        if isinstance(cmd, OverrideCmd):
            req = ActionRequest(action=cmd.action, reason=cmd.reason, source=f"remote:{peer}")
            rec = loop.submit(req)
            return {"audit": rec.model_dump(mode="json")}
        assert_never(cmd)

    # ---------------------------------------------------------------- close

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(2)
        self._release_sockets()

    def _release_sockets(self) -> None:
        self.pub.close(0)
        self.control.close(0)
        if self._auth is not None:
            self._auth.close()
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self) -> RemoteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach_server(loop: Loop, remote_cfg: RemoteConfig) -> RemoteServer:
    """Start a server for ``loop`` (call from ``runner.run(on_loop=...)``); ``close()`` it after."""
    return RemoteServer(remote_cfg).attach(loop)
