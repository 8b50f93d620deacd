"""``smartscope serve``: runs started by name over control, validated, one at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smartscope.config import BleachScenario
from smartscope.remote import Client, RemoteConfig, RemoteError
from smartscope.remote.serve import RunService
from smartscope.scenarios.bleach import run_config as bleach_config
from smartscope.storage import read_jsonl

DEMO_CONFIG = bleach_config(BleachScenario(), Path("runs"))


def test_a_daemon_starts_named_configs_and_refuses_anything_else(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    demo = {**DEMO_CONFIG, "storage": {"root": str(tmp_path / "runs"), "name": "served"}}
    (configs / "short.yaml").write_text(
        yaml.safe_dump({**demo, "acquisition": {**demo["acquisition"], "n_frames": 30}})
    )
    (configs / "long.yaml").write_text(
        yaml.safe_dump({**demo, "acquisition": {**demo["acquisition"], "n_frames": 100_000}})
    )
    bad = {**demo, "acquisition": {**demo["acquisition"], "exposure_ms": -5}}
    (configs / "bad.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "outside.yaml").write_text(yaml.safe_dump(demo))
    service = RunService(RemoteConfig(pub_port=0, control_port=0), configs, report=False)
    c = Client(pub_port=service.server.pub_port, control_port=service.server.control_port, timeout_s=60)
    try:
        c.subscribe("event")
        assert c.query()["running"] is False
        with pytest.raises(RemoteError, match="no run attached"):
            c.stop()  # nothing to stop
        with pytest.raises(RemoteError, match="config"):
            c.command("start", config="../outside.yaml")
        with pytest.raises(RemoteError, match="config"):
            c.command("start", config="missing.yaml")
        with pytest.raises(RemoteError, match=r"acquisition\.exposure_ms"):
            c.command("start", config="bad.yaml")
        started = c.command("start", config="short.yaml")
        assert started["started"] == "short.yaml"
        events = []  # the run's own events (the start command's audit event may come first)
        while (msg := c.recv(30)) is not None:
            if msg.meta["event"] != "remote_command":
                events.append(msg.meta["event"])
            if events and events[-1] == "stop":
                break
        assert events[0] == "start" and events[-1] == "stop"
        service._thread.join(30) if service._thread else None
        assert service.last_result is not None and service.last_result.status == "completed"
        assert len(read_jsonl(Path(started["run_dir"]) / "frames.jsonl")) == 30
        assert c.query()["running"] is False
        # a second run, stopped over control; a start meanwhile is refused
        second = c.command("start", config="long.yaml")
        with pytest.raises(RemoteError, match="in progress"):
            c.command("start", config="short.yaml")
        assert c.query()["running"] is True
        c.stop("done testing")
        service._thread.join(30) if service._thread else None
        assert service.last_result is not None and service.last_result.status == "stopped"
        assert "done testing" in service.last_result.reason
        assert Path(second["run_dir"]) != Path(started["run_dir"])
    finally:
        c.close()
        service.close()
