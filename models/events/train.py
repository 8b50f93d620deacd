"""Training and held-out evaluation of the events heat-map U-Net.

Weighted binary cross-entropy on the crops of :mod:`.data`; the trigger thresholds stored
in the bundle's ``calibration`` are the ``ON_PERCENTILE`` / ``OFF_PERCENTILE`` percentiles
of the held-out quiet frames' scores. :func:`evaluate_bundle` measures event-vs-quiet
separation (ROC AUC) of a bundle against the classical score on the same frames.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from smartscope.exceptions import InvalidValue
from smartscope.models.events.data import (
    HEAT_SIGMA_PX,
    HELDOUT_SEED_BASE,
    P_MIN,
    POST_S,
    TRAIN_SEED_BASE,
    collect_crops,
    phase,
    simulate_sequence,
)
from smartscope.models.events.network import (
    INPUT_CHANNELS,
    RECENT_TAU_S,
    REFERENCE_TAU_S,
    SIGMA_PX,
    Z_SCALE,
    frame_score,
)
from smartscope.models.events.stage import trigger_thresholds

__all__ = [
    "OFF_PERCENTILE",
    "ON_PERCENTILE",
    "choose_thresholds",
    "evaluate_bundle",
    "heldout_scores",
    "roc_auc",
    "separation_metrics",
    "train_bundle",
]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U; ties count half) for boolean ``labels``."""
    y = np.asarray(labels, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(np.asarray(scores, np.float64))
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


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
                if phase(e, f.t_s) in ("faint", "on")
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
        raise InvalidValue(
            f"need 0 <= off_percentile ({off_percentile}) <= on_percentile ({on_percentile}) <= 100"
        )
    on = float(np.percentile(quiet_scores, on_percentile))
    off = min(float(np.percentile(quiet_scores, off_percentile)), on)
    return {"trigger_on_threshold": on, "trigger_off_threshold": off}


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
    from smartscope.engines.networks.unet import UNet2D, UNetConfig
    from smartscope.models.train_common import seed_everything, software_versions

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
            "command": command or f"smartscope train events --out {out}",
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
            f"(both / {Z_SCALE:g}; models/events/network.py); thresholds: held-out quiet "
            f"frames p{on_percentile:g} (on) / p{off_percentile:g} (off); training "
            f"{time.perf_counter() - t0:.0f} s with {threads} thread(s)",
        },
        "metrics": metrics,
        "calibration": thresholds,
    }
    export_bundle(final, out, manifest_fields=fields)
    return {**metrics, **thresholds}


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
