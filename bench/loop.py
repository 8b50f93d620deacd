"""Loop overhead on sCMOS-size streams, and live actions, measured side by side in one run.

**Throughput** (DemoCamera, FastImage, fixed exposure): for each case the camera is set
up once and then

* **raw**: ``startSequenceAcquisition`` + ``popNextImageAndMD`` as fast as frames come,
  nothing else: the ceiling for any Python consumer of that camera;
* **smartscope**: the full loop with an identity pipeline: every frame to OME-TIFF on
  disk through the writer thread, frames.jsonl, the newest frame to analysis, watchdog.

Rate = (frames − 1) / (time the last frame was taken off the buffer − time the first
was), for both. CPU by thread (Linux /proc) shows where the process's cores go in the 2048²
disk runs: the camera's own thread, the acquisition, writer, direct-I/O and analysis
threads. Latency = camera timestamp → decision, from the loop's own record, against
two frame intervals of the raw rate. Memory = peak resident set during the run minus
before it (sampled every 20 ms), against the writer queue's budget (``storage.queue_mb``).

**Live actions** (the virtual microscope, when it has ``SequenceStartCost_ms``): a 256²
stream at 10 ms exposure in real time (~100 fps); a controller toggles the 561 nm laser
10 times a second. Frames acquired ÷ frames of the same run length with no actions, in
``live`` and ``exact`` apply modes, and attribution errors against the simulator's ground
truth (``SimPowerMean_mW_561``: the power each frame really received): frames not marked
``transition`` whose claimed power differs from the power they received.

**Soak** (``--soak-minutes 10``): 2048² @ 10 ms to disk for ten minutes (about 55 000
frames, 460 GB at the camera's rate). No disk here holds that, so the stream is cut into
complete runs of ``--soak-segment-gb`` each, one after another in one process on one
camera, every finished run checked and deleted before the next (see :func:`soak`).

    python bench/loop.py --seconds 30 --tmpfs /dev/shm --out bench/results/loop/loop.json
    python bench/loop.py --io direct --io buffered --frames-2048 1500 --no-live
    python bench/loop.py --no-throughput --no-live --soak-minutes 10 --io direct
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import mm_test_adapters
import typer
from pymmcore_plus import CMMCorePlus
from rich.console import Console
from rich.table import Table

from smartscope.actions import ActionRequest, SetLaserPower
from smartscope.config import validate_config
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.runner import run
from smartscope.scenarios.base import virtual_cfg_file, virtual_lights
from smartscope.storage import read_jsonl

console = Console(width=220)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _PeakRSS:
    """Peak resident memory while in the ``with`` block, sampled every 20 ms."""

    def __enter__(self) -> _PeakRSS:
        self.before = _rss_mb()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _ThreadCPU:
    """CPU seconds per thread of this process while in the ``with`` block (Linux /proc),
    named by Python's threads (``native_id``); other threads (MMCore's camera thread, the
    libraries' pools) are summed as "native"."""

    def __enter__(self) -> _ThreadCPU:
        self.names: dict[int, str] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def _read(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        for t in threading.enumerate():
            if t.native_id is not None:
                self.names.setdefault(t.native_id, t.name)
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
            self.first.setdefault(int(tid), cpu)
            self.last[int(tid)] = cpu

    def _sample(self) -> None:
        while True:
            self._read()
            if self._stop.wait(0.1):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.wall_s = time.perf_counter() - self._t0

    def by_name(self) -> dict[str, float]:
        """CPU seconds per thread name (numbered pool threads grouped) over the block."""
        out: dict[str, float] = {}
        for tid, cpu in self.last.items():
            name = self.names.get(tid, "native (MMCore camera, library pools)")
            name = name.split("_")[0] if name.startswith("smartscope-direct-io") else name
            out[name] = out.get(name, 0.0) + cpu - self.first.get(tid, cpu)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _demo_core(size: int, exposure_ms: float) -> CMMCorePlus:
    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([mm_test_adapters.device_adapter_path()])
    core.loadSystemConfiguration(str(Path(mm_test_adapters.device_adapter_path()) / "MMConfig_demo.cfg"))
    core.setProperty("Camera", "OnCameraCCDXSize", size)
    core.setProperty("Camera", "OnCameraCCDYSize", size)
    core.setProperty("Camera", "FastImage", 1)
    core.setExposure(exposure_ms)
    core.setCircularBufferMemoryFootprint(2048)
    return core


def raw_rate(core: CMMCorePlus, n: int) -> float:
    core.startSequenceAcquisition(n, 0, True)
    got, t_first, t_last = 0, 0.0, 0.0
    while got < n:
        if core.getRemainingImageCount():
            core.popNextImageAndMD()
            t_last = time.perf_counter()
            if got == 0:
                t_first = t_last
            got += 1
        elif not core.isSequenceRunning() and not core.getRemainingImageCount():
            break
        else:
            time.sleep(0.0002)
    core.stopSequenceAcquisition()
    return (got - 1) / (t_last - t_first)


def smartscope_rate(
    core: CMMCorePlus,
    n: int,
    exposure_ms: float,
    root: Path,
    queue_mb: int,
    io: str = "auto",
    buffer_mb: int = 2048,
    reserve: str = "auto",
) -> dict[str, Any]:
    cfg = validate_config(
        {
            "acquisition": {"exposure_ms": exposure_ms, "n_frames": n},
            "pipeline": {"stages": [{"kind": "identity"}]},
            "storage": {
                "root": str(root),
                "name": "bench",
                "queue_mb": queue_mb,
                "io": io,
                "reserve_queue": reserve,
            },
            "microscope": {"buffer_size_mb": buffer_mb},
        }
    )
    driver = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=core)
    gc.collect()
    with _PeakRSS() as mem, _ThreadCPU() as cpu:
        res = run(cfg, driver=driver, report=False)
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    deq = [f["times"]["dequeued"] for f in frames]
    m = res.metrics
    return {
        "fps": (len(deq) - 1) / (deq[-1] - deq[0]) if len(deq) > 1 else 0.0,
        "stored": m["frames_stored"],
        "skipped": m["frames_skipped"],
        "analysed": m["frames_analysed"],
        "p50_ms": m["latency_decision"]["p50_ms"],
        "p99_ms": m["latency_decision"]["p99_ms"],
        "queue_peak_mb": m["storage_queue_peak_mb"],
        "rss_peak_mb": mem.peak - mem.before,
        "acquired": m["frames_acquired"],
        "cpu_by_thread_s": cpu.by_name(),
        "cpu_wall_s": cpu.wall_s,
        "io": m.get("storage_io", ""),
        "run_dir": res.run_dir,
        "status": f"{res.status}" + ("" if res.status == "completed" else f": {res.reason[:60]}"),
    }


def disk_mb_s(root: Path, mb: int = 2000) -> float:
    """Sustained write rate of the storage root with 8 MiB writes, synced at the end."""
    chunk = b"\0" * (8 << 20)
    path = root / "disk_probe.bin"
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(mb // 8):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t
    path.unlink()
    return mb / dt


def throughput(
    seconds: float,
    disk: Path,
    queue_mb: int,
    tmpfs: Path | None,
    io_modes: list[str],
    frames_2048: int | None = None,
) -> list[dict[str, Any]]:
    """Each case to ``disk`` in each ``storage.io`` mode; with ``tmpfs`` also to memory (at
    most 10 s at 2048²: the run's frames must fit in RAM), which separates the loop's own
    cost from the disk's rate. ``frames_2048`` fixes the 2048² runs' length (e.g. 1500)."""
    rows = []
    for size, exposure_ms, secs in ((512, 1.0, min(seconds, 8.0)), (2048, 10.0, seconds)):
        core = _demo_core(size, exposure_ms)
        probe = raw_rate(core, 50)
        roots = [(f"disk, {io}", disk, secs, io) for io in io_modes]
        roots += [("tmpfs", tmpfs, min(secs, 10.0), "auto")] if tmpfs else []
        for storage, root, run_s, io in roots:
            n = max(100, int(probe * run_s))
            if size == 2048 and frames_2048 and storage != "tmpfs":
                n = frames_2048
            raw = raw_rate(core, n)
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                sm = smartscope_rate(core, n, exposure_ms, Path(tmp), queue_mb, io)
            interval_ms = 1e3 / raw
            rows.append(
                {
                    "size": size,
                    "exposure_ms": exposure_ms,
                    "storage": storage,
                    "frames": n,
                    "raw_fps": raw,
                    **sm,
                    "ratio": sm["fps"] / raw,
                    "mb_s": sm["fps"] * size * size * 2 / 1e6,
                    "interval_ms": interval_ms,
                    "p99_in_intervals": sm["p99_ms"] / interval_ms,
                    "queue_mb": queue_mb,
                }
            )
        core.unloadAllDevices()
        del core
        gc.collect()
    return rows


# ------------------------------------------------------------------------ soak


class _RSSTrace:
    """Resident memory sampled every ``period_s`` while in the ``with`` block."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []

    def __enter__(self) -> _RSSTrace:
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self.samples.append((time.perf_counter() - self._t0, _rss_mb()))
            if self._stop.wait(self.period_s):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def soak(
    minutes: float,
    disk: Path,
    queue_mb: int,
    io: str,
    segment_gb: float,
    buffer_mb: int = 512,
    reserve: str = "auto",
) -> dict[str, Any]:
    """2048² @ 10 ms to disk for ``minutes``, within the disk's free space: the stream is
    cut into runs of ``segment_gb`` (each a complete ``smartscope run``: its own folder,
    raw file, frames.jsonl, metrics), one after another on the same camera and process;
    each finished run is checked (every frame taken is on disk and listed) and deleted
    before the next starts, so at most one segment is on disk. Dropped = frames taken off
    the camera but not stored, plus runs that did not complete (a camera buffer overflow
    faults the run). Memory: resident set sampled every 0.5 s over the whole soak; the
    growth from the first segment's start is judged against ``queue_mb`` + 100 MB (the
    camera's circular buffer, ``buffer_mb``, is allocated before that start)."""
    core = _demo_core(2048, 10.0)
    core.setCircularBufferMemoryFootprint(buffer_mb)
    raw = raw_rate(core, 200)
    frame_bytes = 2048 * 2048 * 2
    per_segment = max(200, int(segment_gb * 1e9 / frame_bytes))
    free = shutil.disk_usage(disk).free
    if per_segment * frame_bytes * 1.05 > free * 0.9:
        raise typer.BadParameter(
            f"--soak-segment-gb {segment_gb} does not fit in {free / 1e9:.0f} GB free at {disk}"
        )
    segments: list[dict[str, Any]] = []
    gc.collect()
    rss_start = _rss_mb()
    t_end = time.perf_counter() + minutes * 60
    t_first = time.perf_counter()
    with _RSSTrace() as trace:
        while time.perf_counter() < t_end - 5:
            left_s = t_end - time.perf_counter()
            n = min(per_segment, max(200, int(raw * left_s)))
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=disk) as tmp:
                r = smartscope_rate(core, n, 10.0, Path(tmp), queue_mb, io, buffer_mb, reserve)
                listed = len(read_jsonl(Path(r["run_dir"]) / "frames.jsonl"))
            r.pop("run_dir")
            r.update(frames=n, listed=listed, wall_s=time.perf_counter() - t0, raw_fps=raw)
            r["dropped"] = (r["acquired"] - r["stored"]) + (
                n - r["acquired"] if not r["status"].startswith("completed") else 0
            )
            segments.append(r)
            console.print(
                f"soak segment {len(segments)}: {r['stored']}/{n} stored at {r['fps']:.1f} fps "
                f"(raw {raw:.1f}), p99 {r['p99_ms']:.0f} ms, queue peak {r['queue_peak_mb']:.0f} MB, "
                f"RSS {_rss_mb():.0f} MB, {r['status']}"
            )
    core.unloadAllDevices()
    del core
    gc.collect()
    rss = [mb for _, mb in trace.samples]
    return {
        "minutes": (time.perf_counter() - t_first) / 60,
        "io": segments[0]["io"] if segments else io,
        "segments": segments,
        "frames": sum(x["stored"] for x in segments),
        "dropped": sum(x["dropped"] for x in segments),
        "raw_fps": raw,
        "fps_min": min((x["fps"] for x in segments), default=0.0),
        "p99_ms_max": max((x["p99_ms"] for x in segments), default=0.0),
        "queue_peak_mb": max((x["queue_peak_mb"] for x in segments), default=0.0),
        "rss_start_mb": rss_start,
        "rss_peak_mb": max(rss, default=rss_start),
        "rss_growth_mb": max(rss, default=rss_start) - rss_start,
        "rss_trace": trace.samples[:: max(1, len(trace.samples) // 400)],
        "queue_mb": queue_mb,
        "reserve_queue": reserve,
        "buffer_mb": buffer_mb,
        "segment_gb": per_segment * frame_bytes / 1e9,
    }


# ------------------------------------------------------------------ live actions


class _Toggle561(ControllerBase):
    """Asks for 5 or 10 mW on the 561 nm laser every ``period_s`` (10 Hz by default)."""

    name = "toggle561"

    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s = period_s
        self.last = 0.0
        self.high = False

    def update(self, obs: Observation) -> list[ActionRequest]:
        now = time.monotonic()
        if now - self.last < self.period_s:
            return []
        self.last = now
        self.high = not self.high
        power = 10.0 if self.high else 5.0
        return [self.ask(SetLaserPower(laser="561", power_mw=power), "bench: 10 Hz laser toggle", obs)]


def _live_run(root: Path, mode: str, seconds: float, toggle: bool) -> dict[str, Any]:
    cfg_file = virtual_cfg_file(root / "virtual.cfg", "cells", 0, 256, "RealTime", 0.0, 10.0)
    cfg = validate_config(
        {
            "microscope": {
                "config_file": str(cfg_file),
                "camera": "Camera",
                "lasers": {
                    **virtual_lights(),
                    "561": {"device": "Laser561", "wavelength_nm": 561, "max_power_mw": 50},
                },
            },
            "acquisition": {
                "exposure_ms": 10.0,
                "duration_s": seconds,
                "lasers_mw": {"561": 5.0},
                "apply_mode": mode,
            },
            "pipeline": {"stages": [{"kind": "identity"}]},
            "storage": {"root": str(root), "name": f"live-{mode}"},
        }
    )
    res = run(cfg, report=False, controllers=[_Toggle561()] if toggle else [])
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    wrong = transitions = 0
    for f in frames:
        truth = f.get("mm", {}).get("SimPowerMean_mW_561")
        if f.get("transition"):
            transitions += 1
            continue
        if truth is not None and abs(float(truth) - float(f["state"]["lasers"]["561"])) > 1e-6:
            wrong += 1
    return {
        "frames": len(frames),
        "actions": res.metrics["actions_applied"],
        "transitions": transitions,
        "attribution_errors": wrong,
        "status": f"{res.status}",
    }


def live_actions(seconds: float, disk: Path) -> list[dict[str, Any]] | None:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from smartscope.simulators import virtual_config_path

    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))
    has_cost = core.hasProperty("Camera", "SequenceStartCost_ms")
    start_cost = core.getProperty("Camera", "SequenceStartCost_ms") if has_cost else None
    core.unloadAllDevices()
    del core
    gc.collect()
    if not has_cost:
        return None
    rows = []
    with tempfile.TemporaryDirectory(dir=disk) as tmp:
        base = _live_run(Path(tmp), "live", seconds, toggle=False)
        for mode in ("live", "exact"):
            r = _live_run(Path(tmp), mode, seconds, toggle=True)
            rows.append(
                {
                    "mode": mode,
                    "start_cost_ms": start_cost,
                    "baseline_frames": base["frames"],
                    **r,
                    "ratio": r["frames"] / max(base["frames"], 1),
                }
            )
    return rows


def main(
    seconds: Annotated[float, typer.Option(help="duration of the 2048² run and of each live run")] = 30.0,
    disk: Annotated[Path | None, typer.Option(help="on-disk storage root (default: the temp dir)")] = None,
    queue_mb: Annotated[int, typer.Option(help="storage.queue_mb for the throughput runs")] = 1024,
    reserve: Annotated[
        str, typer.Option(help="storage.reserve_queue of the soak: auto, always or never")
    ] = "auto",
    live: Annotated[bool, typer.Option(help="also run the live-actions table")] = True,
    out: Annotated[Path | None, typer.Option(help="also write the rows as JSON here")] = None,
    tmpfs: Annotated[
        Path | None, typer.Option(help="also run each case with storage in memory here (e.g. /dev/shm)")
    ] = None,
    io: Annotated[list[str] | None, typer.Option(help="storage.io modes of the disk rows (repeat)")] = None,
    frames_2048: Annotated[
        int | None, typer.Option(help="frames of each 2048² disk run (default: --seconds)")
    ] = None,
    throughput_table: Annotated[
        bool, typer.Option("--throughput/--no-throughput", help="the rate table")
    ] = True,
    soak_minutes: Annotated[
        float, typer.Option(help="also soak 2048² @ 10 ms to disk this long (0: no)")
    ] = 0.0,
    soak_segment_gb: Annotated[
        float, typer.Option(help="the soak's runs: GB each, deleted when done")
    ] = 12.0,
) -> None:
    disk = disk or Path(tempfile.gettempdir())
    io_modes = io or ["auto"]
    with tempfile.TemporaryDirectory(dir=disk) as tmp:
        disk_rate = disk_mb_s(Path(tmp))
    rows = throughput(seconds, disk, queue_mb, tmpfs, io_modes, frames_2048) if throughput_table else []
    table = Table(
        title=f"bench/loop.py — DemoCamera (FastImage), identity pipeline, to disk; {platform.node()}, "
        f"{os.cpu_count()} cores; disk sustains {disk_rate:.0f} MB/s (8 MiB writes + fsync)"
        + (f"; tmpfs rows: storage in {tmpfs}" if tmpfs else "")
    )
    cols = (
        "size",
        "exp ms",
        "storage",
        "frames",
        "raw fps",
        "smartscope fps",
        "ratio",
        "MB/s",
        "stored",
        "analysed",
        "skipped",
        "lat p50 ms",
        "lat p99 ms",
        "p99 / interval",
        "queue peak MB",
        "RSS peak +MB",
        "status",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['size']}²",
            f"{r['exposure_ms']:g}",
            r["storage"],
            str(r["frames"]),
            f"{r['raw_fps']:.0f}",
            f"{r['fps']:.0f}",
            f"{r['ratio']:.3f}",
            f"{r['mb_s']:.0f}",
            str(r["stored"]),
            str(r["analysed"]),
            str(r["skipped"]),
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['p99_in_intervals']:.2f}",
            f"{r['queue_peak_mb']:.0f}",
            f"{r['rss_peak_mb']:.0f}",
            r["status"],
        )
    if rows:
        console.print(table)
        for r in rows:  # where the CPU went, per thread, in the 2048² disk runs
            if r["size"] != 2048 or r["storage"] == "tmpfs":
                continue
            total = sum(r["cpu_by_thread_s"].values())
            parts = ", ".join(
                f"{name} {sec / r['cpu_wall_s']:.2f}"
                for name, sec in r["cpu_by_thread_s"].items()
                if sec > 0.01
            )
            console.print(
                f"CPU by thread, 2048² {r['storage']}: {total / r['cpu_wall_s']:.2f} cores of "
                f"{os.cpu_count()} for this process ({parts}; cores busy per second of the run)"
            )
    soaked = (
        soak(soak_minutes, disk, queue_mb, io_modes[0], soak_segment_gb, reserve=reserve)
        if soak_minutes > 0
        else None
    )
    if soaked is not None:
        st = Table(
            title=f"soak — 2048² @ 10 ms to {disk} ({soaked['io']} I/O, reserve_queue "
            f"{soaked['reserve_queue']}), runs of {soaked['segment_gb']:.1f} GB one after another, "
            "each deleted once checked"
        )
        for col in (
            "minutes",
            "runs",
            "frames stored",
            "dropped",
            "raw fps",
            "slowest run fps",
            "worst p99 ms",
            "queue peak MB",
            "RSS start MB",
            "RSS peak MB",
            "growth MB",
            "budget MB (queue + 100)",
        ):
            st.add_column(col, justify="right")
        st.add_row(
            f"{soaked['minutes']:.1f}",
            str(len(soaked["segments"])),
            str(soaked["frames"]),
            str(soaked["dropped"]),
            f"{soaked['raw_fps']:.1f}",
            f"{soaked['fps_min']:.1f}",
            f"{soaked['p99_ms_max']:.0f}",
            f"{soaked['queue_peak_mb']:.0f}",
            f"{soaked['rss_start_mb']:.0f}",
            f"{soaked['rss_peak_mb']:.0f}",
            f"{soaked['rss_growth_mb']:.0f}",
            str(soaked["queue_mb"] + 100),
        )
        console.print(st)
    live_rows = live_actions(min(seconds, 10.0), disk) if live else None
    if live and live_rows is None:
        console.print("live actions: skipped (this virtual microscope has no SequenceStartCost_ms)")
    if live_rows:
        lt = Table(
            title="live actions — virtual microscope, 256², 10 ms, real time (~100 fps), 561 nm at 10 Hz"
        )
        for col in (
            "mode",
            "start cost ms",
            "frames, no actions",
            "frames, toggling",
            "ratio",
            "actions",
            "transition frames",
            "attribution errors",
            "status",
        ):
            lt.add_column(col, justify="right")
        for r in live_rows:
            lt.add_row(
                r["mode"],
                str(r["start_cost_ms"]),
                str(r["baseline_frames"]),
                str(r["frames"]),
                f"{r['ratio']:.3f}",
                str(r["actions"]),
                str(r["transitions"]),
                str(r["attribution_errors"]),
                r["status"],
            )
        console.print(lt)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {"disk_mb_s": disk_rate, "throughput": rows, "soak": soaked, "live": live_rows}, indent=2
            )
        )


if __name__ == "__main__":
    typer.run(main)
