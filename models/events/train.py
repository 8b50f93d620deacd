"""Training and held-out evaluation of the events heat-map U-Net.

Weighted binary cross-entropy on the crops of :mod:`.data`. The trigger setting stored in
the bundle's ``calibration`` is chosen by replaying the trigger on held-out fields
(:func:`smartscope.models.events.policy.choose_setting`): among on-thresholds at
percentiles ``ON_PERCENTILES`` of the held-out quiet frames' scores and off-thresholds at
``OFF_FRACTIONS`` of them (no shortest burst, no cool-down), the one that images the most
fission moments fast within ``dose_budget`` of the dose of imaging fast throughout.
:func:`evaluate_bundle` measures imminent-vs-quiet separation (ROC AUC) of a bundle
against the classical score on the same frames.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from smartscope.models.events.data import (
    HEAT_SIGMA_PX,
    HELDOUT_SEED_BASE,
    HORIZON_S,
    RAMP_S,
    TRAIN_SEED_BASE,
    collect_crops,
    simulate_sequence,
    time_to_fission,
)
from smartscope.models.events.network import (
    INPUT_CHANNELS,
    RECENT_TAU_S,
    REFERENCE_TAU_S,
    SHORT_TAU_S,
    SIGMA_PX,
    frame_score,
)
from smartscope.models.events.policy import TriggerSetting, choose_setting
from smartscope.models.events.stage import TRIGGER_FIELDS, trigger_thresholds

__all__ = [
    "DOSE_BUDGET",
    "ON_PERCENTILES",
    "candidate_settings",
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
    """Per-frame scores (network and classical) with labels and the time to the nearest
    coming fission on 1 s-interval runs of ``seeds``; ``predict`` maps an (8, H, W) input
    to an (H, W) heat map."""
    net, cls, lab, ttf = [], [], [], []
    for seed in seeds:
        for f in simulate_sequence(seed, duration_s):
            net.append(frame_score(predict(f.x))[0])
            cls.append(f.classical_score)
            lab.append(f.label)
            ahead = [time_to_fission(e, f.t_s) for e in f.events if time_to_fission(e, f.t_s) > 0]
            ttf.append(min(ahead) if ahead else math.inf)
    return {
        "net": np.asarray(net),
        "classical": np.asarray(cls),
        "label": np.asarray(lab),
        "time_to_fission": np.asarray(ttf),
    }


def separation_metrics(s: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Imminent-vs-quiet separation of held-out frame scores, network and classical; and
    imminent frames against every other frame (early constrictions and retractions too)."""
    lab = s["label"]
    pos, quiet = lab == 1, lab == 0
    out: dict[str, float] = {
        "heldout_frames_imminent": float(pos.sum()),
        "heldout_frames_quiet": float(quiet.sum()),
    }
    for name in ("net", "classical"):
        v = s[name]
        use = lab >= 0
        out[f"heldout_auc_{name}"] = roc_auc(lab[use] == 1, v[use])
        out[f"heldout_auc_{name}_vs_all"] = roc_auc(pos, v)
        out[f"heldout_{name}_imminent_median"] = float(np.median(v[pos])) if pos.any() else math.nan
        out[f"heldout_{name}_quiet_p95"] = float(np.percentile(v[quiet], 95)) if quiet.any() else math.nan
    return out


ON_PERCENTILES = (60.0, 75.0, 85.0, 92.0, 97.0)
OFF_FRACTIONS = (0.5, 0.8)
DOSE_BUDGET = 0.30


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
    n_replay_seeds: int = 6,
    dose_budget: float = DOSE_BUDGET,
    on_percentiles: Sequence[float] = ON_PERCENTILES,
) -> dict[str, float]:
    """Simulate, train the U-Net, measure it and choose the trigger setting on held-out
    seeds, export the bundle; returns the held-out metrics (also stored in the bundle)."""
    import torch

    from smartscope.config.stages import LearnedEventDetectorConfig
    from smartscope.engines.export import export_bundle
    from smartscope.models.events.stage import LearnedEventDetector
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
    print("held-out separation: " + json.dumps(metrics), flush=True)
    fields: dict[str, Any] = {
        "name": out.name,
        "task": "events",
        "inputs": [{"name": "frames_and_loss", "channels": INPUT_CHANNELS}],
        "outputs": [{"name": "heat", "channels": ["event"]}],
        "normalization": {"kind": "affine", "offset_adu": 0.0, "scale_adu": 1.0},
        "pixel_size_um": 0.1,
        "tile": {"size_px": 256, "overlap_px": 16, "multiple_px": int(2**depth)},
        "architecture": {"name": "unet2d", "params": final.config.model_dump(), "weights_sha256": "0" * 64},
        "metrics": metrics,
    }
    # the trigger setting: replay the trigger on held-out fields with the exported network
    quiet = scores["net"][scores["label"] == 0]
    settings = candidate_settings(quiet if quiet.size else scores["net"], on_percentiles)
    replay_seeds = val_seeds[:n_replay_seeds]
    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / out.name
        export_bundle(
            final, draft, manifest_fields={**fields, "provenance": {"command": "draft", "data": ""}}
        )

        def detector() -> LearnedEventDetector:
            return LearnedEventDetector(LearnedEventDetectorConfig(bundle=draft, backend="onnxruntime"))

        chosen, summary, _ = choose_setting(detector, settings, replay_seeds, dose_budget, duration_s)
    calibration = {
        f"trigger_{k}": float(v) for k, v in chosen.trigger_fields().items() if k in TRIGGER_FIELDS
    }
    metrics.update({f"heldout_replay_{k}": v for k, v in summary.items()})
    print("held-out replay: " + json.dumps({**summary, **calibration}), flush=True)
    fields["provenance"] = {
        "command": command or f"smartscope train events --out {out}",
        "data": f"simulator events scenario, 256² px, {duration_s:g} s, 1 s interval with trigger-like "
        f"100 ms bursts in 3 fields of 4; training seeds {train_seeds[0]}–{train_seeds[-1]}, "
        f"held-out seeds {val_seeds[0]}–{val_seeds[-1]} (trigger replay on the first {len(replay_seeds)})",
        "seed": seed,
        "method": f"U-Net depth {depth} width {base_width}, sigmoid heat map, BCE weighted "
        f"1+{pos_weight:g}·target, Gaussian σ {HEAT_SIGMA_PX:g} px targets while a fission is "
        f"≤ {HORIZON_S:g} s ahead (ramp over {RAMP_S:g} s before), 64² crops (event sites, random, "
        f"hard negatives), rot/flip, {steps} steps of {batch}",
        "software": software_versions(),
        "notes": f"input: smoothed (σ {SIGMA_PX:g} px) frames, EMAs on the frame clock (reference "
        f"{REFERENCE_TAU_S:g} s, recent {RECENT_TAU_S:g} s, short {SHORT_TAU_S:g} s), loss z-maps, frame "
        f"interval (models/events/network.py); trigger: the setting of {len(settings)} replayed on "
        f"held-out fields that images the most fission moments fast within {dose_budget:g} of the "
        f"fixed-fast dose (models/events/policy.py); {time.perf_counter() - t0:.0f} s with "
        f"{threads} thread(s)",
    }
    fields["metrics"] = metrics
    fields["calibration"] = calibration
    export_bundle(final, out, manifest_fields=fields)
    return {**metrics, **calibration}


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
    metrics["imminent_above_on"] = float(np.mean(scores["net"][pos] >= th["on_threshold"]))
    return metrics
