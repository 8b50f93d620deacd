"""How the event triggers' operating points are chosen: the trigger replayed on held-out fields.

Each candidate setting of the hysteresis trigger (on/off threshold, shortest burst) runs
on held-out seeds of the ``events`` scenario through
:func:`smartscope.models.events.policy.replay` — the virtual microscope frame by frame, the
detector stage the live pipeline runs, the switch applied from the next frame on as the
camera's frame timer does — and is scored against the ground truth: fission moments
imaged fast, events caught, dose relative to imaging fast throughout. The classical
detector's best setting within the dose budget is what ``bench/smart.py`` runs as the
tuned classical trigger; for a learned bundle (``--bundle``) the candidates sit at
percentiles of its held-out quiet-frame scores.

    nice python bench/events_sweep.py --out bench/results/smart/events_sweep.md
    nice python bench/events_sweep.py --bundle models/bundles/events-unet-small

Prints a markdown table per detector (and writes it to ``--out``), after the dose that
oracle triggers knowing the ground truth would need on the same fields (``--bounds-seeds``
adds fields, e.g. the bench's seeds 1–5): fast over every event's whole constriction
[onset, fission], or only over its last 2, 1 or 0.5 s before fission, slow elsewhere.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config import EventDetectorConfig, LearnedEventDetectorConfig
from smartscope.models.events.data import HELDOUT_SEED_BASE
from smartscope.models.events.policy import DOSE_BUDGET, TriggerSetting, candidate_settings, choose_setting
from smartscope.models.events.stage import ClassicalEventDetector, LearnedEventDetector
from smartscope.models.events.train import heldout_scores
from smartscope.simulators.microscope import VirtualMicroscope

CLASSICAL_ON = (6.0, 7.0, 8.0, 9.0, 10.0)
CLASSICAL_OFF_FRACTION = (0.8, 0.95)
CLASSICAL_MIN_BURST_S = (0.0,)


def classical_settings() -> list[TriggerSetting]:
    return [
        TriggerSetting(on_threshold=on, off_threshold=f * on, min_burst_s=mb)
        for on, f, mb in itertools.product(CLASSICAL_ON, CLASSICAL_OFF_FRACTION, CLASSICAL_MIN_BURST_S)
    ]


ORACLE_LAST_S = (None, 2.0, 1.0, 0.5)  # None: from onset


def oracle_bounds(groups: Sequence[Sequence[int]], duration_s: float, slow_dose: float = 0.1) -> str:
    """Dose / fixed fast of triggers that know each event's onset and fission (see the
    module doc), one row per group of fields: the least a causal trigger that images every
    fission fast can spend if it detects an event at onset (or that many seconds before
    fission) and stops at fission."""
    heads = " | ".join("[onset, fission]" if x is None else f"last {x:g} s" for x in ORACLE_LAST_S)
    lines = [
        f"| seeds | events | constriction p10 / p50 / p90 (s) | {heads} |",
        "|---|---|---|" + "---|" * len(ORACLE_LAST_S),
    ]
    t = np.arange(0.0, duration_s, 0.01)
    for seeds in groups:
        evs = [
            VirtualMicroscope("events", seed=s, sensor_px=256, duration_s=duration_s).events_truth()
            for s in seeds
        ]
        cons = [float(e["fission_s"]) - float(e["onset_s"]) for v in evs for e in v]
        cells = []
        for last in ORACLE_LAST_S:
            doses = []
            for v in evs:
                fast = np.zeros(t.shape, bool)
                for e in v:
                    a = float(e["onset_s"]) if last is None else float(e["fission_s"]) - last
                    fast |= (t >= a) & (t <= float(e["fission_s"]))
                doses.append(fast.mean() + (1.0 - fast.mean()) * slow_dose)
            cells.append(f"{np.mean(doses):.2f}")
        p10, p50, p90 = np.percentile(cons, [10, 50, 90])
        lines.append(
            f"| {seeds[0]}–{seeds[-1]} | {len(cons)} | {p10:.1f} / {p50:.1f} / {p90:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def table(title: str, rows: Sequence[dict[str, Any]], chosen: TriggerSetting) -> str:
    lines = [
        f"### {title}\n",
        "| on | off | shortest burst (s) | events | fission imaged fast | caught | dose / fixed fast |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = (
            " **(chosen)**" if TriggerSetting(**{k: r[k] for k in chosen.trigger_fields()}) == chosen else ""
        )
        lines.append(
            f"| {r['on_threshold']:.3g} | {r['off_threshold']:.3g} | {r['min_burst_s']:g} | "
            f"{r['events']:.0f} | {r['fission_fast']:.0%}{mark} | {r['caught']:.0%} | "
            f"{r['dose_rel_fast']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None, help="also sweep this events heat-map bundle")
    ap.add_argument("--seed", type=int, default=0, help="the training seed (held-out seeds follow it)")
    ap.add_argument("--heldout", type=int, default=6, help="held-out fields replayed per setting")
    ap.add_argument("--dose-budget", type=float, default=DOSE_BUDGET)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--no-classical", action="store_true", help="sweep only the --bundle")
    ap.add_argument(
        "--bounds-seeds", type=int, nargs="*", default=[], help="more fields for the oracle doses"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    seeds = [HELDOUT_SEED_BASE + args.seed * 1000 + k for k in range(args.heldout)]
    out = [
        f"<!-- python bench/events_sweep.py --heldout {args.heldout} --dose-budget {args.dose_budget:g}"
        f"{' --bundle ' + str(args.bundle) if args.bundle else ''}"
        f"{' --no-classical' if args.no_classical else ''}"
        f"{' --bounds-seeds ' + ' '.join(map(str, args.bounds_seeds)) if args.bounds_seeds else ''}"
        f"; held-out seeds {seeds[0]}–{seeds[-1]}, "
        f"{args.duration:g} s each -->\n"
    ]
    text = (
        "### oracle triggers (they know each event's onset and fission): dose / fixed fast when fast over\n\n"
    )
    text += oracle_bounds([g for g in (seeds, args.bounds_seeds) if g], args.duration)
    print(text, flush=True)
    out.append(text)
    runs: list[tuple[str, Callable[[], Any], list[TriggerSetting]]] = []
    if not args.no_classical:
        runs.append(
            (
                "classical detector",
                lambda: ClassicalEventDetector(EventDetectorConfig()),
                classical_settings(),
            )
        )
    if args.bundle is not None:
        bundle = args.bundle

        def learned() -> LearnedEventDetector:
            return LearnedEventDetector(LearnedEventDetectorConfig(bundle=bundle, backend="onnxruntime"))

        det = learned()
        held = heldout_scores(
            lambda x: det.engine.infer(x)["heat"][0],
            [HELDOUT_SEED_BASE + args.seed * 1000 + k for k in range(10)],
            args.duration,
        )
        det.close()
        quiet = held["net"][held["label"] == 0]
        runs.append((f"U-Net `{bundle.name}`", learned, candidate_settings(quiet)))
    for name, make, settings in runs:
        chosen, summary, rows = choose_setting(make, settings, seeds, args.dose_budget, args.duration)
        text = table(
            f"{name}: trigger replayed on held-out fields (budget {args.dose_budget:g})", rows, chosen
        )
        text += f"\nchosen: `{chosen}` → {summary}\n"
        print(text, flush=True)
        out.append(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(out), encoding="utf-8")


if __name__ == "__main__":
    main()
