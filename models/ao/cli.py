"""``smartscope train zernike``: train the learned aberration estimator into a bundle.

smartscope train zernike --out models/bundles/ao-zernike-small
python -m smartscope.models.ao.cli --out models/bundles/ao-zernike-small
"""

from __future__ import annotations

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
    """``python -m smartscope.models.ao.cli``: the same command outside the ``smartscope`` CLI."""
    typer.run(train_zernike_cmd)


if __name__ == "__main__":
    main()
