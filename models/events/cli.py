"""Commands of the events family: ``smartscope train events`` and held-out evaluation.

smartscope train events --out models/bundles/events-unet-small
python -m smartscope.models.events.cli --evaluate models/bundles/events-unet-small
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Annotated

import typer

from smartscope.models.events.data import HELDOUT_SEED_BASE
from smartscope.models.events.train import OFF_PERCENTILE, ON_PERCENTILE, evaluate_bundle, train_bundle
from smartscope.models.provenance import command_line

__all__ = ["main", "train_events_cmd"]


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
    """``python -m smartscope.models.events.cli --evaluate BUNDLE``: held-out separation."""
    ap = argparse.ArgumentParser(description="events heat-map U-Net: measure a bundle on held-out seeds")
    ap.add_argument("--evaluate", type=Path, required=True, help="bundle to measure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=int, default=10, help="held-out fields of view")
    args = ap.parse_args()
    seeds = [HELDOUT_SEED_BASE + args.seed * 1000 + k for k in range(args.heldout)]
    print(json.dumps(evaluate_bundle(args.evaluate, seeds), indent=1))


if __name__ == "__main__":
    main()
