"""Event-triggered acquisition: hysteresis logic and the closed loop on the virtual microscope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smartscope.config import EventDetectorConfig, EventsScenario, EventTriggerConfig
from smartscope.controllers.events import EventTriggerController, Hysteresis
from smartscope.frame import DriverState, Frame
from smartscope.models.events.stage import ClassicalEventDetector
from smartscope.scenarios import events
from smartscope.scenarios.base import Hooks
from smartscope.scenarios.events import score_events
from smartscope.simulators.microscope import VirtualMicroscope

# (t_s, score) stream -> expected switch per step
CASES: dict[str, tuple[dict[str, Any], list[tuple[float, float]], list[str | None]]] = {
    "single spike starts, min burst holds": (
        dict(on_threshold=5, off_threshold=3, min_burst_s=2.0),
        [(0, 1), (1, 6), (2, 1), (3, 1), (4, 1)],
        [None, "on", None, "off", None],
    ),
    "between thresholds keeps the burst": (
        dict(on_threshold=5, off_threshold=3, min_burst_s=0.0),
        [(0, 6), (1, 4), (2, 4.5), (3, 2.9)],
        ["on", None, None, "off"],
    ),
    "needs consecutive frames above on": (
        dict(on_threshold=5, off_threshold=3, min_on_frames=2),
        [(0, 6), (1, 1), (2, 6), (3, 6)],
        [None, None, None, "on"],
    ),
    "cool-down blocks a new burst": (
        dict(on_threshold=5, off_threshold=3, cooldown_s=3.0),
        [(0, 6), (1, 1), (2, 6), (3, 6), (4, 6)],
        ["on", "off", None, None, "on"],
    ),
    "max burst ends a burst under a high score": (
        dict(on_threshold=5, off_threshold=3, max_burst_s=2.0),
        [(0, 6), (1, 9), (2, 9), (3, 9)],
        ["on", None, "off", "on"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hysteresis_table(name: str) -> None:
    kwargs, stream, expected = CASES[name]
    h = Hysteresis(**kwargs)
    assert [h.step(t, s) for t, s in stream] == expected


def test_bad_thresholds_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="off_threshold"):
        EventTriggerConfig(on_threshold=3, off_threshold=5)
    with pytest.raises(ValueError, match="fast_interval_ms"):
        EventTriggerConfig(fast_interval_ms=2000, slow_interval_ms=1000)


def test_detector_locates_a_ground_truth_fission_site() -> None:
    """Right after fission the score peaks at the event site (simulated frames)."""
    vm = VirtualMicroscope("events", seed=1, sensor_px=256, duration_s=30.0)
    vm.interval_ms = 500.0
    det = ClassicalEventDetector(EventDetectorConfig())
    ev = vm.events_truth()[0]
    best = (0.0, -1.0, -1.0)
    quiet: list[float] = []
    for i in range(int((ev["fission_s"] + 1.5) / 0.5)):
        img, truth = vm.render_frame()
        md = {"SimTime_s": f"{truth.t_s:.6f}"}
        out = det.process(Frame(index=i, image=img, camera_time_s=truth.t_s, metadata={"mm": md}), {})
        v = out.values
        if all(truth.t_s < float(e["onset_s"]) for e in vm.events_truth()) and i > 0:
            quiet.append(v["event_score"])
        if truth.t_s >= ev["fission_s"] and v["event_score"] > best[0]:
            best = (v["event_score"], v["event_y_px"], v["event_x_px"])
    assert quiet and max(quiet) < 7.0  # no trigger before any event starts
    score, y, x = best
    assert score >= 7.0
    assert np.hypot(y - ev["y_px"], x - ev["x_px"]) < 6.0


def test_score_events_on_a_synthetic_timeline() -> None:
    events = [{"onset_s": 2.0, "fission_s": 4.0}, {"onset_s": 20.0, "fission_s": 22.0}]
    frames = [{"t_s": t / 10, "burst": 25 <= t <= 60} for t in range(0, 300)]
    s = score_events(frames, events, post_s=5.0)
    assert s["fission_fast_fraction"] == 0.5
    assert s["caught_fraction"] == 0.5
    assert s["median_delay_s"] == pytest.approx(0.5)
    assert s["delays_s"] == [pytest.approx(0.5)]
    assert s["leads_s"] == [pytest.approx(1.5)]  # burst from 2.5 s, fission at 4 s
    assert s["spurious_burst_frames"] == 0


def test_triggered_loop_bursts_around_ground_truth_events(tmp_path: Path) -> None:
    """Real loop, MMCore virtual microscope: bursts cover the events at a fraction of the dose."""
    trig = events.run(EventsScenario(mode="triggered", seed=1, duration_s=30.0), tmp_path)
    fast = events.run(EventsScenario(mode="fast", seed=1, duration_s=30.0), tmp_path)
    s = trig.scores
    assert s["n_events"] >= 2
    assert s["caught_fraction"] >= 0.6, s
    assert (
        s["n_burst_frames"] > 0
        and s["n_burst_frames"] - s["spurious_burst_frames"] > s["spurious_burst_frames"]
    )
    assert any(sw["to"] == "on" for sw in trig.switches)
    assert trig.dose_mj < 0.8 * fast.dose_mj
    assert fast.scores["fission_fast_fraction"] == 1.0
    # every switch is in the audit log with the detector output behind it
    import json

    actions = [json.loads(x) for x in (Path(trig.run_dir) / "actions.jsonl").read_text().splitlines()]
    kinds = {a["request"]["action"]["kind"] for a in actions}
    assert {"start_burst", "stop_burst", "property"} <= kinds or {"start_burst", "property"} <= kinds
    assert all("score" in a["request"]["evidence"] for a in actions)


def _obs(i: int, score: float, burst: bool) -> Any:
    from smartscope.controllers.base import Observation
    from smartscope.pipeline import StageOutput

    frame = Frame(
        index=i,
        image=np.zeros((8, 8), np.uint16),
        camera_time_s=float(i),
        metadata={"mm": {"SimTime_s": str(float(i))}},
    )
    out = StageOutput(values={"event_score": score, "event_y_px": 3.0, "event_x_px": 4.0})
    return Observation(frame, {"events": out}, DriverState(exposure_ms=10.0, burst=burst, roi=(0, 0, 8, 8)))


def test_trigger_follows_a_person_stopping_the_burst() -> None:
    ctl = EventTriggerController(EventTriggerConfig(pacing="camera", min_burst_s=100.0))
    on = ctl.update(_obs(0, 9.0, False))
    assert [r.action.kind for r in on] == ["start_burst", "property"]
    assert on[1].action.value == 100.0  # type: ignore[union-attr]
    assert ctl.update(_obs(1, 9.0, True)) == []  # burst in force
    back = ctl.update(_obs(2, 9.0, False))  # a person stopped it
    assert [r.action.kind for r in back] == ["property"]
    assert back[0].action.value == 1000.0  # type: ignore[union-attr]
    assert not ctl.hyst.active and ctl.switches[-1]["to"] == "off (external)"


def test_paused_trigger_asks_for_nothing_in_the_live_loop(tmp_path: Path) -> None:
    run = events.run(
        EventsScenario(mode="triggered", seed=1, duration_s=15.0),
        tmp_path,
        Hooks(on_loop=lambda loop: loop.pause_controller("event_trigger")),
    )
    assert run.switches == [] and run.scores["n_burst_frames"] == 0
    assert (Path(run.run_dir) / "actions.jsonl").read_text().strip() == ""
