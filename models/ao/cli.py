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
    n_train: Annotated[int, typer.Option(help="simulated training aberrations (16 beads each)")] = 600,
    n_val: Annotated[int, typer.Option(help="held-out aberrations (other seeds)")] = 100,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 30,
    seed: Annotated[int, typer.Option(help="seed of simulation, initialisation and batching")] = 0,
) -> None:
    """Train the learned Zernike estimator (phase diversity on simulated beads) into a bundle."""
    train_bundle(out, n_train, n_val, epochs, seed, command=command_line(ctx=ctx))


def main() -> None:
    ap = argparse.ArgumentParser(description="train the Zernike estimator bundle on the simulator")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train_bundle(
        args.out,
        args.n_train,
        args.n_val,
        args.epochs,
        args.seed,
        command="python -m " + " ".join(["smartscope.models.ao.cli", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
