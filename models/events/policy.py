"""The event trigger replayed offline on the simulator: how its operating point is chosen.

:func:`replay` runs one field of the ``events`` scenario frame by frame on the
:class:`~smartscope.simulators.microscope.VirtualMicroscope` (no MMCore, no threads): each
frame goes through a detector stage (the same classes the live pipeline runs), the score
through the trigger's :class:`~smartscope.controllers.events.Hysteresis`, and a switch sets
the camera's frame interval as the ``event_trigger`` controller does with ``pacing:
camera`` — the interval already running when a decision is made still applies to the next
frame (the camera scheduled it), which is marked as taken in the new mode; the loop's
wall-clock latency is left out. :func:`score_events` scores the frames against the
simulator's ground truth (the events scenario and the bench use it too), and
:func:`choose_setting` picks the trigger setting that images the most fission moments fast
within a dose budget (:data:`DOSE_BUDGET` by default) on held-out fields, among candidates
such as :func:`candidate_settings` (thresholds at percentiles of a detector's quiet-frame
scores).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from smartscope.controllers.events import Hysteresis
from smartscope.frame import Frame
from smartscope.pipeline import StageOutput

__all__ = [
    "DOSE_BUDGET",
    "ON_PERCENTILES",
    "TriggerSetting",
    "candidate_settings",
    "choose_setting",
    "replay",
    "score_events",
    "summarize",
]

SLOW_INTERVAL_S = 1.0
FAST_INTERVAL_S = 0.1
DOSE_BUDGET = 0.30  # mean dose / dose of imaging fast throughout
ON_PERCENTILES = (60.0, 75.0, 85.0, 92.0, 97.0)
OFF_FRACTIONS = (0.5, 0.8)


class _Detector(Protocol):
    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput: ...


@dataclass(frozen=True)
class TriggerSetting:
    """The :class:`~smartscope.config.EventTriggerConfig` fields a replay varies."""

    on_threshold: float
    off_threshold: float
    min_burst_s: float = 0.0
    max_burst_s: float = 10.0
    cooldown_s: float = 0.0
    min_on_frames: int = 1

    def trigger_fields(self) -> dict[str, Any]:
        return asdict(self)


def candidate_settings(
    quiet_scores: np.ndarray,
    on_percentiles: Sequence[float] = ON_PERCENTILES,
    off_fractions: Sequence[float] = OFF_FRACTIONS,
    max_burst_s: float = 10.0,
) -> list[TriggerSetting]:
    """Trigger settings to replay: on-thresholds at percentiles of held-out quiet-frame
    scores, off-thresholds at fractions of them; bursts end as soon as the score falls."""
    out = []
    for p in on_percentiles:
        on = float(np.percentile(quiet_scores, p))
        for f in off_fractions:
            out.append(TriggerSetting(on_threshold=on, off_threshold=f * on, max_burst_s=max_burst_s))
    return out


def score_events(
    frames: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], post_s: float = 5.0
) -> dict[str, Any]:
    """Ground-truth scores of one run.

    Per event: *fission in fast mode* — the frame covering the fission moment (the last
    one at or before ``fission_s``) was a burst frame; *caught* — any burst frame in
    ``[onset_s, fission_s + post_s]``; *delay* — first burst frame at/after onset minus
    onset (caught events only); *lead* — fission minus the start of the burst that covers
    it (events whose fission was imaged fast). A burst frame outside every event window
    counts as spurious. ``delays_s`` and ``leads_s`` list them per event (sorted).
    """
    times = sorted((float(f["t_s"]), bool(f["burst"])) for f in frames)
    n = len(events)
    fission_fast = caught = 0
    delays: list[float] = []
    leads: list[float] = []
    per_event: list[dict[str, float]] = []
    windows = [(float(e["onset_s"]), float(e["fission_s"]) + post_s) for e in events]
    for e, (t0, t1) in zip(events, windows, strict=True):
        before = [(t, b) for t, b in times if t <= float(e["fission_s"])]
        fast = bool(before and before[-1][1])
        per_event.append({"constriction_s": float(e["fission_s"]) - t0, "fission_fast": float(fast)})
        if fast:
            fission_fast += 1
            k = len(before) - 1
            while k > 0 and before[k - 1][1]:
                k -= 1
            leads.append(float(e["fission_s"]) - before[k][0])
        inside = [t for t, b in times if b and t0 <= t <= t1]
        if inside:
            caught += 1
            delays.append(inside[0] - t0)
    burst = [t for t, b in times if b]
    spurious = sum(not any(a <= t <= b for a, b in windows) for t in burst)
    delays.sort()
    leads.sort()
    return {
        "n_events": n,
        "n_frames": len(times),
        "n_burst_frames": len(burst),
        "fission_fast_fraction": fission_fast / n if n else float("nan"),
        "caught_fraction": caught / n if n else float("nan"),
        "median_delay_s": delays[len(delays) // 2] if delays else float("nan"),
        "spurious_burst_frames": spurious,
        "delays_s": delays,
        "leads_s": leads,
        "per_event": per_event,
    }


def replay(
    detector: _Detector,
    setting: TriggerSetting,
    seed: int,
    duration_s: float = 60.0,
    sensor_px: int = 256,
) -> dict[str, Any]:
    """One field of the events scenario under the trigger (see the module doc): the
    :func:`score_events` scores plus ``dose_rel_fast`` (frames / frames of imaging fast
    throughout; every frame gets the same light) and ``events``."""
    from smartscope.simulators.microscope import VirtualMicroscope

    vm = VirtualMicroscope("events", seed=seed, sensor_px=sensor_px, duration_s=duration_s)
    vm.interval_ms = SLOW_INTERVAL_S * 1e3
    events = [dict(e) for e in vm.events_truth()]
    hyst = Hysteresis(**setting.trigger_fields())
    frames: list[dict[str, Any]] = []
    burst = False
    k = 0
    while vm.t_s < duration_s:
        img, truth = vm.render_frame()
        t = float(truth.t_s)
        frames.append({"t_s": t, "burst": burst})
        md = {"SimTime_s": f"{t:.6f}"}
        out = detector.process(Frame(index=k, image=img, camera_time_s=t, metadata={"mm": md}), {})
        switch = hyst.step(t, float(out.values["event_score"]))
        if switch is not None:
            burst = switch == "on"
            vm.interval_ms = (FAST_INTERVAL_S if burst else SLOW_INTERVAL_S) * 1e3
        k += 1
    scores = score_events(frames, events)
    scores["dose_rel_fast"] = len(frames) / (duration_s / FAST_INTERVAL_S)
    scores["events"] = events
    return scores


def summarize(runs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Pooled scores of several replays: fission imaged fast, caught, dose / fixed fast."""
    rs = list(runs)
    n = sum(int(r["n_events"]) for r in rs)
    return {
        "events": float(n),
        "fission_fast": sum(r["fission_fast_fraction"] * r["n_events"] for r in rs) / max(n, 1),
        "caught": sum(r["caught_fraction"] * r["n_events"] for r in rs) / max(n, 1),
        "dose_rel_fast": float(np.mean([r["dose_rel_fast"] for r in rs])),
    }


def choose_setting(
    make_detector: Callable[[], _Detector],
    settings: Sequence[TriggerSetting],
    seeds: Sequence[int],
    dose_budget: float,
    duration_s: float = 60.0,
    log: Callable[[str], None] = print,
) -> tuple[TriggerSetting, dict[str, float], list[dict[str, Any]]]:
    """The setting that images the most fission moments fast with a mean dose within
    ``dose_budget`` (ties: the lower dose) on ``seeds``, its pooled scores, and every
    setting's row. If none fits the budget, the lowest-dose one."""
    rows: list[dict[str, Any]] = []
    for s in settings:
        summ = summarize(replay(make_detector(), s, seed, duration_s) for seed in seeds)
        rows.append({**s.trigger_fields(), **summ})
        log(f"trigger {s}: {summ}")
    fits = [r for r in rows if r["dose_rel_fast"] <= dose_budget]
    best = (
        max(fits, key=lambda r: (r["fission_fast"], -r["dose_rel_fast"]))
        if fits
        else min(rows, key=lambda r: r["dose_rel_fast"])
    )
    chosen = settings[rows.index(best)]
    return chosen, {k: float(best[k]) for k in ("events", "fission_fast", "caught", "dose_rel_fast")}, rows
