"""Event-triggered acquisition over several stage positions of an MDA plan.

``n_positions`` fields of the virtual sample side by side, each with its own mitochondria
and fission events, imaged every ``slow_interval_s`` by a useq-schema plan through
pymmcore-plus's runner. ``mode``: ``slow`` runs the plan alone (the baseline);
``triggered`` adds the classical detector (one reference per position) and the
``event_acquire`` controller: when a position's score reaches the threshold, that position
gets a burst (``AcquireAt``: ``burst_frames`` at ``burst_interval_ms``) while the others keep
the plan's schedule.

The sample's clock follows the wall clock (it is set at every event the runner starts),
so the plan's intervals are the sample's. Scored against the simulator's ground truth
(:func:`score_positions`): per position, events caught by a burst, the delay from onset,
fission imaged in a burst, the 561 nm dose (simulator ledger); and how well the plan's
frames kept their times (deviation from ``t × slow_interval_s``), for positions that never
burst and for all.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config.controllers import EventAcquireConfig
from smartscope.config.loading import validate_config
from smartscope.config.scenarios import EventsPositionsScenario
from smartscope.config.stages import EventDetectorConfig
from smartscope.core_signals import connect_direct
from smartscope.frame import Frame
from smartscope.loop import ListenerBase, Loop, RunResult
from smartscope.runner import run as run_loop
from smartscope.scenarios.base import (
    NO_HOOKS,
    Hooks,
    Scenario,
    json_safe,
    plt,
    require_ok,
    save_figure,
    virtual_cfg_file,
    virtual_microscope_config,
    virtual_microscope_of,
)

__all__ = ["SCENARIO", "PositionsRun", "plot", "run", "run_config", "score", "score_positions"]

PIXEL_UM = 0.1  # the virtual microscope's default objective (60x/1.40 Oil, Res60x)
EXPOSURE_MS = 10.0


def field_um(params: EventsPositionsScenario) -> float:
    """One field of the sample: the sensor's width at the default objective."""
    return params.sensor_px * PIXEL_UM


def run_config(params: EventsPositionsScenario, out: Path) -> dict[str, Any]:
    """The run configuration: a plan over ``n_positions`` fields, the detector, the trigger."""
    cfg_file = virtual_cfg_file(
        out / f"virtual-events-positions-{params.mode}-{params.seed}.cfg",
        "events",
        params.seed,
        params.sensor_px,
        "RealTime",
        0.0,
        EXPOSURE_MS,
    )
    w = field_um(params)
    loops = max(1, math.ceil(params.duration_s / params.slow_interval_s))
    plan = {
        "stage_positions": [
            {"x": p * w, "y": 0.0, "z": 0.0, "name": f"field{p}"} for p in range(params.n_positions)
        ],
        "channels": [{"config": "561", "exposure": EXPOSURE_MS}],
        "time_plan": {"interval": params.slow_interval_s, "loops": loops},
    }
    controllers: list[dict[str, Any]] = []
    if params.mode == "triggered":
        trigger = EventAcquireConfig(
            **{
                "burst_frames": params.burst_frames,
                "burst_interval_ms": params.burst_interval_ms,
                **(params.trigger or {}),
            }
        )
        controllers.append(trigger.model_dump(mode="json"))
    detector = EventDetectorConfig(**(params.detector or {})).model_dump(mode="json")
    return {
        "microscope": {**virtual_microscope_config(cfg_file, ["561"]), "buffer_size_mb": 64},
        "acquisition": {"exposure_ms": EXPOSURE_MS, "mda": plan},
        "pipeline": {"stages": [detector], "save_outputs": False},
        "controllers": controllers,
        "limits": {
            "laser_max_mw": {"561": 50.0},
            "xy_um": [[-1.0, params.n_positions * w + 1.0], [-1.0, 1.0]],
            "z_um": [-5.0, 5.0],
        },
        "storage": {"root": str(out), "name": f"events-positions-{params.mode}"},
    }


@dataclass
class PositionsRun:
    """One run of the scenario and its ground truth."""

    mode: str
    run_dir: str
    loop: RunResult
    params: EventsPositionsScenario
    frames: list[dict[str, Any]] = field(default_factory=list)  # position, t, burst, t_s, dose_mj
    events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # per position
    triggers: list[dict[str, Any]] = field(default_factory=list)
    detector: list[tuple[int, float, float]] = field(default_factory=list)  # (p, t_s, score)
    scores: dict[str, Any] = field(default_factory=dict)


class _Recorder(ListenerBase):
    """Frames as they are stored (acquisition thread) and the detector's scores."""

    def __init__(self, t0: list[float]) -> None:
        self.t0 = t0
        self.frames: list[dict[str, Any]] = []
        self.detector: list[tuple[int, float, float]] = []

    def on_frame(self, frame: Frame) -> None:
        self.frames.append(
            {
                "index": frame.index,
                "position": int(frame.axes.get("p", -1)),
                "t": int(frame.axes.get("t", -1)),
                "series": frame.series,
                "burst": bool(frame.state is not None and frame.state.burst),
                "wall_s": frame.camera_time_s,
            }
        )

    def on_analysis(self, frame: Frame, results: Mapping[str, Any]) -> None:
        out = results.get("events")
        if out is not None and self.t0 and "event_score" in out.values:
            self.detector.append(
                (int(frame.axes.get("p", -1)), frame.camera_time_s - self.t0[1], out.values["event_score"])
            )


def run(params: EventsPositionsScenario, out: Path, hooks: Hooks = NO_HOOKS) -> PositionsRun:
    """Run the plan for ``duration_s`` and score it against the simulator's ground truth."""
    cfg = validate_config(run_config(params, out), f"events-positions-{params.mode}")
    holder: dict[str, Any] = {}
    t0: list[float] = []  # (perf_counter, wall) when the first event started: the sample's t = 0

    def own(loop: Loop) -> None:
        core = loop.driver.core  # type: ignore[attr-defined]
        vm = virtual_microscope_of(loop)
        vm.configure(duration_s=params.duration_s)  # events spread over the run; clock at 0
        holder["vm"] = vm

        def follow_wall_clock(*_: Any) -> None:  # runner thread, before each event: a float
            if not t0:
                t0.extend((time.perf_counter(), time.time()))
            vm.t_s = max(vm.t_s, time.perf_counter() - t0[0])

        connect_direct(core.mda.events.eventStarted, follow_wall_clock)
        holder["rec"] = rec = _Recorder(t0)
        loop.add_listener(rec)
        holder["loop"] = loop

    result = require_ok(
        run_loop(cfg, report=False, progress=hooks.progress, on_loop=hooks.chain(own)),
        f"events-positions ({params.mode})",
    )
    vm, rec = holder["vm"], holder["rec"]
    w = field_um(params)
    ledger = list(vm.ledger)
    frames = []
    for f, row in zip(rec.frames, ledger, strict=False):  # one render per frame, in order
        f = {**f, "t_s": float(row["t_s"]), "dose_mj": float(row.get("dose_mj_561", 0.0))}
        f["stage_position"] = round(float(row["stage_x_um"]) / w)
        frames.append(f)
    events = {p: list(vm.events_truth((p, 0))) for p in range(params.n_positions)}
    triggers: list[dict[str, Any]] = []
    for ctl in holder["loop"].controllers:
        triggers += list(getattr(ctl, "triggers", []))
    pr = PositionsRun(params.mode, result.run_dir, result, params, frames, events, triggers, rec.detector)
    pr.scores = score_positions(
        frames, events, params.slow_interval_s, params.post_s, params.burst_interval_ms / 1e3
    )
    return pr


def score_positions(
    frames: Sequence[Mapping[str, Any]],
    events: Mapping[int, Sequence[Mapping[str, Any]]],
    slow_interval_s: float,
    post_s: float = 5.0,
    burst_interval_s: float = 0.1,
) -> dict[str, Any]:
    """Ground-truth scores of one run (times on the sample's clock).

    Per event: *caught* — a burst frame at its position in ``[onset_s, fission_s + post_s]``;
    *delay* — that first burst frame minus onset; *fission in a burst* — a burst frame at
    the position within the second before the fission moment. A burst is *spurious* when
    it began outside every event window (``onset − 1 s`` to ``fission + post_s``) of its
    position. Per position: frames, burst
    frames and the 561 nm dose. Schedule: when each plan frame's event began against
    ``t × slow_interval_s`` after the run's first (``t ≥ 1``: a first visit builds the
    sample's field), for all plan frames and for those taken while another position was
    bursting (within half an interval of a burst frame there); the positions that never
    burst. The positions of one timepoint go one after another, so even an ideal run is off
    by the time the earlier positions take (the ``slow`` mode shows it).
    """
    positions = sorted(events)
    rows = []
    delays: list[float] = []
    caught = fission_in_burst = n_events = 0
    for p in positions:
        mine = [f for f in frames if f["position"] == p]
        burst_t = sorted(f["t_s"] for f in mine if f["burst"])
        for e in events[p]:
            n_events += 1
            t0, t1 = float(e["onset_s"]), float(e["fission_s"]) + post_s
            inside = [t for t in burst_t if t0 <= t <= t1]
            if inside:
                caught += 1
                delays.append(inside[0] - t0)
            if any(float(e["fission_s"]) - 1.0 <= t <= float(e["fission_s"]) for t in burst_t):
                fission_in_burst += 1
        rows.append(
            {
                "position": p,
                "events": len(events[p]),
                "frames": len(mine),
                "burst_frames": len(burst_t),
                "dose_mj": sum(f["dose_mj"] for f in mine),
            }
        )
    # bursts: each AcquireAt's frames form a series; spurious if it began outside every event
    first_of: dict[str, Mapping[str, Any]] = {}
    for f in frames:
        if f["burst"]:
            first_of.setdefault(str(f.get("series", "")), f)
    spurious = sum(
        not any(
            float(e["onset_s"]) - 1.0 <= f["t_s"] <= float(e["fission_s"]) + post_s
            for e in events.get(f["position"], [])
        )
        for f in first_of.values()
    )
    # schedule: when each plan frame's event began (the sample's clock is set then) against
    # t × interval from the run's first; first visits (t = 0) build the sample's field, left out
    plan = [f for f in frames if not f["burst"]]
    start = min((f["t_s"] for f in plan), default=0.0)
    bursts = [(f["position"], f["t_s"]) for f in frames if f["burst"]]
    dev_all: list[float] = []
    dev_during: list[float] = []  # plan frames taken while another position was bursting
    for f in plan:
        if f["t"] < 1:
            continue
        d = abs(f["t_s"] - start - f["t"] * slow_interval_s)
        dev_all.append(d)
        if any(q != f["position"] and abs(t - f["t_s"]) <= slow_interval_s / 2 for q, t in bursts):
            dev_during.append(d)
    untouched = [p for p in positions if not any(f["burst"] for f in frames if f["position"] == p)]
    delays.sort()
    per_frame_mj = sum(f["dose_mj"] for f in frames) / len(frames) if frames else 0.0
    duration_s = max((f["t_s"] for f in frames), default=0.0)
    return {
        "n_events": n_events,
        "caught_fraction": caught / n_events if n_events else math.nan,
        "fission_in_burst_fraction": fission_in_burst / n_events if n_events else math.nan,
        "median_delay_s": statistics.median(delays) if delays else math.nan,
        "n_frames": len(frames),
        "n_burst_frames": sum(r["burst_frames"] for r in rows),
        "n_bursts": len(first_of),
        "spurious_bursts": spurious,
        "dose_mj": sum(r["dose_mj"] for r in rows),
        # every position at the burst rate all the time (burst_interval_s), frames as dosed here
        "dose_fast_everywhere_mj": per_frame_mj * len(positions) * duration_s / burst_interval_s
        if burst_interval_s > 0
        else math.nan,
        "positions": rows,
        "untouched_positions": untouched,
        "plan_frames_during_bursts": len(dev_during),
        "schedule_dev_during_bursts_median_ms": _ms(statistics.median, dev_during),
        "schedule_dev_during_bursts_max_ms": _ms(max, dev_during),
        "schedule_dev_all_median_ms": _ms(statistics.median, dev_all),
        "schedule_dev_all_max_ms": _ms(max, dev_all),
    }


def _ms(stat: Any, values: Sequence[float]) -> float:
    return 1e3 * float(stat(values)) if values else math.nan


def score(result: PositionsRun) -> dict[str, Any]:
    s = dict(result.scores)
    positions = s.pop("positions")
    return {"scores": json_safe(s), "positions": positions, "triggers": result.triggers}


def plot(result: PositionsRun, path: Path) -> Path:
    """One lane per position: the plan's frames, burst frames, each event's constriction
    (onset → fission) and the detector's score."""
    pyplot = plt()
    n = result.params.n_positions
    fig, axes = pyplot.subplots(n, 1, figsize=(11, 1.6 * n + 0.8), sharex=True, squeeze=False)
    for p in range(n):
        ax = axes[p][0]
        for k, e in enumerate(result.events.get(p, [])):
            ax.axvspan(
                e["onset_s"],
                e["fission_s"],
                color="tab:orange",
                alpha=0.25,
                label="event" if k == 0 else None,
            )
            ax.axvline(e["fission_s"], color="tab:red", lw=1)
        mine = [f for f in result.frames if f["position"] == p]
        slow = np.array([f["t_s"] for f in mine if not f["burst"]])
        fast = np.array([f["t_s"] for f in mine if f["burst"]])
        ax.plot(slow, np.zeros(slow.size), "|", color="k", ms=8, label="plan")
        if fast.size:
            ax.plot(fast, np.zeros(fast.size), "|", color="tab:blue", ms=8, label="burst")
        det = [(t, s) for q, t, s in result.detector if q == p]
        if det:
            dt, ds = zip(*det, strict=True)
            ax2 = ax.twinx()
            ax2.plot(dt, ds, ".-", color="tab:green", lw=0.8, ms=2)
            ax2.set_ylabel("score", fontsize=7)
        ax.set_yticks([])
        ax.set_ylabel(f"p{p}")
        if p == 0:
            ax.legend(loc="upper right", fontsize=7, ncol=3)
    s = result.scores
    axes[0][0].set_title(
        f"events over {n} positions ({result.mode}): caught {s['caught_fraction']:.0%} of "
        f"{s['n_events']}, median delay {s['median_delay_s']:.1f} s, {s['n_burst_frames']} burst frames; "
        f"plan frames off schedule ≤ {s['schedule_dev_all_max_ms']:.0f} ms"
    )
    axes[-1][0].set_xlabel("time (s)")
    return save_figure(fig, path)


def _demo_params(seed: int, frames: int | None) -> EventsPositionsScenario:
    return EventsPositionsScenario(mode="triggered", seed=seed + 1, duration_s=60.0)


SCENARIO: Scenario[EventsPositionsScenario, PositionsRun] = Scenario(
    name="events_positions",
    summary="several positions imaged slowly; a fast burst where a fission event is detected",
    params=EventsPositionsScenario,
    run=run,
    score=score,
    plot=plot,
    demo_params=_demo_params,
)
