"""The closed loop on a real Micro-Manager core (pymmcore-plus + mm-test-adapters)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from pymmcore_plus.seq_tester import decode_image

from smartscope.actions import ActionRequest, SetExposure
from smartscope.config import validate_config
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.frame import Frame
from smartscope.loop import ListenerBase, Loop, StopReason
from smartscope.runner import run
from smartscope.storage import read_jsonl
from tests.conftest import cfg_dict


def _driver(cfg, core):  # type: ignore[no-untyped-def]
    return PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=core)


def test_every_raw_frame_reaches_disk_and_is_accounted_for(demo_core, tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            acquisition={"exposure_ms": 1.0, "n_frames": 200},
            pipeline={"stages": [{"kind": "identity"}]},
        )
    )
    res = run(cfg, driver=_driver(cfg, demo_core))
    m = res.metrics
    assert res.status == "completed", res.reason
    assert m["frames_stored"] == 200
    assert m["frames_analysed"] + m["frames_skipped"] + m["frames_failed"] == 200
    run_dir = Path(res.run_dir)
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        assert tif.is_ome
        stack = tif.series[0].asarray()
    assert stack.shape == (200, 512, 512)
    frames = read_jsonl(run_dir / "frames.jsonl")
    assert [f["index"] for f in frames] == list(range(200))
    # the stored pixels are the camera's: DemoCamera's waves pattern is never flat
    assert all(stack[i].std() > 0 for i in (0, 100, 199))
    for f in frames:  # per-frame timestamps in acquisition order
        t = f["times"]
        assert t["camera"] <= t["dequeued"] + 0.05 and t["dequeued"] <= t["stored"]
    assert np.isfinite(m["latency_decision"]["p99_ms"])
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert (run_dir / "config.yaml").is_file()


def test_exposure_controller_brings_intensity_into_band(demo_core, tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            acquisition={"exposure_ms": 1.0, "n_frames": 150},
            controllers=[{"kind": "exposure_band", "low": 20000, "high": 40000}],
            limits={"exposure_ms": [0.5, 200.0]},
        )
    )
    res = run(cfg, driver=_driver(cfg, demo_core), report=False)
    assert res.status == "completed"
    run_dir = Path(res.run_dir)
    analysed = [a for a in read_jsonl(run_dir / "analysis.jsonl") if "values" in a]
    p99 = [a["values"]["stats"]["p99_adu"] for a in analysed]
    assert p99[0] < 20000  # started far below the band
    assert all(20000 <= v <= 40000 for v in p99[-20:]), p99[-20:]
    actions = read_jsonl(run_dir / "actions.jsonl")
    assert actions and all(a["verdict"] in ("applied", "clamped") for a in actions)
    assert all(a["request"]["reason"] and "p99_adu" in a["request"]["evidence"]["statistic"] for a in actions)
    # the hardware agrees with the last action, and frames carry the setting in force
    last = actions[-1]["applied"]["exposure_ms"]
    assert demo_core.getExposure() == __import__("pytest").approx(last, rel=1e-3)
    frames = read_jsonl(run_dir / "frames.jsonl")
    assert frames[-1]["state"]["exposure_ms"] == __import__("pytest").approx(last, rel=1e-3)


class _AskAt(ControllerBase):
    """Asks for one exposure change when it sees frame ``at``."""

    name = "scripted"

    def __init__(self, at: int, exposure_ms: float) -> None:
        self.at, self.exposure_ms, self.done = at, exposure_ms, False

    def update(self, obs: Observation) -> Sequence[ActionRequest]:
        if self.done or obs.frame.index < self.at:
            return []
        self.done = True
        return [self.ask(SetExposure(exposure_ms=self.exposure_ms), "scripted", obs)]


class _StopOnceInForce(ListenerBase):
    """Stops the run once ``frames`` frames were taken at ``exposure_ms``: the run lasts as
    long as the controller takes to ask, however loaded the machine (the analysis thread
    works on the newest frame, so when it sees frame 10 depends on scheduling)."""

    def __init__(self, loop: Loop, exposure_ms: float, frames: int) -> None:
        self.loop, self.exposure_ms, self.frames, self.n = loop, exposure_ms, frames, 0

    def on_frame(self, frame: Frame) -> None:
        if frame.state.exposure_ms == self.exposure_ms:
            self.n += 1
            if self.n == self.frames:
                self.loop.request_stop(StopReason.REQUESTED, "the new exposure was in force long enough")


def test_action_is_in_force_from_the_frame_it_claims(seq_tester_core, tmp_path: Path) -> None:
    """SequenceTester encodes the exposure each image was taken with into its pixels: the
    frame an applied action names as its first is the first taken with it, and every frame
    before it was taken without it. Judged on the pixels, not on when the analysis ran."""
    cap = 5000  # a bound, not the plan: the listener stops the run 30 frames after the change
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            acquisition={"exposure_ms": 5.0, "n_frames": cap},
            pipeline={"stages": [{"kind": "identity"}]},
        )
    )
    res = run(
        cfg,
        driver=_driver(cfg, seq_tester_core),
        controllers=[_AskAt(10, 17.5)],
        report=False,
        on_loop=lambda loop: loop.add_listener(_StopOnceInForce(loop, 17.5, 30)),
    )
    assert res.status == "stopped" and res.stop_reason is StopReason.REQUESTED, res.reason
    run_dir = Path(res.run_dir)
    (rec,) = read_jsonl(run_dir / "actions.jsonl")
    assert rec["verdict"] == "applied"
    first = rec["first_frame_index"]
    asked_at = rec["request"]["frame_index"]  # the frame the controller decided on
    assert asked_at >= 10 and first is not None and first > asked_at
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        exposures = []
        for page in tif.pages:
            info = decode_image(page.asarray())  # type: ignore[union-attr]
            (exp,) = [s.value for s in info.current_state if s.property == "Exposure"]
            exposures.append(exp)
    frames = read_jsonl(run_dir / "frames.jsonl")
    assert len(exposures) == len(frames) == res.metrics["frames_stored"] < cap
    assert set(exposures[:first]) == {5.0}
    assert set(exposures[first:]) == {17.5} and len(exposures[first:]) >= 30
    assert {f["state"]["exposure_ms"] for f in frames[:first]} == {5.0}
    assert {f["state"]["exposure_ms"] for f in frames[first:]} == {17.5}
    assert json.loads((run_dir / "metrics.json").read_text())["actions_applied"] == 1


class _Recorder:
    def __init__(self) -> None:
        self.frames: list[int] = []
        self.analysed: list[int] = []
        self.events: list[str] = []

    def on_frame(self, frame) -> None:  # type: ignore[no-untyped-def]
        self.frames.append(frame.index)

    def on_analysis(self, frame, results) -> None:  # type: ignore[no-untyped-def]
        self.analysed.append(frame.index)

    def on_audit(self, record) -> None:  # type: ignore[no-untyped-def]
        pass

    def on_event(self, event) -> None:  # type: ignore[no-untyped-def]
        self.events.append(event["event"])


class _Broken(_Recorder):
    def on_frame(self, frame) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("viewer crashed")


def test_listeners_see_the_run_and_a_broken_one_cannot_hurt_it(demo_core, tmp_path: Path) -> None:
    cfg = validate_config(cfg_dict(tmp_path, acquisition={"exposure_ms": 1.0, "n_frames": 60}))
    good, bad = _Recorder(), _Broken()

    def attach(loop) -> None:  # type: ignore[no-untyped-def]
        loop.add_listener(bad)
        loop.add_listener(good)

    res = run(cfg, driver=_driver(cfg, demo_core), report=False, on_loop=attach)
    assert res.status == "completed"
    assert good.frames == list(range(60))
    assert len(good.analysed) == res.metrics["frames_analysed"]
    assert good.events[0] == "start" and good.events[-1] == "stop"
