"""The trigger replayed offline on the simulator (how trigger settings are chosen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from smartscope.config import EventDetectorConfig
from smartscope.frame import Frame, frame_time_s
from smartscope.models.events.policy import TriggerSetting, choose_setting, replay, summarize
from smartscope.models.events.stage import ClassicalEventDetector
from smartscope.pipeline import StageOutput
from smartscope.simulators.microscope import VirtualMicroscope

SEED, DURATION_S = 3, 30.0


class Oracle:
    """Scores 1 while some event's fission is between ``near_s`` and ``far_s`` ahead (ground truth)."""

    def __init__(self, events: Sequence[Mapping[str, Any]], near_s: float, far_s: float) -> None:
        self.events, self.near_s, self.far_s = events, near_s, far_s

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        t = frame_time_s(frame)
        ahead = any(self.near_s < float(e["fission_s"]) - t <= self.far_s for e in self.events)
        return StageOutput(values={"event_score": 1.0 if ahead else 0.0})


def _events() -> list[dict[str, Any]]:
    evs = VirtualMicroscope("events", seed=SEED, sensor_px=256, duration_s=DURATION_S).events_truth()
    assert len(evs) >= 2
    return evs


def test_a_trigger_up_to_three_seconds_ahead_images_every_fission_fast() -> None:
    """A switch takes effect from the next frame on (the camera already scheduled it 1 s
    later): scoring high while the fission is up to 3 s ahead (so a slow frame 1–3 s before
    it fires, and the burst lasts until it) catches every fission moment, for a fraction of
    the dose of imaging fast throughout."""
    evs = _events()
    r = replay(Oracle(evs, 0.0, 3.0), TriggerSetting(on_threshold=0.5, off_threshold=0.5), SEED, DURATION_S)
    assert r["events"] == evs
    assert r["fission_fast_fraction"] == 1.0
    assert all(0.0 < lead <= 3.0 for lead in r["leads_s"])
    assert r["dose_rel_fast"] < 0.6


def test_a_trigger_less_than_a_slow_frame_ahead_is_too_late() -> None:
    """Firing only when the fission is under 0.9 s ahead: the next frame, 1 s later, is
    already past it — caught (a fast frame after fission) but not imaged as it happens."""
    evs = _events()
    r = replay(Oracle(evs, 0.0, 0.9), TriggerSetting(on_threshold=0.5, off_threshold=0.5), SEED, DURATION_S)
    assert r["fission_fast_fraction"] < 1.0
    assert r["dose_rel_fast"] < 0.2


def test_choose_setting_takes_the_best_within_the_budget() -> None:
    """Three settings on an oracle detector: never firing, bursts held 6 s, bursts that end
    at once. The most fission moments within the budget win, the lower dose breaks ties."""
    evs = _events()
    never = TriggerSetting(2.0, 2.0)
    held, good = TriggerSetting(0.5, 0.5, min_burst_s=6.0), TriggerSetting(0.5, 0.5)
    settings = [never, held, good]

    def pick(budget: float) -> tuple[TriggerSetting, dict[str, float], list[dict[str, Any]]]:
        return choose_setting(lambda: Oracle(evs, 0.0, 3.0), settings, [SEED], budget, DURATION_S, log=str)

    chosen, summary, rows = pick(0.5)
    assert [r["fission_fast"] for r in rows] == [0.0, 1.0, 1.0]
    assert rows[1]["dose_rel_fast"] > rows[2]["dose_rel_fast"] > rows[0]["dose_rel_fast"]
    assert chosen == good and summary["fission_fast"] == 1.0
    assert pick(rows[0]["dose_rel_fast"] + 0.01)[0] == never  # only never firing fits


def test_classical_detector_replays_and_summarizes() -> None:
    det = ClassicalEventDetector(EventDetectorConfig())
    r = replay(det, TriggerSetting(on_threshold=7.0, off_threshold=6.0), SEED, DURATION_S)
    s = summarize([r, r])
    assert s["events"] == 2 * r["n_events"]
    assert s["fission_fast"] == pytest.approx(r["fission_fast_fraction"])
    assert 0.1 <= s["dose_rel_fast"] <= 1.0
