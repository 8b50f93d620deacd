"""Remote operation end to end on loopback: real runs of the virtual microscope (UniMMCore),
streamed to subscribers, steered over control, analysed by a worker (thread or process)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zmq

from smartscope.config import BleachScenario, RemoteStageConfig, SmartscopeConfig, validate_config
from smartscope.loop import Loop, RunResult
from smartscope.pipeline import FrameStatsStage, Stage
from smartscope.remote import Client, RemoteConfig, RemoteError
from smartscope.remote.server import RemoteServer, attach_server
from smartscope.remote.stage import RemoteStage
from smartscope.remote.worker import Worker, spawn_worker
from smartscope.runner import run
from smartscope.scenarios.bleach import run_config as bleach_config
from smartscope.storage import read_jsonl
from tests.conftest import assert_events_typed, cfg_dict

DEMO_CONFIG = bleach_config(BleachScenario(), Path("runs"))

LOOPBACK = RemoteConfig(pub_port=0, control_port=0)


def _cfg(tmp_path: Path, n_frames: int) -> SmartscopeConfig:
    data = cfg_dict(tmp_path, **{k: v for k, v in DEMO_CONFIG.items() if k != "storage"})
    data["acquisition"] = {**data["acquisition"], "n_frames": n_frames}
    return validate_config(data)


class _Run:
    """A run in a background thread with a remote server attached before frames flow."""

    def __init__(
        self,
        cfg: SmartscopeConfig,
        remote: RemoteConfig = LOOPBACK,
        stages: Sequence[Stage] | None = None,
        on_loop: Callable[[Loop], None] | None = None,
    ) -> None:
        self.ready = threading.Event()
        self.server: RemoteServer | None = None
        self.result: RunResult | None = None
        self.error: BaseException | None = None

        def attach(loop: Loop) -> None:
            self.server = attach_server(loop, remote)
            if on_loop is not None:
                on_loop(loop)
            self.ready.set()

        def body() -> None:
            try:
                self.result = run(cfg, report=False, stages=stages, on_loop=attach)
            except BaseException as exc:
                self.error = exc
                self.ready.set()

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        assert self.ready.wait(60), "run did not start"
        assert self.error is None, self.error

    def client(self, **kw: Any) -> Client:
        assert self.server is not None
        kw.setdefault("timeout_s", 30.0)  # generous: the test machine's cores are shared
        return Client(pub_port=self.server.pub_port, control_port=self.server.control_port, **kw)

    def join(self) -> RunResult:
        self.thread.join(120)
        assert not self.thread.is_alive(), "run did not end"
        assert self.server is not None
        self.server.close()
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def _until_stop(c: Client, timeout_s: float = 60.0) -> Iterator[Any]:
    for msg in c.messages(timeout_s):
        yield msg
        if msg.topic == "event" and msg.meta.get("event") == "stop":
            return


def test_a_streamed_run_arrives_bit_exact_and_obeys_validated_commands(tmp_path: Path) -> None:
    r = _Run(_cfg(tmp_path, 60))
    c = r.client()
    c.subscribe()
    q = c.query()
    assert q["controllers"] == ["laser_band"]
    # override: the same safety gate as local actions (50 mW ceiling, 10 mW/s ramp)
    audit = c.override({"kind": "laser_power", "laser": "488", "power_mw": 500.0}, reason="by hand")["audit"]
    assert audit["verdict"] == "clamped" and audit["applied"]["power_mw"] <= 50.0
    assert audit["request"]["source"].startswith("remote:")
    with pytest.raises(RemoteError, match="exposure_ms"):
        c.override({"kind": "exposure", "exposure_ms": -1.0})
    with pytest.raises(RemoteError, match="no controller 'nope'"):
        c.pause_controller("nope")
    with pytest.raises(RemoteError, match="start is refused"):
        c.command("start", config="demo.yaml")
    assert c.pause()["paused_controllers"] == ["laser_band"]
    raw: dict[int, np.ndarray] = {}
    telemetry: list[dict[str, Any]] = []
    events: list[str] = []
    actions: list[dict[str, Any]] = []
    for msg in _until_stop(c):
        if msg.topic == "raw":
            raw[msg.meta["index"]] = msg.arrays["image"].copy()
        elif msg.topic == "telemetry":
            telemetry.append(msg.meta)
        elif msg.topic == "event":
            events.append(msg.meta["event"])
        elif msg.topic == "action":
            actions.append(msg.meta)
    t = c.query()["telemetry"]  # the run is over; the server still holds it
    res = r.join()
    c.close()
    assert res.status == "completed" and res.metrics["frames_stored"] == 60
    run_dir = Path(res.run_dir)
    stack = tifffile.imread(run_dir / "raw.ome.tif")
    assert len(raw) >= 5
    for i, img in raw.items():
        np.testing.assert_array_equal(img, stack[i])
    assert "pause" in events and events[-1] == "stop"
    # every command but queries is in the run's event log with its origin, refused ones too
    audit = [e for e in assert_events_typed(run_dir) if e["event"] == "remote_command"]
    assert [(e["command"]["cmd"], e["accepted"]) for e in audit] == [
        ("override", True),
        ("override", False),
        ("pause_controller", False),
        ("start", False),
        ("pause", True),
    ]
    assert all(e["origin"].startswith("remote:") for e in audit)
    assert "exposure_ms" in audit[1]["note"]
    logged = read_jsonl(run_dir / "actions.jsonl")
    remote_logged = [a for a in logged if a["request"]["source"].startswith("remote:")]
    assert len(remote_logged) == 1 and remote_logged[0]["verdict"] in ("clamped", "applied")
    assert any(a["request"]["source"].startswith("remote:") for a in actions)
    assert telemetry and all("latency_breakdown" in x for x in telemetry)
    assert t["frames_stored"] == 60
    assert t["remote"]["refused"]["invalid"] == 3 and t["remote"]["commands_ok"] >= 3


def test_a_subscriber_that_never_reads_loses_only_its_own_frames(tmp_path: Path) -> None:
    r = _Run(_cfg(tmp_path, 120), RemoteConfig(pub_port=0, control_port=0, sndhwm=2))
    stalled = r.client(rcvhwm=1)
    stalled.subscribe("raw")
    reader = r.client()
    reader.subscribe("raw", "event")
    got = [m.meta["index"] for m in _until_stop(reader) if m.topic == "raw"]
    res = r.join()
    assert res.status == "completed" and res.metrics["frames_stored"] == 120
    assert r.server is not None and r.server.sent["raw"] + r.server.dropped_queue == 120
    late = [m.meta["seq"] for m in stalled.messages(0.5)]
    reader.close()
    stalled.close()
    assert len(late) < len(got)  # the stalled one lost frames; the reader did not pay for it
    assert len(read_jsonl(Path(res.run_dir) / "frames.jsonl")) == 120


def test_fuzzed_control_socket_is_refused_and_counted_and_the_run_goes_on(tmp_path: Path) -> None:
    r = _Run(_cfg(tmp_path, 100_000))
    assert r.server is not None
    ctx = zmq.Context()
    fuzz = ctx.socket(zmq.DEALER)
    fuzz.linger = 0
    fuzz.connect(r.server.control_address)
    rng = np.random.default_rng(7)
    import msgpack

    bad: list[list[bytes]] = []
    for _ in range(150):  # random frames
        bad.append([rng.bytes(int(rng.integers(0, 200))) for _ in range(int(rng.integers(1, 5)))])
    header = msgpack.packb({"v": 1, "meta": {"id": 1, "cmd": "query"}, "arrays": []})
    for cut in range(1, len(header), 3):  # truncated headers
        bad.append([b"cmd", header[:cut]])
    for meta in (  # wrong types, unknown commands, extra fields
        {"cmd": 5},
        {"cmd": "override", "action": {"kind": "exposure", "exposure_ms": "abc"}},
        {"cmd": "override", "action": {"kind": "warp_drive"}},
        {"cmd": "pause_controller", "name": ["x"]},
        {"cmd": "query", "extra": 1},
        {"id": [1], "cmd": "teleport"},
    ):
        bad.append([b"cmd", msgpack.packb({"v": 1, "meta": meta, "arrays": []})])
    bad.append(
        [
            b"cmd",
            msgpack.packb({"v": 1, "meta": {}, "arrays": [{"name": "a", "dtype": "uint8", "shape": [9]}]}),
        ]
    )
    bad.append([b"cmd", b"\x00" * 200_000])  # oversized
    bad.append([b"raw", msgpack.packb({"v": 1, "meta": {"cmd": "query"}, "arrays": []})])  # wrong topic
    for frames in bad:
        fuzz.send_multipart(frames)
    replies = 0
    while fuzz.poll(20_000):
        reply = fuzz.recv_multipart()
        assert msgpack.unpackb(reply[1])["meta"]["ok"] is False
        replies += 1
        if replies == len(bad):
            break
    # a message past the socket's size limit: libzmq drops that connection, nothing else
    huge = ctx.socket(zmq.DEALER)
    huge.linger = 0
    huge.connect(r.server.control_address)
    huge.send_multipart([b"cmd", b"\x00" * (4 << 20)])
    c = r.client()
    t = c.query()["telemetry"]
    refused = t["remote"]["refused"]
    assert replies == len(bad)
    assert refused["malformed"] + refused["invalid"] + refused["oversized"] == len(bad)
    assert refused["oversized"] == 1 and refused["failed"] == 0
    assert c.stop("enough fuzz")["stopping"] is True
    res = r.join()
    c.close()
    fuzz.close()
    huge.close()
    ctx.term()
    assert res.status == "stopped" and "enough fuzz" in res.reason and "remote:" in res.reason
    n = res.metrics["frames_stored"]
    assert n > 0 and len(read_jsonl(Path(res.run_dir) / "frames.jsonl")) == n


def test_a_worker_stage_gives_the_local_result_with_its_network_time(tmp_path: Path) -> None:
    worker = Worker(FrameStatsStage("stats"), port=0)
    serving = threading.Thread(target=worker.serve, daemon=True)
    serving.start()
    remote = RemoteStage(RemoteStageConfig(name="gpu_stats", address=worker.address, timeout_ms=30_000))
    r = _Run(
        _cfg(tmp_path, 40),
        RemoteConfig(pub_port=0, control_port=0, telemetry_interval_s=0.1),
        stages=[FrameStatsStage("stats"), remote],
    )
    c = r.client()
    c.subscribe("analysis", "event", "telemetry")
    got = list(_until_stop(c))
    streamed = [m.meta for m in got if m.topic == "analysis"]
    breakdown = [m.meta["latency_breakdown"] for m in got if m.topic == "telemetry"][-1]
    res = r.join()
    c.close()
    worker.stop()
    serving.join(2)
    worker.close()
    assert res.status == "completed" and res.metrics["frames_failed"] == 0
    analysed = [a for a in read_jsonl(Path(res.run_dir) / "analysis.jsonl") if "values" in a]
    assert len(analysed) == res.metrics["frames_analysed"] > 5
    for a in analysed:
        local, far = a["values"]["stats"], a["values"]["gpu_stats"]
        for key in ("mean_adu", "p99_adu", "max_adu", "saturated_fraction"):
            assert far[key] == local[key]
        assert far["remote_network_ms"] >= 0 and far["remote_worker_ms"] >= 0
        times = a["times"]
        assert times["stage:stats"] <= times["remote:gpu_stats:sent"] <= times["remote:gpu_stats:received"]
    assert streamed and all("gpu_stats" in s["values"] for s in streamed)
    # the network leg is its own line in the latency breakdown
    leg = breakdown["remote:gpu_stats:sent->remote:gpu_stats:received"]
    assert 0 <= leg["p50_ms"] <= leg["p99_ms"]
    assert worker.served == len(analysed)


def test_killing_the_worker_mid_run_skips_analysis_never_raw_frames(tmp_path: Path) -> None:
    proc, address = spawn_worker({"kind": "stats", "name": "s"})
    try:
        remote = RemoteStage(RemoteStageConfig(name="far", address=address, timeout_ms=300))
        killed = threading.Event()
        analysed = [0]

        class KillAfter10:
            def on_frame(self, frame: Any) -> None: ...
            def on_audit(self, record: Any) -> None: ...
            def on_event(self, event: Any) -> None: ...

            def on_analysis(self, frame: Any, results: Any) -> None:
                analysed[0] += 1
                if analysed[0] >= 10 and not killed.is_set():
                    proc.kill()
                    killed.set()

        r = _Run(
            _cfg(tmp_path, 90),
            stages=[FrameStatsStage("stats"), remote],
            on_loop=lambda loop: loop.add_listener(KillAfter10()),
        )
        res = r.join()
    finally:
        proc.kill()
        proc.wait(10)
    assert killed.is_set()
    assert res.status == "completed", res.reason
    assert res.metrics["frames_stored"] == 90 and res.metrics["frames_failed"] == 0
    run_dir = Path(res.run_dir)
    assert len(read_jsonl(run_dir / "frames.jsonl")) == 90
    assert tifffile.TiffFile(run_dir / "raw.ome.tif").series[0].shape[0] == 90
    records = read_jsonl(run_dir / "analysis.jsonl")
    skipped = [a for a in records if "skipped" in a]
    assert skipped and all("far" in a["skipped"] for a in skipped)
    assert res.metrics["frames_skipped"] >= len(skipped)
    assert sum("values" in a for a in records) >= 10


def test_a_worker_runs_a_shipped_engine_bundle_and_returns_its_images_exactly() -> None:
    from smartscope.frame import Frame
    from smartscope.models import shipped_bundle
    from smartscope.remote.worker import build_stage

    bundle = shipped_bundle("denoise-n2v-lowlight")
    spec = {"kind": "engine", "name": "denoise", "bundle": str(bundle)}
    worker = Worker(build_stage(spec), port=0)
    serving = threading.Thread(target=worker.serve, daemon=True)
    serving.start()
    local = build_stage(spec)
    remote = RemoteStage(RemoteStageConfig(name="dn", address=worker.address, timeout_ms=30_000))
    try:
        img = np.random.default_rng(4).integers(100, 400, (96, 128), dtype=np.uint16)
        far = remote.process(Frame(3, img, 0.0), {})
        near = local.process(Frame(3, img, 0.0), {})
        assert set(far.images) == set(near.images) == {"denoised"}
        np.testing.assert_array_equal(far.images["denoised"], near.images["denoised"])
        for k, v in near.values.items():
            assert far.values[k] == v
    finally:
        remote.close()
        local.close()
        worker.stop()
        serving.join(2)
        worker.close()
    with pytest.raises(ValueError, match=r"stage\.engine\.bundle|stage\.bundle"):
        build_stage({"kind": "engine", "bundle": "/nonexistent"})
    with pytest.raises(ValueError, match="call itself"):
        build_stage({"kind": "remote"})
