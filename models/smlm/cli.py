"""``smartscope train smlm``: the typer command (imports torch only when it runs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["main", "train_smlm_cmd"]


def train_smlm_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")] = Path(
        "models/bundles/smlm-decode-small"
    ),
    minutes: Annotated[float, typer.Option(help="wall-clock training budget")] = 18.0,
    steps: Annotated[int, typer.Option(help="stop after this many steps (0: no limit)")] = 0,
    batch: Annotated[int, typer.Option(help="three-frame windows per step")] = 16,
    lr: Annotated[float, typer.Option(help="peak learning rate (cosine decay)")] = 1e-3,
    width: Annotated[int, typer.Option(help="U-Net base width")] = 16,
    depth: Annotated[int, typer.Option(help="U-Net depth")] = 2,
    tile: Annotated[int, typer.Option(help="training tile edge, px")] = 40,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
) -> None:
    """Train the DECODE-class SMLM localizer on simulated data; write an engine bundle."""
    from smartscope.models.smlm.network import SMLMNetConfig
    from smartscope.models.smlm.train import SimSpec, train_smlm
    from smartscope.models.train_common import command_line

    try:
        net = SMLMNetConfig(base_width=width, depth=depth)
        spec = SimSpec(tile_px=tile)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    argv = list(sys.argv)
    if argv and argv[0].endswith("train.py"):
        argv[0:1] = ["python", "-m", "smartscope.models.smlm.train"]
    path = train_smlm(
        out,
        minutes=minutes,
        max_steps=steps or None,
        batch=batch,
        lr=lr,
        seed=seed,
        net_config=net,
        spec=spec,
        threads=threads,
        command=command_line(argv),
    )
    typer.echo(f"wrote {path}")


def main() -> None:
    typer.run(train_smlm_cmd)
