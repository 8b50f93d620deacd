"""Frames/s of the virtual microscope, in process and through MMCore sequence acquisition.

    python bench/simulator.py                      # all scenarios, 256² 512² 2048²
    python bench/simulator.py --sizes 512 --scenarios smlm --frames 200

In process: ``VirtualMicroscope.render_frame()`` (sample + optics + photophysics +
camera noise → uint16 frame + ground truth). Through MMCore: ``virtual_microscope.cfg``
loaded into pymmcore-plus ``UniMMCore``, ``Pacing=AsFastAsPossible``,
``startSequenceAcquisition(n)`` and ``popNextImageAndMD`` until all n frames are out.
Frames/s are measured after a warm-up (sample built, OTFs/PSF stamps cached).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time

import numpy as np


def bench_inprocess(scenario: str, size: int, frames: int, warmup: int) -> tuple[float, float]:
    from smartscope.simulators.microscope import VirtualMicroscope

    vm = VirtualMicroscope(scenario, seed=0, sensor_px=size)  # type: ignore[arg-type]
    for _ in range(warmup):
        vm.render_frame()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(frames):
        vm.render_frame()
    return frames / (time.perf_counter() - t0), (time.process_time() - c0) / frames * 1e3


def _sequence_fps(core: object, n: int) -> tuple[float, float]:
    """Start a sequence of n frames and pop them all; frames/s from start to last pop."""
    c: object = core
    c.startSequenceAcquisition(n, 0, True)  # type: ignore[attr-defined]
    got = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while got < n:
        if c.getRemainingImageCount():  # type: ignore[attr-defined]
            c.popNextImageAndMD()  # type: ignore[attr-defined]
            got += 1
        else:
            time.sleep(0.0002)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    while c.isSequenceRunning():  # type: ignore[attr-defined]
        time.sleep(0.001)
    return n / dt, dc / n * 1e3


def bench_mmcore(scenario: str, size: int, frames: int, warmup: int) -> tuple[float, float]:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from smartscope.simulators import virtual_config_path

    core = UniMMCore()
    try:
        core.loadSystemConfiguration(str(virtual_config_path()))
        core.setProperty("Camera", "Pacing", "AsFastAsPossible")
        core.setProperty("Camera", "Scenario", scenario)
        core.setProperty("Camera", "SensorSize", str(size))
        core.setCircularBufferMemoryFootprint(max(256, 3 * size * size * 2 * 64 // 2**20))

        _sequence_fps(core, warmup)
        return _sequence_fps(core, frames)
    finally:
        if core.isSequenceRunning():
            core.stopSequenceAcquisition()
        core.unloadAllDevices()
        del core
        gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=["smlm", "beads", "cells", "lowlight", "events"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 2048])
    ap.add_argument("--frames", type=int, default=100, help="timed frames (2048²: a fifth)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--no-mmcore", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="camera noise threads")
    args = ap.parse_args()
    from smartscope.simulators.camera import set_render_threads

    set_render_threads(args.threads)
    print(
        f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
        f"load(1m)={os.getloadavg()[0]:.1f} numpy {np.__version__} camera threads={args.threads}"
    )
    print(
        "wall fps: frames/s on this machine now; cpu ms: process CPU time per frame (all\n"
        "threads) — 1000/cpu ms is what one otherwise idle core sustains"
    )
    print(f"{'scenario':<10} {'size':>6} {'in-proc fps':>12} {'cpu ms':>8} {'MMCore fps':>11} {'cpu ms':>8}")
    for scenario in args.scenarios:
        for size in args.sizes:
            n = max(5, args.frames // 5) if size >= 2048 else args.frames
            w = max(3, args.warmup // 4) if size >= 2048 else args.warmup
            fps_ip, cpu_ip = bench_inprocess(scenario, size, n, w)
            nan = (float("nan"), float("nan"))
            fps_mm, cpu_mm = nan if args.no_mmcore else bench_mmcore(scenario, size, n, w)
            print(
                f"{scenario:<10} {size:>5}² {fps_ip:>12.1f} {cpu_ip:>8.2f} {fps_mm:>11.1f} {cpu_mm:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
