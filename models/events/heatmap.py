"""Learned event detector: a small U-Net turns recent frames into an event heat map.

Input (5 channels, from frames offset-corrected and Gaussian-smoothed with σ =
``SIGMA_PX``, see :func:`make_input`): two references kept on the frame clock as
exponential moving averages — the slow one (``REFERENCE_TAU_S``, exactly as the classical
detector in :mod:`smartscope.controllers.events` keeps it) and a recent one
(``RECENT_TAU_S``) — and the current frame, all divided by the slow reference's 99th
percentile; plus the classical detector's shot-noise normalised loss map
``(ref − cur) / sqrt(ref + 4)`` as a robust z-score, against the slow and against the
recent reference. A fission in the simulator is a tube that thins over 2–5 s at one
site, then parts and its halves retract for ~7 s; the slow map shows the accumulated
loss, the recent one whether the tube is still changing.

Target: per event, a Gaussian of σ = ``HEAT_SIGMA_PX`` at its site from ``P_MIN`` of the
way through the constriction until ``POST_S`` after fission, 0 elsewhere; the first part
of a constriction (too faint to see) and the late retraction (``POST_S``…``NEAR_S``
after fission) are left out of the loss around the site. Weighted binary cross-entropy
on 64² crops — event sites (including events that ended up to ``AFTER_S`` ago, as
negatives), random crops, and hard negatives where the classical map peaks away from any
event — from the simulator's ``events`` scenario at 1 s intervals, half the fields with
100 ms bursts mixed in as the trigger makes them. Training (5000–5049), held-out
(9000–9009) and bench (1–5) seeds are disjoint.

:class:`LearnedEventDetector` (stage ``kind: event_unet``) runs the bundle on each frame
and reports the classical detector's values: ``event_score`` = the heat map's maximum
away from the border (0…1) and its position ``event_y_px``/``event_x_px``. The bundle's
``calibration`` holds the trigger thresholds: the ``ON_PERCENTILE`` / ``OFF_PERCENTILE``
percentiles of the held-out quiet frames' scores; :func:`trigger_thresholds` reads them
and the events scenario uses them.

Shipped bundle ``models/bundles/events-unet-small`` (about 8 min on one CPU thread)::

    smartscope train events --out models/bundles/events-unet-small
    python -m smartscope.models.events.heatmap --evaluate models/bundles/events-unet-small
    python -m smartscope.models.events.heatmap --sweep models/bundles/events-unet-small

``--evaluate``: held-out frames at 1 s (10 fields × 60 s; 275 with an event under way,
onset ≤ t < fission + 3 s; 192 quiet, no event within [onset, fission + 8 s)), network
through ONNX Runtime vs the classical score on the same frames: ROC AUC 0.80 vs 0.81;
second half of a constriction vs quiet 0.74 vs 0.72; event-frame median 0.77 vs quiet
95th percentile 0.69 (classical 7.7 vs 7.0). So the network separates event frames from
quiet ones about as well as the classical map, not better. Both are limited by the
physics: until it parts, a constricting tube loses only ~5–10 % of its smoothed signal,
and a finished event keeps scoring while the slow reference forgets it (most high-scoring
"quiet" frames lie 8–15 s after a fission, at its site).

``--sweep`` (the closed loop on held-out seeds 9000–9004) chose the shipped operating
point among quiet-score percentiles 95/85, 90/75 and 80/60; last run (fission imaged fast
/ caught / dose, 33 events) classical 33 % / 85 % / 124 mJ; U-Net 95/85 9 % / 70 % / 68
mJ, 90/75 18 % / 67 % / 75 mJ, 80/60 24 % / 82 % / 96 mJ. The run that picked 90/75 (same
network, same command logic) had given 95/85 15 % / 76 % / 68 mJ, 90/75 15 % / 91 % / 77
mJ, 80/60 21 % / 94 % / 99 mJ: the loop is not bit-reproducible and with 33 events the
caught fraction moves by up to 25 points, so the choice is not well determined. In the
bench (``python bench/smart.py``, seeds 1–5; bench/results/smart/smart.md, two runs
after the simulator's convolution-cache fix) the U-Net trigger imaged 95–98 % of the 44
events fast (25–45 % of fission moments; median delay 1.4–3.3 s after onset) for
0.32–0.36 of the fixed-fast dose, against the classical trigger's 98 % (55 %; 0.1 s) for
0.53–0.55, with fewer fast frames outside events (123–125 vs 261–290): a cheaper, later
trigger, not a better one. (Before the cache fix, a stale convolution could be served
after an OTF was evicted; the sweep figures above predate it.)

An earlier version (2 channels, reference and current only, MSE on heat maps, 12 fields)
did not separate (event median 0.66 vs quiet 95th percentile 0.61).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi
from scipy.stats import rankdata

from smartscope.frame import Frame
from smartscope.pipeline import StageOutput

__all__ = [
    "EventFrame",
    "LearnedEventDetector",
    "LearnedEventDetectorConfig",
    "ReferenceTracker",
    "evaluate_bundle",
    "event_target",
    "frame_label",
    "make_input",
    "roc_auc",
    "simulate_sequence",
    "sweep_trigger",
    "train_bundle",
    "train_events_cmd",
    "trigger_thresholds",
]

SIGMA_PX = 1.5
REFERENCE_TAU_S = 5.0
RECENT_TAU_S = 1.0
NOISE_FLOOR_ADU2 = 4.0
Z_SCALE = 1.0
OFFSET_ADU = 100.0
HEAT_SIGMA_PX = 3.0
P_MIN = 0.3  # fraction of the constriction after which the target is on
POST_S = 3.0  # target stays on this long after fission
NEAR_S = 8.0  # frames up to this long after fission are neither positive nor quiet
IGNORE_RADIUS_PX = 14.0
AFTER_S = 20.0  # sites of events this long after fission also get (negative) crops
BORDER_PX = 4
CROP_PX = 64
TRAIN_SEED_BASE = 5000
HELDOUT_SEED_BASE = 9000


def _smooth(img: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(img.astype(np.float32) - np.float32(OFFSET_ADU), SIGMA_PX, mode="nearest")


def loss_zmap(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Shot-noise normalised loss ``(ref − cur) / sqrt(ref + var0)`` as a robust z-score."""
    loss = (ref - cur) / np.sqrt(np.maximum(ref, 0.0) + np.float32(NOISE_FLOOR_ADU2))
    med = float(np.median(loss))
    mad = 1.4826 * float(np.median(np.abs(loss - med)))
    return ((loss - med) / max(mad, 1e-6)).astype(np.float32)


def make_input(ref: np.ndarray, cur: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """(5, H, W) network input from smoothed, offset-corrected frames: the slow reference,
    the recent reference and the current frame (all / the slow reference's 99th
    percentile), and the loss z-maps of the current frame against the slow and against the
    recent reference (/ ``Z_SCALE``)."""
    scale = np.float32(max(float(np.percentile(ref, 99)), 1.0))
    z_slow = loss_zmap(ref, cur) / np.float32(Z_SCALE)
    z_recent = loss_zmap(recent, cur) / np.float32(Z_SCALE)
    return np.stack([ref / scale, recent / scale, cur / scale, z_slow, z_recent]).astype(np.float32)


INPUT_CHANNELS = ["reference", "recent", "current", "loss_z", "recent_loss_z"]


class ReferenceTracker:
    """Exponential-moving-average references on the frame clock: the slow one
    (``REFERENCE_TAU_S``, as the classical detector keeps it) and a recent one
    (``RECENT_TAU_S``: what changed in the last second — motion still going on)."""

    def __init__(self) -> None:
        self.ref: np.ndarray | None = None
        self.recent: np.ndarray | None = None
        self.t_s = 0.0

    def reset(self) -> None:
        self.ref = self.recent = None

    def step(self, smoothed: np.ndarray, t_s: float) -> np.ndarray | None:
        """Network input for this frame (None on the first frame), then fold the frame in."""
        if self.ref is None or self.recent is None or self.ref.shape != smoothed.shape:
            self.ref, self.recent, self.t_s = smoothed, smoothed, t_s
            return None
        x = make_input(self.ref, smoothed, self.recent)
        dt = max(t_s - self.t_s, 0.0)
        a_slow = 1.0 - math.exp(-dt / REFERENCE_TAU_S)
        a_recent = 1.0 - math.exp(-dt / RECENT_TAU_S)
        self.ref = self.ref + np.float32(a_slow) * (smoothed - self.ref)
        self.recent = self.recent + np.float32(a_recent) * (smoothed - self.recent)
        self.t_s = t_s
        return x


# ============================================================================ ground truth


def _phase(e: Mapping[str, Any], t_s: float) -> Literal["before", "faint", "on", "late", "after"]:
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
    phases = [_phase(e, t_s) for e in events]
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
        ph = _phase(e, t_s)
        if ph in ("before", "after"):
            continue
        r2 = (yy - float(e["y_px"])) ** 2 + (xx - float(e["x_px"])) ** 2
        if ph == "on":
            heat = np.maximum(heat, np.exp(-r2 / (2 * HEAT_SIGMA_PX**2)))
        else:
            keep[r2 < IGNORE_RADIUS_PX**2] = 0.0
    keep[heat > 0.05] = 1.0
    return heat, keep


# ============================================================================ simulation


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
        x = tracker.step(_smooth(img), truth.t_s)
        if x is None:
            continue
        z = x[3, b : x.shape[1] - b, b : x.shape[2] - b] * Z_SCALE
        t = float(truth.t_s)
        yield EventFrame(t, x, events, frame_label(events, t), float(z.max()), fast)


def _crops_of_frame(
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
        ph = _phase(e, f.t_s)
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
            for x, y, wgt in _crops_of_frame(f, rng):
                xs.append(x.astype(np.float16))
                ys.append(y.astype(np.float16))
                ws.append(wgt.astype(np.float16))
    return np.stack(xs), np.stack(ys)[:, None], np.stack(ws)[:, None]


# ============================================================================ scores


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U; ties count half) for boolean ``labels``."""
    y = np.asarray(labels, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(np.asarray(scores, np.float64))
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def frame_score(heat: np.ndarray, border_px: int = BORDER_PX) -> tuple[float, int, int]:
    """(maximum, y, x) of a heat map away from a border band."""
    b = border_px
    inner = heat[b : heat.shape[0] - b, b : heat.shape[1] - b] if b else heat
    iy, ix = divmod(int(np.argmax(inner)), inner.shape[1])
    return float(inner[iy, ix]), iy + b, ix + b


def heldout_scores(
    predict: Callable[[np.ndarray], np.ndarray], seeds: Sequence[int], duration_s: float = 60.0
) -> dict[str, np.ndarray]:
    """Per-frame scores (network and classical) with labels and constriction progress on
    1 s-interval runs of ``seeds``; ``predict`` maps a (5, H, W) input to an (H, W) heat map."""
    net, cls, lab, prog = [], [], [], []
    for seed in seeds:
        for f in simulate_sequence(seed, duration_s):
            net.append(frame_score(predict(f.x))[0])
            cls.append(f.classical_score)
            lab.append(f.label)
            ps = [
                (f.t_s - float(e["onset_s"])) / (float(e["fission_s"]) - float(e["onset_s"]))
                for e in f.events
                if _phase(e, f.t_s) in ("faint", "on")
            ]
            prog.append(max(ps) if ps else math.nan)
    return {
        "net": np.asarray(net),
        "classical": np.asarray(cls),
        "label": np.asarray(lab),
        "progress": np.asarray(prog),
    }


def separation_metrics(s: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Event-vs-quiet separation of held-out frame scores, network and classical."""
    lab = s["label"]
    use = lab >= 0
    pos, quiet = lab == 1, lab == 0
    prog = s["progress"]
    out: dict[str, float] = {
        "heldout_frames_event": float(pos.sum()),
        "heldout_frames_quiet": float(quiet.sum()),
    }
    for name in ("net", "classical"):
        v = s[name]
        out[f"heldout_auc_{name}"] = roc_auc(lab[use] == 1, v[use])
        out[f"heldout_{name}_event_median"] = float(np.median(v[pos]))
        out[f"heldout_{name}_quiet_p95"] = float(np.percentile(v[quiet], 95))
        late = pos & (prog >= 0.5) & (prog < 1.0)  # second half of a constriction
        out[f"heldout_auc_{name}_constricting"] = roc_auc(
            np.r_[np.ones(late.sum()), np.zeros(quiet.sum())] > 0, np.r_[v[late], v[quiet]]
        )
    return out


ON_PERCENTILE = 90.0
OFF_PERCENTILE = 75.0


def choose_thresholds(
    quiet_scores: np.ndarray, on_percentile: float = ON_PERCENTILE, off_percentile: float = OFF_PERCENTILE
) -> dict[str, float]:
    """Trigger thresholds: these percentiles of held-out quiet-frame scores."""
    if not 0.0 <= off_percentile <= on_percentile <= 100.0:
        raise ValueError(
            f"need 0 <= off_percentile ({off_percentile}) <= on_percentile ({on_percentile}) <= 100"
        )
    on = float(np.percentile(quiet_scores, on_percentile))
    off = min(float(np.percentile(quiet_scores, off_percentile)), on)
    return {"trigger_on_threshold": on, "trigger_off_threshold": off}


# ============================================================================ training


def train_bundle(
    out: Path,
    n_train_seeds: int = 50,
    steps: int = 4000,
    seed: int = 0,
    command: str = "",
    n_heldout_seeds: int = 10,
    base_width: int = 8,
    depth: int = 3,
    batch: int = 24,
    duration_s: float = 60.0,
    threads: int = 1,
    pos_weight: float = 4.0,
    on_percentile: float = ON_PERCENTILE,
    off_percentile: float = OFF_PERCENTILE,
) -> dict[str, float]:
    """Simulate, train the U-Net, pick thresholds on held-out seeds, export the bundle;
    returns the held-out metrics (also stored in the bundle)."""
    import torch

    from smartscope.engines.export import export_bundle
    from smartscope.models.train_common import seed_everything, software_versions
    from smartscope.models.unet import UNet2D, UNetConfig

    if threads > 0:
        torch.set_num_threads(threads)
    rng = seed_everything(seed)
    t0 = time.perf_counter()
    train_seeds = [TRAIN_SEED_BASE + seed * 1000 + k for k in range(n_train_seeds)]
    val_seeds = [HELDOUT_SEED_BASE + seed * 1000 + k for k in range(n_heldout_seeds)]
    x_tr, y_tr, w_tr = collect_crops(train_seeds, rng, duration_s)
    print(
        f"{len(x_tr)} training crops from {n_train_seeds} fields of view in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    ucfg = UNetConfig(in_channels=len(INPUT_CHANNELS), out_channels=1, depth=depth, base_width=base_width)
    net = UNet2D(ucfg)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(steps, 1), pct_start=0.1)
    t1 = time.perf_counter()
    for step in range(steps):
        net.train()
        idx = rng.integers(0, len(x_tr), size=batch)
        xb = torch.from_numpy(x_tr[idx].astype(np.float32))
        yb = torch.from_numpy(y_tr[idx].astype(np.float32))
        wb = torch.from_numpy(w_tr[idx].astype(np.float32)) * (1 + pos_weight * yb)
        k = int(rng.integers(4))  # rotations and a flip: the sample has no preferred direction
        xb, yb, wb = (torch.rot90(a, k, (2, 3)) for a in (xb, yb, wb))
        if rng.random() < 0.5:
            xb, yb, wb = (torch.flip(a, (3,)) for a in (xb, yb, wb))
        logits = net(xb)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yb, weight=wb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            print(
                f"step {step + 1}/{steps}: loss {float(loss.detach()):.4f} "
                f"({time.perf_counter() - t1:.0f} s)",
                flush=True,
            )
    # the exported network ends in a sigmoid (heat map 0…1); same weights
    final = UNet2D(ucfg.model_copy(update={"final_activation": "sigmoid"}))
    final.load_state_dict(net.state_dict())
    final.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return final(torch.from_numpy(x[None]))[0, 0].numpy()

    scores = heldout_scores(predict, val_seeds, duration_s)
    metrics = separation_metrics(scores)
    thresholds = choose_thresholds(scores["net"][scores["label"] == 0], on_percentile, off_percentile)
    metrics["heldout_quiet_above_on"] = float(
        np.mean(scores["net"][scores["label"] == 0] >= thresholds["trigger_on_threshold"])
    )
    metrics["heldout_event_above_on"] = float(
        np.mean(scores["net"][scores["label"] == 1] >= thresholds["trigger_on_threshold"])
    )
    print("held-out: " + json.dumps({**metrics, **thresholds}, indent=1), flush=True)
    fields = {
        "name": out.name,
        "task": "events",
        "inputs": [{"name": "frames_and_loss", "channels": INPUT_CHANNELS}],
        "outputs": [{"name": "heat", "channels": ["event"]}],
        "normalization": {"kind": "affine", "offset_adu": 0.0, "scale_adu": 1.0},
        "pixel_size_um": 0.1,
        "tile": {"size_px": 256, "overlap_px": 16, "multiple_px": int(2**depth)},
        "architecture": {"name": "unet2d", "params": final.config.model_dump(), "weights_sha256": "0" * 64},
        "provenance": {
            "command": command or f"python -m smartscope.models.events.heatmap --out {out}",
            "data": f"simulator events scenario, 256² px, {duration_s:g} s, 1 s interval with 100 ms "
            f"bursts in half the fields; training seeds {train_seeds[0]}–{train_seeds[-1]}, "
            f"held-out seeds {val_seeds[0]}–{val_seeds[-1]}",
            "seed": seed,
            "method": f"U-Net depth {depth} width {base_width}, sigmoid heat map, BCE weighted "
            f"1+{pos_weight:g}·target, Gaussian σ {HEAT_SIGMA_PX:g} px targets from {P_MIN:g} of the "
            f"constriction to fission + {POST_S:g} s, 64² crops (event sites, random, hard negatives), "
            f"rot/flip, {steps} steps of {batch}",
            "software": software_versions(),
            "notes": f"input: smoothed (σ {SIGMA_PX:g} px) reference (EMA {REFERENCE_TAU_S:g} s) and current "
            f"/ reference p99, loss z-maps against it and against a recent EMA ({RECENT_TAU_S:g} s) "
            f"(both / {Z_SCALE:g}; models/events/heatmap.py); thresholds: held-out quiet "
            f"frames p{on_percentile:g} (on) / p{off_percentile:g} (off); training "
            f"{time.perf_counter() - t0:.0f} s with {threads} thread(s)",
        },
        "metrics": metrics,
        "calibration": thresholds,
    }
    export_bundle(final, out, manifest_fields=fields)
    return {**metrics, **thresholds}


def trigger_thresholds(bundle: Path) -> dict[str, float]:
    """``{"on_threshold", "off_threshold"}`` for :class:`EventTriggerConfig` from a bundle's
    calibration (chosen on held-out frames at training time)."""
    from smartscope.engines.bundle import load_bundle

    cal = load_bundle(bundle).manifest.calibration
    missing = [k for k in ("trigger_on_threshold", "trigger_off_threshold") if k not in cal]
    if missing:
        raise ValueError(f"{bundle}: engine.json calibration lacks {missing} (not an events bundle?)")
    return {"on_threshold": cal["trigger_on_threshold"], "off_threshold": cal["trigger_off_threshold"]}


def evaluate_bundle(
    bundle: Path, seeds: Sequence[int], duration_s: float = 60.0, backend: str = "onnxruntime"
) -> dict[str, float]:
    """Held-out separation of a bundle run through the engine runtime (ONNX Runtime)."""
    from smartscope.engines.runtime import Engine

    eng = Engine.open(bundle, backend)  # type: ignore[arg-type]
    try:
        scores = heldout_scores(lambda x: eng.infer(x)["heat"][0], seeds, duration_s)
    finally:
        eng.close()
    metrics = separation_metrics(scores)
    th = trigger_thresholds(bundle)
    quiet, pos = scores["label"] == 0, scores["label"] == 1
    metrics["quiet_above_on"] = float(np.mean(scores["net"][quiet] >= th["on_threshold"]))
    metrics["event_above_on"] = float(np.mean(scores["net"][pos] >= th["on_threshold"]))
    return metrics


def sweep_trigger(
    bundle: Path,
    score_seeds: Sequence[int],
    seeds: Sequence[int],
    percentiles: Sequence[tuple[float, float]],
    duration_s: float = 60.0,
) -> list[dict[str, Any]]:
    """The closed loop (events scenario, real runner) on ``seeds`` triggered by the bundle at
    (on, off) thresholds = these percentiles of the quiet-frame scores of ``score_seeds``,
    and by the classical detector: how the operating point was chosen (held-out seeds only)."""
    import tempfile

    from smartscope.controllers.scenarios import run_events
    from smartscope.engines.runtime import Engine

    eng = Engine.open(bundle, "onnxruntime")
    try:
        held = heldout_scores(lambda x: eng.infer(x)["heat"][0], score_seeds, duration_s)
    finally:
        eng.close()
    quiet = held["net"][held["label"] == 0]

    def summary(label: str, runs: list[Any], **extra: float) -> dict[str, Any]:
        n = sum(r.scores["n_events"] for r in runs)
        row = {
            "trigger": label,
            **extra,
            "events": n,
            "fission_fast": sum(r.scores["fission_fast_fraction"] * r.scores["n_events"] for r in runs) / n,
            "caught": sum(r.scores["caught_fraction"] * r.scores["n_events"] for r in runs) / n,
            "fast_frames": sum(r.scores["n_burst_frames"] for r in runs),
            "spurious_fast_frames": sum(r.scores["spurious_burst_frames"] for r in runs),
            "dose_mj": sum(r.dose_mj for r in runs),
        }
        print(json.dumps(row), flush=True)
        return row

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows.append(
            summary(
                "classical", [run_events(work, "triggered", seed=s, duration_s=duration_s) for s in seeds]
            )
        )
        for on_p, off_p in percentiles:
            th = choose_thresholds(quiet, on_p, off_p)
            trig = {"on_threshold": th["trigger_on_threshold"], "off_threshold": th["trigger_off_threshold"]}
            runs = [
                run_events(
                    work, "triggered", seed=s, duration_s=duration_s, learned_bundle=bundle, trigger=trig
                )
                for s in seeds
            ]
            rows.append(summary(f"U-Net p{on_p:g}/p{off_p:g}", runs, **trig))
    return rows


# ============================================================================ stage


class LearnedEventDetectorConfig(BaseModel):
    """U-Net event detector stage (``kind: event_unet``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["event_unet"] = "event_unet"
    name: str = "events"
    bundle: Path = Field(description="events heat-map engine bundle")
    backend: Literal["auto", "onnxruntime", "torch"] = "auto"
    border_px: int = Field(default=BORDER_PX, ge=0)

    def build(self) -> LearnedEventDetector:
        return LearnedEventDetector(self)


class LearnedEventDetector:
    """Implements :class:`smartscope.pipeline.Stage` (see the module doc)."""

    def __init__(self, cfg: LearnedEventDetectorConfig) -> None:
        from smartscope.engines.runtime import Engine

        self.cfg = cfg
        self.name = cfg.name
        self.engine = Engine.open(cfg.bundle, cfg.backend)
        have = self.engine.manifest.inputs[0].channels
        if list(have) != INPUT_CHANNELS:
            raise ValueError(
                f"{cfg.bundle}: events bundle input channels are {have}, this stage feeds "
                f"{INPUT_CHANNELS}; retrain it with this version"
            )
        self._tracker = ReferenceTracker()
        self._roi: tuple[int, ...] = ()

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        from smartscope.controllers.events import frame_time_s

        cur = _smooth(frame.image)
        state = frame.metadata.get("state", {})
        roi = tuple(int(v) for v in state.get("roi", (0, 0, cur.shape[1], cur.shape[0])))
        if roi != self._roi:  # the field changed: start a new reference
            self._tracker.reset()
            self._roi = roi
        x = self._tracker.step(cur, frame_time_s(frame))
        if x is None:
            return StageOutput(values={"event_score": 0.0, "event_y_px": -1.0, "event_x_px": -1.0})
        heat = self.engine.infer(x)["heat"][0]
        score, iy, ix = frame_score(heat, self.cfg.border_px)
        return StageOutput(
            values={
                "event_score": score,
                "event_y_px": float(iy + (roi[1] if len(roi) == 4 else 0)),
                "event_x_px": float(ix + (roi[0] if len(roi) == 4 else 0)),
            }
        )

    def close(self) -> None:
        self.engine.close()


# ============================================================================ commands


def train_events_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")],
    seeds: Annotated[
        int, typer.Option(help="training fields of view (--duration s of the events scenario each)")
    ] = 50,
    steps: Annotated[int, typer.Option(help="optimiser steps (--batch crops of 64² each)")] = 4000,
    seed: Annotated[int, typer.Option(help="seed of data, initialisation and batching")] = 0,
    heldout: Annotated[int, typer.Option(help="held-out fields of view (thresholds, metrics)")] = 10,
    width: Annotated[int, typer.Option(help="U-Net base width")] = 8,
    depth: Annotated[int, typer.Option(help="U-Net depth (2× down-samplings)")] = 3,
    batch: Annotated[int, typer.Option(help="crops per step")] = 24,
    duration: Annotated[float, typer.Option(help="simulated seconds per field of view")] = 60.0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch default)")] = 1,
    on_percentile: Annotated[
        float, typer.Option(help="trigger on-threshold: this percentile of held-out quiet-frame scores")
    ] = ON_PERCENTILE,
    off_percentile: Annotated[
        float, typer.Option(help="trigger off-threshold: this percentile of held-out quiet-frame scores")
    ] = OFF_PERCENTILE,
) -> None:
    """Train the event heat-map U-Net on the simulator's events scenario into a bundle."""
    from smartscope.models.provenance import command_line

    train_bundle(
        out,
        seeds,
        steps,
        seed,
        command=command_line(ctx=ctx),
        n_heldout_seeds=heldout,
        base_width=width,
        depth=depth,
        batch=batch,
        duration_s=duration,
        threads=threads,
        on_percentile=on_percentile,
        off_percentile=off_percentile,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description="events heat-map U-Net: train a bundle on the simulator, or --evaluate one"
    )
    ap.add_argument("--out", type=Path, help="bundle folder to write (training)")
    ap.add_argument("--evaluate", type=Path, help="bundle to measure on held-out seeds instead")
    ap.add_argument(
        "--sweep",
        type=Path,
        help="bundle to run in the trigger loop on the first 5 held-out seeds at several thresholds",
    )
    ap.add_argument("--seeds", type=int, default=50, help="training fields of view (60 s each)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=int, default=10, help="held-out fields of view")
    args = ap.parse_args()
    if args.evaluate is not None:
        seeds = [HELDOUT_SEED_BASE + args.seed * 1000 + k for k in range(args.heldout)]
        print(json.dumps(evaluate_bundle(args.evaluate, seeds), indent=1))
        return
    if args.sweep is not None:
        seeds = [HELDOUT_SEED_BASE + args.seed * 1000 + k for k in range(args.heldout)]
        sweep_trigger(args.sweep, seeds, seeds[:5], [(95.0, 85.0), (90.0, 75.0), (80.0, 60.0)])
        return
    if args.out is None:
        ap.error("--out is required for training")
    cmd = " ".join(["python", "-m", "smartscope.models.events.heatmap", *sys.argv[1:]])
    train_bundle(args.out, args.seeds, args.steps, args.seed, command=cmd, n_heldout_seeds=args.heldout)


if __name__ == "__main__":
    main()
