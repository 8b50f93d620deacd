"""Frames/s of the virtual microscope, in process and through MMCore sequence acquisition.

    python bench/simulator.py                      # all scenarios, 256² 512² 2048²
    python bench/simulator.py --sizes 512 --scenarios smlm --frames 200
    python bench/simulator.py --realtime --sizes 256 512 --exposure-ms 10   # a camera in wall time

In process: ``VirtualMicroscope.render_frame()`` (sample + optics + photophysics +
camera noise → uint16 frame + ground truth). Through MMCore: ``virtual_microscope.cfg``
loaded into pymmcore-plus ``UniMMCore``, ``Pacing=AsFastAsPossible``,
``startSequenceAcquisition(n)`` and ``popNextImageAndMD`` until all n frames are out.
Frames/s are measured after a warm-up (sample built, OTFs/PSF stamps cached).

``--baseline DIR``: every row also runs with ``smartscope`` imported from DIR (another
checkout, e.g. ``git archive HEAD~1 | tar -x -C DIR``), side by side, with new/base ratios;
``--repeats R`` alternates R runs of each and keeps the best (on a shared host).

``--realtime``: ``Pacing=RealTime`` at ``--exposure-ms`` (the camera exposes in wall-clock time,
frames start every max(exposure, readout)); the camera's own frame rate from the exposure
start stamps of the frames (``ExposureStart_s``), the share of frames that started on
schedule (one interval after the previous one) and the median readout latency (frame popped
− exposure end).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

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


def bench_realtime(
    scenario: str, size: int, frames: int, exposure_ms: float
) -> tuple[float, float, float, float]:
    """(camera fps, nominal fps, share of frames on schedule, median latency ms) in RealTime."""
    from pymmcore_plus.experimental.unicore import UniMMCore

    from smartscope.simulators import virtual_config_path

    core = UniMMCore()
    try:
        core.loadSystemConfiguration(str(virtual_config_path()))
        core.setProperty("Camera", "Scenario", scenario)
        core.setProperty("Camera", "SensorSize", str(size))
        core.setExposure(exposure_ms)
        core.setCircularBufferMemoryFootprint(max(256, 3 * size * size * 2 * 64 // 2**20))
        core.startSequenceAcquisition(frames, 0, True)  # the start cost also warms the caches
        starts, ends, popped = [], [], []
        while len(starts) < frames:
            if core.getRemainingImageCount():
                _, md = core.popNextImageAndMD()
                popped.append(time.time())
                starts.append(float(md["ExposureStart_s"]))
                ends.append(float(md["ExposureEnd_s"]))
            else:
                time.sleep(0.0002)
        from smartscope.simulators import get_virtual_microscope

        interval_s = get_virtual_microscope(core).frame_interval_ms() * 1e-3
        gaps = np.diff(starts)
        fps = (len(starts) - 1) / (starts[-1] - starts[0])
        on_time = float(np.mean(np.abs(gaps - interval_s) < 1e-4))
        latency_ms = float(np.median(np.array(popped) - np.array(ends))) * 1e3
        while core.isSequenceRunning():
            time.sleep(0.001)
        return fps, 1.0 / interval_s, on_time, latency_ms
    finally:
        core.unloadAllDevices()
        del core
        gc.collect()


def _row(scenario: str, size: int, frames: int, warmup: int, no_mmcore: bool) -> tuple[float, ...]:
    n = max(5, frames // 5) if size >= 2048 else frames
    w = max(3, warmup // 4) if size >= 2048 else warmup
    fps_ip, cpu_ip = bench_inprocess(scenario, size, n, w)
    nan = (float("nan"), float("nan"))
    fps_mm, cpu_mm = nan if no_mmcore else bench_mmcore(scenario, size, n, w)
    return fps_ip, cpu_ip, fps_mm, cpu_mm


def _best(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    """Best of repeated rows: highest fps, lowest CPU ms (fps, cpu, fps, cpu)."""
    return tuple(max(r[i] for r in runs) if i % 2 == 0 else min(r[i] for r in runs) for i in range(4))


def _row_in(checkout: Path, args: argparse.Namespace, scenario: str, size: int) -> tuple[float, ...]:
    """The same row with ``smartscope`` imported from another checkout (a subprocess)."""
    cmd = [sys.executable, __file__, "--row", scenario, str(size), "--frames", str(args.frames)]
    cmd += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
    cmd += ["--no-mmcore"] if args.no_mmcore else []
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=checkout).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=["smlm", "beads", "cells", "lowlight", "events"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 2048])
    ap.add_argument("--frames", type=int, default=100, help="timed frames (2048²: a fifth)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--no-mmcore", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="camera noise threads")
    ap.add_argument("--realtime", action="store_true", help="Pacing=RealTime frame rate instead")
    ap.add_argument("--exposure-ms", type=float, default=10.0, help="exposure for --realtime")
    ap.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git archive` of the previous commit): each row runs there\n"
        "and here side by side, with the ratio",
    )
    ap.add_argument("--repeats", type=int, default=1, help="--baseline: alternate runs, keep the best")
    ap.add_argument("--row", nargs=2, metavar=("SCENARIO", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    from smartscope.simulators.camera import set_render_threads

    set_render_threads(args.threads)
    if args.row:  # one row for --baseline, as JSON
        print(json.dumps(_row(args.row[0], int(args.row[1]), args.frames, args.warmup, args.no_mmcore)))
        return
    print(
        f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
        f"load(1m)={os.getloadavg()[0]:.1f} numpy {np.__version__} camera threads={args.threads}"
    )
    if args.realtime:
        print(f"RealTime pacing, exposure {args.exposure_ms:g} ms, {args.frames} frames per row")
        head = ("scenario", "size", "camera fps", "nominal", "on time", "latency ms")
        print(f"{head[0]:<10} {head[1]:>6} {head[2]:>11} {head[3]:>8} {head[4]:>8} {head[5]:>11}")
        for scenario in args.scenarios:
            for size in args.sizes:
                fps, nominal, on_time, lat = bench_realtime(scenario, size, args.frames, args.exposure_ms)
                print(
                    f"{scenario:<10} {size:>5}² {fps:>11.1f} {nominal:>8.1f} {on_time:>8.2f} {lat:>11.1f}",
                    flush=True,
                )
        return
    print(
        "wall fps: frames/s on this machine now; cpu ms: process CPU time per frame (all\n"
        "threads) — 1000/cpu ms is what one otherwise idle core sustains"
    )
    if args.baseline is not None:
        print(f"baseline: {args.baseline} (base) vs this checkout (new); ratio = new / base")
        print(f"{'':<17} {'in-proc fps':^20} {'cpu ms/frame':^20} {'MMCore fps':^20} {'cpu ms/frame':^20}")
        cols = ("base", "new", "ratio") * 4
        print(f"{'scenario':<10} {'size':>6} " + " ".join(f"{c:>6}" for c in cols))
        for scenario in args.scenarios:
            for size in args.sizes:
                runs_b, runs_n = [], []
                for _ in range(args.repeats):  # alternate, keep the best of each (least disturbed)
                    runs_b.append(_row_in(args.baseline, args, scenario, size))
                    runs_n.append(_row(scenario, size, args.frames, args.warmup, args.no_mmcore))
                b, n = _best(runs_b), _best(runs_n)
                fmt = (".1f", ".2f", ".1f", ".2f")  # fps, cpu ms
                cells = [f"{b[i]:>6{fmt[i]}} {n[i]:>6{fmt[i]}} {n[i] / b[i]:>6.2f}" for i in range(4)]
                print(f"{scenario:<10} {size:>5}² " + " ".join(cells), flush=True)
        return
    print(f"{'scenario':<10} {'size':>6} {'in-proc fps':>12} {'cpu ms':>8} {'MMCore fps':>11} {'cpu ms':>8}")
    for scenario in args.scenarios:
        for size in args.sizes:
            fps_ip, cpu_ip, fps_mm, cpu_mm = _row(scenario, size, args.frames, args.warmup, args.no_mmcore)
            print(
                f"{scenario:<10} {size:>5}² {fps_ip:>12.1f} {cpu_ip:>8.2f} {fps_mm:>11.1f} {cpu_mm:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
