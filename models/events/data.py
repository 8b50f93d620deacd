"""Events training data from the simulator: frames as the detector sees them, ground truth, crops.

Target (what the trigger needs to know): per event, a Gaussian of σ = ``HEAT_SIGMA_PX`` at
its site whose height is 1 while the fission is at most ``HORIZON_S`` away, falls linearly
to 0 over the ``RAMP_S`` before that, and is 0 from the fission moment on (a parted tube is
no reason to stay fast). A frame is *imminent* (label 1) while an event's fission is at
most ``HORIZON_S`` ahead; *quiet* (0) when no event is in [onset, fission + ``NEAR_S``);
else −1 (an early constriction, or the retraction after a fission).

Frames come from the simulator's ``events`` scenario at 1 s intervals with 100 ms bursts
mixed in as a trigger makes them (:func:`burst_schedule`): bursts that start a random time
before a fission and end a random time after it, and short false alarms. Crops of 64² —
event sites (including events that ended up to ``AFTER_S`` ago, as negatives), random
crops, and hard negatives where the classical loss map peaks away from any event.
Training (5000…), held-out (9000…) and bench (1–5) seeds are disjoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from smartscope.models.events.network import BORDER_PX, ReferenceTracker, loss_zmap, smooth

__all__ = [
    "EventFrame",
    "burst_schedule",
    "collect_crops",
    "event_target",
    "frame_label",
    "simulate_sequence",
]

HEAT_SIGMA_PX = 3.0
HORIZON_S = 2.0  # target 1 while the fission is at most this far ahead
RAMP_S = 1.0  # … rising over this long before that
NEAR_S = 8.0  # frames up to this long after fission are neither imminent nor quiet
IGNORE_RADIUS_PX = 14.0
AFTER_S = 20.0  # sites of events this long after fission also get (negative) crops
CROP_PX = 64
TRAIN_SEED_BASE = 5000
HELDOUT_SEED_BASE = 9000
CLASSICAL_TAU_S = 5.0  # the classical detector's reference (EventDetectorConfig default)


def time_to_fission(e: Mapping[str, Any], t_s: float) -> float:
    return float(e["fission_s"]) - t_s


def imminence(e: Mapping[str, Any], t_s: float) -> float:
    """Target height of one event at ``t_s``: 1 within ``HORIZON_S`` of its fission, a
    linear ramp over the ``RAMP_S`` before, 0 before that and from the fission on."""
    ttf = time_to_fission(e, t_s)
    if ttf <= 0.0 or t_s < float(e["onset_s"]):
        return 0.0
    return float(np.clip((HORIZON_S + RAMP_S - ttf) / RAMP_S, 0.0, 1.0))


def frame_label(events: Sequence[Mapping[str, Any]], t_s: float) -> int:
    """1: a fission is at most ``HORIZON_S`` ahead; 0: quiet (no event in [onset,
    fission + ``NEAR_S``)); −1: neither (an early constriction or a late retraction)."""
    if any(0.0 < time_to_fission(e, t_s) <= HORIZON_S for e in events):
        return 1
    busy = any(float(e["onset_s"]) <= t_s < float(e["fission_s"]) + NEAR_S for e in events)
    return -1 if busy else 0


def event_target(
    events: Sequence[Mapping[str, Any]], t_s: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(target, loss weight) maps of one frame (see the module doc); the ramp's inside
    gets half weight (its exact timing is not observable)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    heat = np.zeros(shape, np.float32)
    keep = np.ones(shape, np.float32)
    for e in events:
        h = imminence(e, t_s)
        if h <= 0.0:
            continue
        r2 = (yy - float(e["y_px"])) ** 2 + (xx - float(e["x_px"])) ** 2
        heat = np.maximum(heat, np.float32(h) * np.exp(-r2 / (2 * HEAT_SIGMA_PX**2)))
        if h < 1.0:
            keep[r2 < IGNORE_RADIUS_PX**2] = 0.5
    return heat, keep


@dataclass
class EventFrame:
    """One simulated frame after the first: network input, ground truth and the classical score."""

    t_s: float
    x: np.ndarray  # (8, H, W), see network.make_input
    events: list[dict[str, Any]]
    label: int
    classical_score: float
    fast: bool


def burst_schedule(
    rng: np.random.Generator,
    events: Sequence[Mapping[str, Any]],
    duration_s: float,
    alarm_rate_per_s: float = 0.15,
) -> Callable[[float], bool]:
    """A trigger-like fast/slow schedule for training data: for most events a burst from a
    random 0.2–3.5 s before its fission to 0–2.5 s after, plus false alarms (bursts of
    0.1–1.5 s at random times, ``alarm_rate_per_s``)."""
    spans: list[tuple[float, float]] = []
    for e in events:
        if rng.random() < 0.7:
            f = float(e["fission_s"])
            spans.append((f - float(rng.uniform(0.2, 3.5)), f + float(rng.uniform(0.0, 2.5))))
    t = float(rng.exponential(1.0 / alarm_rate_per_s))
    while t < duration_s:
        spans.append((t, t + float(rng.uniform(0.1, 1.5))))
        t += float(rng.exponential(1.0 / alarm_rate_per_s))
    return lambda t_s: any(a <= t_s < b for a, b in spans)


def simulate_sequence(
    seed: int,
    duration_s: float = 60.0,
    sensor_px: int = 256,
    slow_interval_s: float = 1.0,
    fast_interval_s: float = 0.1,
    burst_rng: np.random.Generator | None = None,
) -> Iterator[EventFrame]:
    """Frames of the simulator's ``events`` scenario as the detector stage sees them.

    Without ``burst_rng`` every frame is ``slow_interval_s`` apart; with it, the
    :func:`burst_schedule` decides after each frame whether the next interval is fast (the
    references age on the frame clock, and bleaching follows dose)."""
    from smartscope.simulators.microscope import VirtualMicroscope

    vm = VirtualMicroscope("events", seed=seed, sensor_px=sensor_px, duration_s=duration_s)
    events = [dict(e) for e in vm.events_truth()]
    fast_at = burst_schedule(burst_rng, events, duration_s) if burst_rng is not None else None
    tracker = ReferenceTracker()
    classical: tuple[np.ndarray, float] | None = None
    b = BORDER_PX
    fast = False
    while vm.t_s < duration_s:
        img, truth = vm.render_frame()
        t = float(truth.t_s)
        this_fast = fast
        fast = fast_at is not None and fast_at(t)
        vm.interval_ms = (fast_interval_s if fast else slow_interval_s) * 1e3
        cur = smooth(img)
        x = tracker.step(cur, t)
        if classical is None:
            classical = (cur, t)
            continue
        ref, t_ref = classical
        z = loss_zmap(ref, cur)[b : cur.shape[0] - b, b : cur.shape[1] - b]
        classical = (ref + np.float32(1 - math.exp(-(t - t_ref) / CLASSICAL_TAU_S)) * (cur - ref), t)
        assert x is not None
        yield EventFrame(t, x, events, frame_label(events, t), float(z.max()), this_fast)


def crops_of_frame(
    f: EventFrame, rng: np.random.Generator, n_random: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """64² training crops of one frame: one per event site under way or parted less than
    ``AFTER_S`` ago, random ones, and a hard negative where the loss map peaks away from
    every event."""
    h, w = f.x.shape[1:]
    heat, keep = event_target(f.events, f.t_s, (h, w))
    c = CROP_PX

    def crop(cy: float, cx: float, jitter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y0 = int(np.clip(round(cy) - c // 2 + int(rng.integers(-jitter, jitter + 1)), 0, h - c))
        x0 = int(np.clip(round(cx) - c // 2 + int(rng.integers(-jitter, jitter + 1)), 0, w - c))
        sl = (slice(y0, y0 + c), slice(x0, x0 + c))
        return f.x[(slice(None), *sl)], heat[sl], keep[sl]

    for e in f.events:
        if float(e["onset_s"]) <= f.t_s < float(e["fission_s"]) + AFTER_S:
            yield crop(float(e["y_px"]), float(e["x_px"]), c // 2 - 8)
    for _ in range(n_random):
        yield crop(float(rng.uniform(0, h)), float(rng.uniform(0, w)), 0)
    z = f.x[3].copy()
    z[heat > 0.05] = -np.inf
    b = BORDER_PX
    inner = z[b : h - b, b : w - b]
    iy, ix = divmod(int(np.argmax(inner)), inner.shape[1])
    yield crop(iy + b, ix + b, 16)


def collect_crops(
    seeds: Sequence[int], rng: np.random.Generator, duration_s: float = 60.0, keep_fast: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training crops (inputs float16 (N, 8, 64, 64), targets, weights) from ``seeds``;
    three fields of view in four have trigger-like bursts (:func:`burst_schedule`), of whose
    fast frames ``keep_fast`` are used."""
    xs, ys, ws = [], [], []
    for k, seed in enumerate(seeds):
        bursts = np.random.default_rng(seed + 17) if k % 4 else None
        for f in simulate_sequence(seed, duration_s, burst_rng=bursts):
            if f.fast and rng.random() > keep_fast:
                continue
            for x, y, wgt in crops_of_frame(f, rng):
                xs.append(x.astype(np.float16))
                ys.append(y.astype(np.float16))
                ws.append(wgt.astype(np.float16))
    return np.stack(xs), np.stack(ys)[:, None], np.stack(ws)[:, None]
