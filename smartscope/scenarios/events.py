"""Event-triggered acquisition: mitochondrial fission at random times, imaged slowly (1 s)
until the detector sees one, then fast (100 ms) until it is over.

``mode``: ``slow`` and ``fast`` image at a fixed rate (the baselines), ``triggered`` lets
the classical detector (or a learned heat-map bundle) and the hysteresis trigger switch.
Scored against the simulator's ground truth (:func:`score_events`): events whose fission
moment was imaged fast, events with any fast frame while under way, the delay from onset,
fast frames outside every event, and the 561 nm dose (simulator ledger).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config.controllers import EventTriggerConfig
from smartscope.config.loading import validate_config
from smartscope.config.scenarios import EventsScenario
from smartscope.config.stages import EventDetectorConfig, LearnedEventDetectorConfig
from smartscope.frame import Frame
from smartscope.loop import ListenerBase, Loop, RunResult, StopReason
from smartscope.models.events.policy import score_events
from smartscope.models.events.stage import trigger_thresholds
from smartscope.pipeline import StageOutput
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

__all__ = ["SCENARIO", "EventRun", "plot", "run", "run_config", "score", "score_events"]

SLOW_MS = 1000.0
FAST_MS = 100.0


def run_config(params: EventsScenario, out: Path, n_frames: int = 100_000) -> dict[str, Any]:
    """The run configuration: slow (1 s), fast (100 ms) or triggered between the two."""
    interval = FAST_MS if params.mode == "fast" else SLOW_MS
    cfg_file = virtual_cfg_file(
        out / f"virtual-events-{params.mode}-{params.seed}.cfg",
        "events",
        params.seed,
        params.sensor_px,
        params.pacing,
        interval,
    )
    controllers: list[dict[str, Any]] = []
    if params.mode == "triggered":
        # the bundle's held-out-calibrated thresholds; explicit trigger settings win
        thresholds = dict(trigger_thresholds(params.learned_bundle)) if params.learned_bundle else {}
        tcfg = EventTriggerConfig(
            **{**thresholds, **(params.trigger or {})},
            pacing="camera",
            slow_interval_ms=SLOW_MS,
            fast_interval_ms=FAST_MS,
        )
        controllers.append(tcfg.model_dump(mode="json"))
    if params.learned_bundle is None:
        detector = EventDetectorConfig(**(params.detector or {})).model_dump(mode="json")
    else:
        detector = LearnedEventDetectorConfig(
            bundle=params.learned_bundle, **(params.detector or {})
        ).model_dump(mode="json")
    return {
        "microscope": virtual_microscope_config(cfg_file, ["561"]),
        "acquisition": {"exposure_ms": 10.0, "n_frames": n_frames, "lasers_mw": {"561": 10.0}},
        "pipeline": {"stages": [detector], "save_outputs": False},
        "controllers": controllers,
        "limits": {"laser_max_mw": {"561": 50.0}},
        "storage": {"root": str(out), "name": f"events-{params.mode}"},
    }


@dataclass
class EventRun:
    """One events-scenario run and its ground truth."""

    mode: str
    run_dir: str
    loop: RunResult
    frames: list[dict[str, Any]] = field(default_factory=list)  # t_s, sim_frame, burst
    events: list[dict[str, Any]] = field(default_factory=list)  # ground truth rows
    dose_mj: float = 0.0
    switches: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)
    detector: list[tuple[float, float]] = field(default_factory=list)  # (t_s, event_score) analysed
    on_threshold: float = 0.0
    off_threshold: float = 0.0


class _Recorder(ListenerBase):
    """Loop listener: each frame's simulated time and mode; stops at the simulated end."""

    def __init__(self, loop: Loop, end_s: float) -> None:
        self.loop = loop
        self.end_s = end_s
        self.frames: list[dict[str, Any]] = []
        self.detector: list[tuple[float, float]] = []

    def on_frame(self, frame: Frame) -> None:
        md = frame.metadata.get("mm", {})
        t = float(md.get("SimTime_s", "nan"))
        self.frames.append(
            {
                "index": frame.index,
                "t_s": t,
                "sim_frame": int(md.get("SimFrame", -1)),
                "burst": bool(frame.state is not None and frame.state.burst),
            }
        )
        if t >= self.end_s:
            self.loop.request_stop(StopReason.REQUESTED, f"simulated time {self.end_s:g} s reached")

    def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
        out = results.get("events")
        if out is not None and "event_score" in out.values:
            md = frame.metadata.get("mm", {})
            self.detector.append((float(md.get("SimTime_s", "nan")), out.values["event_score"]))


def run(params: EventsScenario, out: Path, hooks: Hooks = NO_HOOKS) -> EventRun:
    """Run the events scenario for ``duration_s`` simulated seconds and score it."""
    data = run_config(params, out)
    cfg = validate_config(data, f"events-{params.mode}")
    holder: dict[str, Any] = {}

    def own(loop: Loop) -> None:
        vm = virtual_microscope_of(loop)
        vm.configure(duration_s=params.duration_s)  # events spread over the run (rebuilds, t=0)
        holder["vm"] = vm
        holder["rec"] = rec = _Recorder(loop, params.duration_s)
        loop.add_listener(rec)
        holder["loop"] = loop

    result = require_ok(
        run_loop(cfg, report=False, progress=hooks.progress, on_loop=hooks.chain(own)),
        f"events ({params.mode})",
    )
    vm = holder["vm"]
    rec: _Recorder = holder["rec"]
    frames = [f for f in rec.frames if f["t_s"] < params.duration_s]
    if params.mode == "fast":  # fixed fast: every frame is taken at the fast rate
        frames = [{**f, "burst": True} for f in frames]
    sim_frames = {f["sim_frame"] for f in frames}
    dose = sum(row.get("dose_mj_561", 0.0) for row in vm.ledger if int(row["frame"]) in sim_frames)
    switches: list[dict[str, Any]] = []
    for ctl in holder["loop"].controllers:
        switches += list(getattr(ctl, "switches", []))
    trig = cfg.controllers[0] if cfg.controllers else EventTriggerConfig()
    assert isinstance(trig, EventTriggerConfig)
    ev = EventRun(
        params.mode,
        result.run_dir,
        result,
        frames,
        list(vm.events_truth()),
        dose,
        switches,
        on_threshold=trig.on_threshold,
        off_threshold=trig.off_threshold,
    )
    ev.detector = list(rec.detector)
    ev.scores = score_events(frames, ev.events, params.post_s)
    return ev


def score(result: EventRun) -> dict[str, Any]:
    return {"scores": json_safe(result.scores), "dose_mj": result.dose_mj, "switches": result.switches}


def plot(result: EventRun, path: Path) -> Path:
    """Detector score over time with the thresholds, fast-mode spans, and each event's
    ground-truth constriction (onset → fission)."""
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(11, 4))
    for k, e in enumerate(result.events):
        ax.axvspan(
            e["onset_s"],
            e["fission_s"],
            color="tab:orange",
            alpha=0.25,
            label="constriction (truth)" if k == 0 else None,
        )
        ax.axvline(e["fission_s"], color="tab:red", lw=1, label="fission (truth)" if k == 0 else None)
    t = np.array([f["t_s"] for f in result.frames])
    fast = np.array([f["burst"] for f in result.frames])
    if t.size:
        ax.fill_between(
            t,
            0,
            1,
            where=fast,
            transform=ax.get_xaxis_transform(),
            color="tab:blue",
            alpha=0.15,
            step="post",
            label="fast mode",
        )
        ax.plot(t, np.full(t.size, -0.5), "|", color="k", ms=6, label="frames")
    if result.detector:
        dt, ds = zip(*result.detector, strict=True)
        ax.plot(dt, ds, ".-", color="tab:green", lw=1, ms=3, label="event score")
    ax.axhline(result.on_threshold, ls="--", color="tab:green", lw=0.8, label="on / off thresholds")
    ax.axhline(result.off_threshold, ls=":", color="tab:green", lw=0.8)
    s = result.scores
    ax.set_title(
        f"events ({result.mode}): fission imaged fast {s['fission_fast_fraction']:.0%}, "
        f"caught {s['caught_fraction']:.0%}, "
        f"median delay {s['median_delay_s']:.1f} s, {s['n_burst_frames']}/{s['n_frames']} fast frames"
    )
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("detector score")
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    return save_figure(fig, path)


def _demo_params(seed: int, frames: int | None) -> EventsScenario:
    # seed + 1: the demo's default (seed 0) shows events early in its 60 s
    return EventsScenario(mode="triggered", seed=seed + 1, duration_s=60.0)


SCENARIO: Scenario[EventsScenario, EventRun] = Scenario(
    name="events",
    summary="slow imaging that bursts fast on detected mitochondrial fission",
    params=EventsScenario,
    run=run,
    score=score,
    plot=plot,
    demo_params=_demo_params,
)
