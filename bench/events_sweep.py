"""How the events U-Net's trigger operating point was chosen: the closed loop on held-out seeds.

The bundle's held-out quiet-frame scores give (on, off) thresholds at several percentile
pairs; for each pair the events scenario (real runner, MMCore, virtual microscope) runs on
held-out seeds triggered by the U-Net, and once triggered by the classical detector. One
JSON row per trigger: events, fission moments imaged fast, events caught, fast frames,
fast frames outside events, 561 nm dose.

    python bench/events_sweep.py models/bundles/events-unet-small
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smartscope.config import EventsScenario
from smartscope.engines.runtime import Engine
from smartscope.models.events.data import HELDOUT_SEED_BASE
from smartscope.models.events.train import choose_thresholds, heldout_scores
from smartscope.scenarios import events


def _summary(label: str, runs: list[events.EventRun], **extra: float) -> dict[str, Any]:
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


def sweep_trigger(
    bundle: Path,
    score_seeds: Sequence[int],
    seeds: Sequence[int],
    percentiles: Sequence[tuple[float, float]],
    duration_s: float = 60.0,
) -> list[dict[str, Any]]:
    eng = Engine.open(bundle, "onnxruntime")
    try:
        held = heldout_scores(lambda x: eng.infer(x)["heat"][0], score_seeds, duration_s)
    finally:
        eng.close()
    quiet = held["net"][held["label"] == 0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        classical = [events.run(EventsScenario(seed=s, duration_s=duration_s), work) for s in seeds]
        rows.append(_summary("classical", classical))
        for on_p, off_p in percentiles:
            th = choose_thresholds(quiet, on_p, off_p)
            trig = {"on_threshold": th["trigger_on_threshold"], "off_threshold": th["trigger_off_threshold"]}
            runs = [
                events.run(
                    EventsScenario(seed=s, duration_s=duration_s, learned_bundle=bundle, trigger=trig), work
                )
                for s in seeds
            ]
            rows.append(_summary(f"U-Net p{on_p:g}/p{off_p:g}", runs, **trig))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="events heat-map bundle")
    ap.add_argument("--seed", type=int, default=0, help="the training seed (held-out seeds follow it)")
    ap.add_argument("--heldout", type=int, default=10, help="held-out fields of view for the thresholds")
    args = ap.parse_args()
    seeds = [HELDOUT_SEED_BASE + args.seed * 1000 + k for k in range(args.heldout)]
    sweep_trigger(args.bundle, seeds, seeds[:5], [(95.0, 85.0), (90.0, 75.0), (80.0, 60.0)])


if __name__ == "__main__":
    main()
