"""Faults: whatever fails, raw data stays intact, the safe state goes on, the error is named."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from smartscope.config import validate_config
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.runner import run
from smartscope.storage import read_jsonl, recover
from smartscope.storage.writer import MAX_BATCH_FRAMES
from tests.conftest import DATA, LASERS, cfg_dict, start_cli_run


def _laser_cfg(tmp_path: Path, **over: Any):  # type: ignore[no-untyped-def]
    sections: dict[str, Any] = {
        "microscope": {"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
        "acquisition": {"exposure_ms": 2.0, "n_frames": 400},
        "watchdog": {"camera_stall_s": 0.5, "pipeline_stall_s": 0.5},
    }
    sections.update(over)
    return validate_config(cfg_dict(tmp_path, **sections))


def _assert_safe_and_intact(core, res, min_frames: int) -> None:  # type: ignore[no-untyped-def]
    run_dir = Path(res.run_dir)
    assert res.status == "failed"
    assert float(core.getProperty("Laser488", "Voltage")) == 0.0  # laser off
    assert not core.getShutterOpen("Shutter")
    events = [e["event"] for e in read_jsonl(run_dir / "events.jsonl")]
    assert "fault" in events and "safe_state" in events
    frames = read_jsonl(run_dir / "frames.jsonl")
    assert len(frames) >= min_frames
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        assert len(tif.pages) == len(frames) == res.metrics["frames_stored"]
        assert tif.series[0].asarray().shape[0] == len(frames)


class _PopFails(PymmcorePlusDriver):
    """Fault injection in the driver layer; the core underneath is real."""

    fail_after = 30

    def _do_pop(self):  # type: ignore[no-untyped-def]
        if self._delivered >= self.fail_after:
            raise RuntimeError("camera link lost")
        return super()._do_pop()


class _CameraGoesQuiet(PymmcorePlusDriver):
    quiet_after = 25

    def _do_remaining(self) -> int:
        return 0 if self._delivered >= self.quiet_after else super()._do_remaining()


@pytest.mark.parametrize(
    ("stage", "words"),
    [
        ({"kind": "fault", "at_frame": 20, "mode": "raise"}, "injected fault"),
        ({"kind": "fault", "at_frame": 20, "mode": "nan"}, "non-finite"),
        ({"kind": "fault", "at_frame": 20, "mode": "hang"}, "pipeline stalled"),
    ],
)
def test_stage_fault(laser_core, tmp_path: Path, stage: dict, words: str) -> None:
    cfg = _laser_cfg(tmp_path, pipeline={"stages": [stage]})
    laser_core.setProperty("Laser488", "Voltage", 5.0)  # the laser is on when the fault hits
    res = run(
        cfg, driver=PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core)
    )
    assert words in res.reason
    _assert_safe_and_intact(laser_core, res, min_frames=20)


def test_stage_error_skip_policy_keeps_running(laser_core, tmp_path: Path) -> None:
    cfg = _laser_cfg(
        tmp_path,
        acquisition={"exposure_ms": 1.0, "n_frames": 120},
        pipeline={"on_error": "skip", "stages": [{"kind": "fault", "at_frame": 30, "mode": "nan"}]},
    )
    res = run(
        cfg,
        driver=PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core),
        report=False,
    )
    assert res.status == "completed"
    m = res.metrics
    assert m["frames_stored"] == 120 and m["frames_failed"] > 0
    assert m["frames_analysed"] + m["frames_skipped"] + m["frames_failed"] == 120


def test_driver_raises_mid_run(laser_core, tmp_path: Path) -> None:
    cfg = _laser_cfg(tmp_path)
    laser_core.setProperty("Laser488", "Voltage", 5.0)
    res = run(cfg, driver=_PopFails(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core))
    assert "camera link lost" in res.reason and "driver" in res.reason
    _assert_safe_and_intact(laser_core, res, min_frames=30)


def test_watchdog_catches_a_stalled_camera(laser_core, tmp_path: Path) -> None:
    cfg = _laser_cfg(tmp_path)
    laser_core.setProperty("Laser488", "Voltage", 5.0)
    t0 = time.perf_counter()
    res = run(
        cfg,
        driver=_CameraGoesQuiet(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core),
        report=False,
    )
    assert "camera stalled" in res.reason
    assert time.perf_counter() - t0 < 20
    _assert_safe_and_intact(laser_core, res, min_frames=25)


def test_kill_9_leaves_every_written_frame_readable(tmp_path: Path) -> None:
    proc, run_dir = start_cli_run(tmp_path, 100_000, started_frames=100)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    frames = read_jsonl(run_dir / "frames.jsonl")
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        n_pages = len(tif.pages)
        last = tif.pages[len(frames) - 1].asarray()  # type: ignore[union-attr]
    # a batch of pages goes to disk before its log lines; at most one batch is ahead of the log
    assert len(frames) >= 100 and len(frames) <= n_pages <= len(frames) + MAX_BATCH_FRAMES
    assert last.shape == (512, 512) and last.std() > 0
    found = recover(run_dir)
    assert found["raw.ome.tif"] == n_pages
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        assert tif.is_ome
        stack = tif.series[0].asarray()
    assert stack.shape[0] == n_pages
    assert np.array_equal(stack[len(frames) - 1], last)


def test_ctrl_c_stops_cleanly_with_safe_state(tmp_path: Path) -> None:
    proc, run_dir = start_cli_run(tmp_path, 100_000, started_frames=100)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err.decode()  # 130: stopped by Ctrl-C
    events = read_jsonl(run_dir / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert "interrupt" in kinds and "safe_state" in kinds
    assert events[-1]["event"] == "stop" and "Ctrl-C" in events[-1]["reason"]
    frames = read_jsonl(run_dir / "frames.jsonl")
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape[0] == len(frames)
    assert (run_dir / "metrics.json").is_file() and (run_dir / "report.html").is_file()


class _FlakyRemote:
    """A stage whose (pretend-remote) backend misses every third frame."""

    name = "flaky"

    def process(self, frame, upstream):  # type: ignore[no-untyped-def]
        from smartscope.pipeline import StageOutput, StageSkipped

        if frame.index % 3 == 0:
            raise StageSkipped("worker did not answer in 50 ms")
        return StageOutput(values={"ok": 1.0})

    def close(self) -> None:
        pass


def test_a_skipping_stage_costs_analysis_never_the_run(laser_core, tmp_path: Path) -> None:
    cfg = _laser_cfg(tmp_path, acquisition={"exposure_ms": 5.0, "n_frames": 60})
    res = run(
        cfg,
        driver=PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core),
        stages=[_FlakyRemote()],
        report=False,
    )
    m = res.metrics
    assert res.status == "completed" and m["frames_failed"] == 0
    assert m["frames_stored"] == 60 and m["frames_skipped"] >= 1
    assert m["frames_analysed"] + m["frames_skipped"] == 60
