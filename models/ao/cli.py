"""``smartscope train zernike``: train the learned aberration estimator into a bundle.

smartscope train zernike --out models/bundles/ao-zernike-small
python -m smartscope.models.ao.cli --out models/bundles/ao-zernike-small
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated

import typer

from smartscope.models.ao.train import train_bundle
from smartscope.models.provenance import command_line

__all__ = ["main", "train_zernike_cmd"]


def train_zernike_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")],
    n_train: Annotated[int, typer.Option(help="simulated training aberrations (16 beads each)")] = 3200,
    n_val: Annotated[int, typer.Option(help="held-out aberrations (other seeds)")] = 400,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 12,
    seed: Annotated[int, typer.Option(help="seed of simulation, initialisation and batching")] = 0,
    width: Annotated[int, typer.Option(help="channels of the network's first stage")] = 24,
    max_rms: Annotated[float, typer.Option(help="largest simulated aberration, rad RMS")] = 2.0,
    crops_per_aberration: Annotated[int, typer.Option(help="samples per aberration per epoch")] = 8,
    batch: Annotated[int, typer.Option(help="samples per optimiser step")] = 32,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch default)")] = 1,
    data_cache: Annotated[
        Path | None, typer.Option(help="keep/read the simulated chunks here (same data on a rerun)")
    ] = None,
) -> None:
    """Train the learned Zernike estimator (phase diversity on simulated beads) into a bundle."""
    train_bundle(
        out,
        n_train,
        n_val,
        epochs,
        seed,
        command=command_line(ctx=ctx),
        width=width,
        max_rms_rad=max_rms,
        crops_per_aberration=crops_per_aberration,
        batch=batch,
        threads=threads,
        data_cache=data_cache,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="train the Zernike estimator bundle on the simulator")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-train", type=int, default=3200)
    ap.add_argument("--n-val", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--max-rms", type=float, default=2.0)
    ap.add_argument("--crops-per-aberration", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-cache", type=Path, default=None)
    args = ap.parse_args()
    train_bundle(
        args.out,
        args.n_train,
        args.n_val,
        args.epochs,
        args.seed,
        command="python -m " + " ".join(["smartscope.models.ao.cli", *sys.argv[1:]]),
        width=args.width,
        max_rms_rad=args.max_rms,
        crops_per_aberration=args.crops_per_aberration,
        batch=args.batch,
        threads=args.threads,
        data_cache=args.data_cache,
    )


if __name__ == "__main__":
    main()
