"""``smartscope simulate``: write a simulated data set with ground truth to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from smartscope.exceptions import fail

from .microscope import SCENARIOS

__all__ = ["simulate"]


def simulate(
    scenario: Annotated[str, typer.Argument(help=f"one of: {', '.join(SCENARIOS)}")],
    frames: Annotated[int, typer.Option("--frames", "-n", min=1, help="time points")] = 100,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("sim_out"),
    seed: Annotated[int, typer.Option(help="seed of sample, photophysics and noise")] = 0,
    size: Annotated[int, typer.Option(min=16, max=4096, help="square frame edge, px")] = 256,
    exposure_ms: Annotated[float, typer.Option(min=0.01, help="exposure per frame")] = 10.0,
    interval_ms: Annotated[
        float | None, typer.Option(help="frame interval; default per scenario (events: 200)")
    ] = None,
    camera: Annotated[Literal["scmos", "emccd"], typer.Option(help="scmos or emccd")] = "scmos",
) -> None:
    """Simulate SCENARIO for N frames and write OME-TIFF + ground truth to OUT."""
    from .datasets import write_dataset

    console = Console()
    if scenario not in SCENARIOS:
        fail(f"scenario {scenario!r} is not one of {SCENARIOS}", 2)
    with Progress(
        TextColumn(f"simulating {scenario}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("frames", total=frames)
        info = write_dataset(
            scenario,
            frames,
            out,
            seed=seed,
            size=size,
            exposure_ms=exposure_ms,
            interval_ms=interval_ms,
            camera_mode=camera,
            progress=lambda _t: bar.advance(task),
        )
    console.print(
        f"wrote {frames} frames of [bold]{scenario}[/] (seed {seed}, {size}×{size} px) to {out}: "
        + ", ".join(info["files"])
    )
    if info["events"]:
        console.print(
            f"{len(info['events'])} events; onsets (s): "
            + ", ".join(f"{float(e['onset_s']):.2f}" for e in info["events"])
        )


def main() -> None:  # pragma: no cover - convenience entry point
    typer.run(simulate)


if __name__ == "__main__":  # pragma: no cover
    main()
