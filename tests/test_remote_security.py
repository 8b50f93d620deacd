"""Security: loopback by default, CurveZMQ off loopback, unknown keys refused and counted."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from smartscope.config import RemoteStageConfig
from smartscope.frame import Frame
from smartscope.pipeline import FrameStatsStage, StageSkipped
from smartscope.remote import Client, RemoteConfig, RemoteError
from smartscope.remote.cli import keys_cmd
from smartscope.remote.keys import make_keys
from smartscope.remote.server import RemoteServer
from smartscope.remote.stage import RemoteStage
from smartscope.remote.worker import Worker


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    made = make_keys(tmp_path / "keys", ("server", "client", "stranger"))
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / "client.key").write_bytes(made["client"][0].read_bytes())
    return {**made, "authorized": (authorized, authorized)}


def test_default_is_loopback_and_other_interfaces_need_keys(tmp_path: Path) -> None:
    assert RemoteConfig().bind_address == "127.0.0.1"
    for address in ("0.0.0.0", "192.168.1.20", "eth0"):
        with pytest.raises(ValidationError, match="needs CurveZMQ keys"):
            RemoteConfig(bind_address=address)
        with pytest.raises(ValueError, match="needs CurveZMQ keys"):
            Worker(FrameStatsStage(), bind_address=address, port=0)
    with pytest.raises(ValidationError, match="go together"):
        RemoteConfig(server_secret_key=tmp_path / "x.key_secret")
    assert RemoteConfig(bind_address="::1").bind_address == "::1"


def test_curve_server_answers_known_keys_only_and_counts_the_rest(keys: dict[str, tuple[Path, Path]]) -> None:
    cfg = RemoteConfig(
        pub_port=0,
        control_port=0,
        server_secret_key=keys["server"][1],
        authorized_keys=keys["authorized"][0],
        telemetry_interval_s=0.05,
    )
    with RemoteServer(cfg) as server:
        friend = Client(
            pub_port=server.pub_port,
            control_port=server.control_port,
            client_secret_key=keys["client"][1],
            server_public_key=keys["server"][0],
        )
        friend.subscribe("telemetry")
        # an authenticated round trip (no run is attached, so the answer is a refusal)
        with pytest.raises(RemoteError, match="no run attached"):
            friend.query()
        assert friend.wait_for("telemetry", 10) is not None
        stranger = Client(
            pub_port=server.pub_port,
            control_port=server.control_port,
            client_secret_key=keys["stranger"][1],
            server_public_key=keys["server"][0],
            timeout_s=1.0,
        )
        stranger.subscribe("telemetry")
        with pytest.raises(RemoteError, match="no reply"):
            stranger.query()
        assert stranger.recv(0.5) is None
        plain = Client(pub_port=server.pub_port, control_port=server.control_port, timeout_s=1.0)
        with pytest.raises(RemoteError, match="no reply"):
            plain.query()
        assert server._auth is not None and server._auth.refused >= 2
        msg = friend.wait_for("telemetry", 10)
        assert msg is not None and msg.meta["remote"]["unauthenticated"] >= 2
        for c in (friend, stranger, plain):
            c.close()


def test_curve_worker_serves_its_client_and_skips_for_strangers(keys: dict[str, tuple[Path, Path]]) -> None:
    worker = Worker(
        FrameStatsStage("stats"),
        port=0,
        server_secret_key=keys["server"][1],
        authorized_keys=keys["authorized"][0],
    )
    serving = threading.Thread(target=worker.serve, daemon=True)
    serving.start()
    rng = np.random.default_rng(3)
    frame = Frame(0, rng.integers(100, 4000, (128, 128), dtype=np.uint16), 0.0)
    try:
        good = RemoteStage(
            RemoteStageConfig(
                address=worker.address,
                timeout_ms=30_000,
                client_secret_key=keys["client"][1],
                server_public_key=keys["server"][0],
            )
        )
        out = good.process(frame, {})
        local = FrameStatsStage().process(frame, {})
        for k, v in local.values.items():
            assert out.values[k] == v
        bad = RemoteStage(
            RemoteStageConfig(
                address=worker.address,
                timeout_ms=300,
                client_secret_key=keys["stranger"][1],
                server_public_key=keys["server"][0],
            )
        )
        with pytest.raises(StageSkipped):
            bad.process(frame, {})
        good.close()
        bad.close()
    finally:
        worker.stop()
        serving.join(2)
        worker.close()


def test_a_stage_without_a_worker_skips_instead_of_hanging() -> None:
    stage = RemoteStage(RemoteStageConfig(address="tcp://127.0.0.1:9", timeout_ms=200))
    with pytest.raises(StageSkipped, match="not connected"):
        stage.process(Frame(0, np.zeros((8, 8), np.uint16), 0.0), {})
    stage.close()


def test_keys_command_writes_loadable_key_pairs(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(keys_cmd)
    res = CliRunner().invoke(app, [str(tmp_path / "k")])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert (tmp_path / "k" / "server.key_secret").stat().st_mode & 0o077 == 0


def test_a_worker_refuses_garbage_and_keeps_serving() -> None:
    import msgpack
    import zmq

    worker = Worker(FrameStatsStage("stats"), port=0)
    serving = threading.Thread(target=worker.serve, daemon=True)
    serving.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(worker.address)
    rng = np.random.default_rng(11)
    garbage = [
        [rng.bytes(int(rng.integers(0, 100))) for _ in range(int(rng.integers(1, 4)))] for _ in range(50)
    ]
    garbage.append([b"process", msgpack.packb({"v": 1, "meta": {"seq": 1, "index": 0}, "arrays": []})])
    stage = RemoteStage(RemoteStageConfig(address=worker.address, timeout_ms=30_000))
    try:
        for frames in garbage:
            sock.send_multipart(frames)
        answers = 0
        while answers < len(garbage) and sock.poll(20_000):
            msg = sock.recv_multipart()
            assert msg[0] == b"error"
            answers += 1
        assert answers == len(garbage) and worker.refused == len(garbage)
        frame = Frame(0, np.full((16, 16), 700, np.uint16), 0.0)
        assert stage.process(frame, {}).values["mean_adu"] == 700.0
    finally:
        stage.close()
        sock.close()
        ctx.term()
        worker.stop()
        serving.join(2)
        worker.close()


def test_a_port_in_use_is_a_clear_error_naming_the_field() -> None:
    first = RemoteServer(RemoteConfig(pub_port=0, control_port=0))
    try:
        with pytest.raises(OSError, match=r"remote\.control_port: cannot listen on tcp://127\.0\.0\.1:\d+"):
            RemoteServer(RemoteConfig(pub_port=0, control_port=first.control_port))
    finally:
        first.close()
