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

Prints a markdown table per detector (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from smartscope.config import EventDetectorConfig, LearnedEventDetectorConfig
from smartscope.models.events.data import HELDOUT_SEED_BASE
from smartscope.models.events.policy import DOSE_BUDGET, TriggerSetting, candidate_settings, choose_setting
from smartscope.models.events.stage import ClassicalEventDetector, LearnedEventDetector
from smartscope.models.events.train import heldout_scores

CLASSICAL_ON = (6.0, 7.0, 8.0, 9.0, 10.0)
CLASSICAL_OFF_FRACTION = (0.8, 0.95)
CLASSICAL_MIN_BURST_S = (0.0,)


def classical_settings() -> list[TriggerSetting]:
    return [
        TriggerSetting(on_threshold=on, off_threshold=f * on, min_burst_s=mb)
        for on, f, mb in itertools.product(CLASSICAL_ON, CLASSICAL_OFF_FRACTION, CLASSICAL_MIN_BURST_S)
    ]


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
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    seeds = [HELDOUT_SEED_BASE + args.seed * 1000 + k for k in range(args.heldout)]
    out = [
        f"<!-- python bench/events_sweep.py --heldout {args.heldout} --dose-budget {args.dose_budget:g}"
        f"{' --bundle ' + str(args.bundle) if args.bundle else ''}; held-out seeds {seeds[0]}–{seeds[-1]}, "
        f"{args.duration:g} s each -->\n"
    ]
    runs: list[tuple[str, Callable[[], Any], list[TriggerSetting]]] = [
        ("classical detector", lambda: ClassicalEventDetector(EventDetectorConfig()), classical_settings())
    ]
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
