"""Events training data from the simulator: frames as the detector sees them, ground truth, crops.

Target: per event, a Gaussian of σ = ``HEAT_SIGMA_PX`` at its site from ``P_MIN`` of the
way through the constriction until ``POST_S`` after fission, 0 elsewhere; the first part
of a constriction (too faint to see) and the late retraction (``POST_S``…``NEAR_S`` after
fission) are left out of the loss around the site. Crops of 64² — event sites (including
events that ended up to ``AFTER_S`` ago, as negatives), random crops, and hard negatives
where the classical map peaks away from any event — from the simulator's ``events``
scenario at 1 s intervals, half the fields with 100 ms bursts mixed in as the trigger makes
them. Training (5000…), held-out (9000…) and bench (1–5) seeds are disjoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from smartscope.models.events.network import BORDER_PX, Z_SCALE, ReferenceTracker, smooth

__all__ = [
    "EventFrame",
    "collect_crops",
    "event_target",
    "frame_label",
    "simulate_sequence",
]

HEAT_SIGMA_PX = 3.0
P_MIN = 0.3  # fraction of the constriction after which the target is on
POST_S = 3.0  # target stays on this long after fission
NEAR_S = 8.0  # frames up to this long after fission are neither positive nor quiet
IGNORE_RADIUS_PX = 14.0
AFTER_S = 20.0  # sites of events this long after fission also get (negative) crops
CROP_PX = 64
TRAIN_SEED_BASE = 5000
HELDOUT_SEED_BASE = 9000


def phase(e: Mapping[str, Any], t_s: float) -> Literal["before", "faint", "on", "late", "after"]:
    onset, fission = float(e["onset_s"]), float(e["fission_s"])
    if t_s < onset:
        return "before"
    if t_s < onset + P_MIN * (fission - onset):
        return "faint"
    if t_s < fission + POST_S:
        return "on"
    if t_s < fission + NEAR_S:
        return "late"
    return "after"


def frame_label(events: Sequence[Mapping[str, Any]], t_s: float) -> int:
    """1: an event is under way (onset ≤ t < fission + ``POST_S``); 0: quiet (no event in
    [onset, fission + ``NEAR_S``)); −1: neither (an event's late retraction)."""
    phases = [phase(e, t_s) for e in events]
    if any(p in ("faint", "on") for p in phases):
        return 1
    return -1 if "late" in phases else 0


def event_target(
    events: Sequence[Mapping[str, Any]], t_s: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(target, loss weight) maps of one frame (see the module doc)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    heat = np.zeros(shape, np.float32)
    keep = np.ones(shape, np.float32)
    for e in events:
        ph = phase(e, t_s)
        if ph in ("before", "after"):
            continue
        r2 = (yy - float(e["y_px"])) ** 2 + (xx - float(e["x_px"])) ** 2
        if ph == "on":
            heat = np.maximum(heat, np.exp(-r2 / (2 * HEAT_SIGMA_PX**2)))
        else:
            keep[r2 < IGNORE_RADIUS_PX**2] = 0.0
    keep[heat > 0.05] = 1.0
    return heat, keep


@dataclass
class EventFrame:
    """One simulated frame after the first: network input, ground truth and the classical score."""

    t_s: float
    x: np.ndarray  # (5, H, W), see make_input
    events: list[dict[str, Any]]
    label: int
    classical_score: float
    fast: bool


def simulate_sequence(
    seed: int,
    duration_s: float = 60.0,
    sensor_px: int = 256,
    slow_interval_s: float = 1.0,
    fast_interval_s: float = 0.1,
    burst_rng: np.random.Generator | None = None,
) -> Iterator[EventFrame]:
    """Frames of the simulator's ``events`` scenario as the detector stage sees them.

    Without ``burst_rng`` every frame is ``slow_interval_s`` apart; with it, bursts of
    ``fast_interval_s`` frames (5–15 s long, every ~10–30 s) are mixed in, as the trigger
    would make them (the reference ages on the frame clock, and bleaching follows dose).
    """
    from smartscope.simulators.microscope import VirtualMicroscope

    vm = VirtualMicroscope("events", seed=seed, sensor_px=sensor_px, duration_s=duration_s)
    events = [dict(e) for e in vm.events_truth()]
    tracker = ReferenceTracker()
    b = BORDER_PX
    burst_until = -1.0
    next_burst = float(burst_rng.uniform(2.0, 20.0)) if burst_rng is not None else math.inf
    while vm.t_s < duration_s:
        fast = vm.t_s < burst_until
        if burst_rng is not None and not fast and vm.t_s >= next_burst:
            burst_until = vm.t_s + float(burst_rng.uniform(5.0, 15.0))
            next_burst = burst_until + float(burst_rng.uniform(5.0, 20.0))
            fast = True
        vm.interval_ms = (fast_interval_s if fast else slow_interval_s) * 1e3
        img, truth = vm.render_frame()
        x = tracker.step(smooth(img), truth.t_s)
        if x is None:
            continue
        z = x[3, b : x.shape[1] - b, b : x.shape[2] - b] * Z_SCALE
        t = float(truth.t_s)
        yield EventFrame(t, x, events, frame_label(events, t), float(z.max()), fast)


def crops_of_frame(
    f: EventFrame, rng: np.random.Generator, n_random: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """64² training crops of one frame: one per visible-or-ignored event site, random
    ones, and a hard negative where the classical loss map peaks away from every event."""
    h, w = f.x.shape[1:]
    heat, keep = event_target(f.events, f.t_s, (h, w))
    c = CROP_PX

    def crop(cy: float, cx: float, jitter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y0 = int(np.clip(round(cy) - c // 2 + int(rng.integers(-jitter, jitter + 1)), 0, h - c))
        x0 = int(np.clip(round(cx) - c // 2 + int(rng.integers(-jitter, jitter + 1)), 0, w - c))
        sl = (slice(y0, y0 + c), slice(x0, x0 + c))
        return f.x[(slice(None), *sl)], heat[sl], keep[sl]

    for e in f.events:
        ph = phase(e, f.t_s)
        if ph not in ("before", "after") or (ph == "after" and f.t_s < float(e["fission_s"]) + AFTER_S):
            # visible or ignored, or an event that is over (its changed tube is a hard negative)
            yield crop(float(e["y_px"]), float(e["x_px"]), c // 2 - 8)
    for _ in range(n_random):
        yield crop(float(rng.uniform(0, h)), float(rng.uniform(0, w)), 0)
    z = f.x[3].copy()
    z[(heat > 0.05) | (keep < 0.5)] = -np.inf
    b = BORDER_PX
    inner = z[b : h - b, b : w - b]
    iy, ix = divmod(int(np.argmax(inner)), inner.shape[1])
    yield crop(iy + b, ix + b, 16)


def collect_crops(
    seeds: Sequence[int], rng: np.random.Generator, duration_s: float = 60.0, keep_fast: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training crops (inputs float16 (N, 5, 64, 64), targets, weights) from ``seeds``;
    half the fields of view have 100 ms bursts, of whose frames ``keep_fast`` are used."""
    xs, ys, ws = [], [], []
    for k, seed in enumerate(seeds):
        bursts = np.random.default_rng(seed + 17) if k % 2 else None
        for f in simulate_sequence(seed, duration_s, burst_rng=bursts):
            if f.fast and rng.random() > keep_fast:
                continue
            for x, y, wgt in crops_of_frame(f, rng):
                xs.append(x.astype(np.float16))
                ys.append(y.astype(np.float16))
                ws.append(wgt.astype(np.float16))
    return np.stack(xs), np.stack(ys)[:, None], np.stack(ws)[:, None]
