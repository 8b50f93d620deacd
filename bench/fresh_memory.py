"""What a frame costs the acquisition thread when the writer queue grows: fresh memory or
reserved memory (smartscope.storage.pool).

A 2048² uint16 camera frame (8 MiB) is copied ``--frames`` times into buffers that are all
kept (a queue growing during a write stall), on a thread of its own as the acquisition
thread is, then released from another thread as the writer does; ``--rounds`` times.

- fresh: each frame a new allocation (what ``popNextImage`` gives): pages the process has
  not touched, faulted in on the acquisition thread.
- reserved: each frame copied into a slot of a :class:`FramePool` touched in advance.

Prints per-frame milliseconds (median and worst round) against the 10 ms a frame lasts at
100 fps::

    python bench/fresh_memory.py --frames 120 --rounds 4
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from smartscope.storage.pool import FramePool

console = Console()
SHAPE = (2048, 2048)


def _rounds(frames: int, rounds: int, reserved: bool) -> list[float]:
    """Per-frame milliseconds of each round, measured on a thread of its own."""
    src = np.ones(SHAPE, np.uint16)
    pool = FramePool(src.nbytes, frames) if reserved else None
    if pool is not None:
        while pool.touched < pool.n_slots:
            time.sleep(0.01)
    per_frame: list[float] = []

    def work() -> None:
        for _ in range(rounds):
            t = time.perf_counter()
            kept = [pool.hold(src) if pool is not None else src.copy() for _ in range(frames)]
            per_frame.append((time.perf_counter() - t) / frames * 1e3)
            releaser = threading.Thread(target=kept.clear)  # the writer lets go of them
            releaser.start()
            releaser.join()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if pool is not None:
        pool.close()
    return per_frame


def main(
    frames: Annotated[int, typer.Option(help="frames kept per round (the queue's growth)")] = 120,
    rounds: Annotated[int, typer.Option(help="rounds per case")] = 4,
) -> None:
    table = Table(title=f"2048² uint16 frames, {frames} kept per round, {rounds} rounds (ms per frame)")
    for col in ("memory", "median", "worst round", "vs 10 ms frame interval"):
        table.add_column(col, justify="right")
    for name, reserved in (("fresh (popNextImage)", False), ("reserved (FramePool)", True)):
        ms = _rounds(frames, rounds, reserved)
        table.add_row(name, f"{statistics.median(ms):.2f}", f"{max(ms):.2f}", f"{max(ms) / 10:.2f}")
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
