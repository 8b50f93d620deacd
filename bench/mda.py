"""MDA plans: smartscope's queue-fed run vs pymmcore-plus's own ``mda.run``, side by side.

**Throughput** (Micro-Manager demo config: DemoCamera, DStage Z with ``UseSequences``):
positions × z × channels × time. For each case the same core runs the same
``MDASequence`` alternately

* **pymmcore-plus**: ``core.mda.run(sequence)``, no output: the engine sequences what the
  hardware allows (here each z-stack of one channel at one position and timepoint);
* **smartscope**: the full loop over the same sequence (``acquisition.mda``): the MDA
  driver feeds pymmcore-plus's runner from its schedule, every frame goes to OME-TIFF on
  disk through the writer thread, frames.jsonl, the newest frame to analysis (identity
  stage), watchdog.

Rate = (frames − 1) / (wall time of the last frame handed out by pymmcore-plus's runner
(``frameReady``) − that of the first), for both; *end to end* adds, for smartscope, the
time until the last frame was on disk. The machine is shared: each case runs ``--repeats``
times alternating, and the table shows the best and the median of the ratio.

**Events** (``--events SEED ...``, the virtual microscope): the multi-position events
scenario (:mod:`smartscope.scenarios.events_positions`), ``slow`` (the plan alone) and
``triggered`` (bursts where the detector fires) on each seed, scored against the
simulator's ground truth.

    python bench/mda.py --repeats 5 --out bench/results/mda/mda_throughput.json
    python bench/mda.py --events 1 --events 2 --events 3 --out bench/results/mda/mda_events.json
"""

from __future__ import annotations

import gc
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import mm_test_adapters
import typer
import useq
from pymmcore_plus import CMMCorePlus
from rich.console import Console
from rich.table import Table

from smartscope.config import validate_config
from smartscope.drivers.mda import MDADriver
from smartscope.runner import run
from smartscope.safety import Devices, SafetyGate
from smartscope.storage import read_jsonl

console = Console(width=260)


def _demo_core(size: int) -> CMMCorePlus:
    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([mm_test_adapters.device_adapter_path()])
    core.loadSystemConfiguration(str(Path(mm_test_adapters.device_adapter_path()) / "MMConfig_demo.cfg"))
    core.setProperty("Camera", "OnCameraCCDXSize", size)
    core.setProperty("Camera", "OnCameraCCDYSize", size)
    core.setProperty("Z", "UseSequences", "Yes")
    core.setCircularBufferMemoryFootprint(64)
    return core


_FOUR_POSITIONS = dict(
    stage_positions=[(0, 0, 0), (100, 0, 0), (0, 100, 0), (100, 100, 0)],
    z_plan={"range": 4, "step": 1},
    channels=[{"config": "DAPI", "exposure": 5}, {"config": "FITC", "exposure": 5}],
    time_plan={"interval": 0, "loops": 4},
)
CASES: dict[str, dict[str, Any]] = {
    "4 pos × 5 z × 2 ch × 4 t, z sequenced": {"sequencing": True, "seq": _FOUR_POSITIONS},
    "same, one snap per event": {"sequencing": False, "seq": _FOUR_POSITIONS},
    "2 pos × 21 z, z sequenced": {
        "sequencing": True,
        "seq": dict(
            stage_positions=[(0, 0, 0), (100, 0, 0)],
            z_plan={"range": 20, "step": 1},
            channels=[{"config": "DAPI", "exposure": 2}],
            time_plan={"interval": 0, "loops": 5},
        ),
    },
}


def _rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def plain(core: CMMCorePlus, seq: useq.MDASequence) -> dict[str, Any]:
    """pymmcore-plus's own runner and engine on the sequence, nothing else."""
    times: list[float] = []

    def on_frame(*_: Any) -> None:
        times.append(time.time())

    core.mda.events.frameReady.connect(on_frame)
    gc.collect()
    try:
        core.mda.run(seq)
    finally:
        core.mda.events.frameReady.disconnect(on_frame)
    return {"frames": len(times), "fps": _rate(times)}


def smartscope(core: CMMCorePlus, seq: useq.MDASequence, root: Path) -> dict[str, Any]:
    """The same sequence through smartscope's loop (every frame stored)."""
    cfg = validate_config(
        {
            "acquisition": {"mda": json.loads(seq.model_dump_json(exclude_unset=True))},
            "pipeline": {"stages": [{"kind": "identity"}]},
            "storage": {"root": str(root), "name": "bench-mda"},
            "microscope": {"buffer_size_mb": 64},
        }
    )
    gate = SafetyGate(cfg.limits, cfg.microscope.lasers, Devices.from_config(cfg.microscope))
    driver = MDADriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=core, gate=gate)
    times: list[float] = []

    def on_frame(*_: Any) -> None:
        times.append(time.time())

    core.mda.events.frameReady.connect(on_frame)
    gc.collect()
    try:
        res = run(cfg, driver=driver, report=False)
    finally:
        core.mda.events.frameReady.disconnect(on_frame)
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    stored = max(f["times"]["stored"] for f in frames)
    axes_ok = [f["axes"] for f in frames] == [
        {str(getattr(k, "value", k)): int(v) for k, v in e.index.items()} for e in seq
    ]
    m = res.metrics
    return {
        "frames": len(times),
        "fps": _rate(times),
        "fps_end_to_end": (len(times) - 1) / (stored - times[0]) if len(times) > 1 else 0.0,
        "stored": m["frames_stored"],
        "skipped": m["frames_skipped"],
        "axes_equal_plan": axes_ok,
        "status": str(res.status),
    }


def throughput(repeats: int, size: int, disk: Path) -> list[dict[str, Any]]:
    rows = []
    core = _demo_core(size)
    try:
        for name, case in CASES.items():
            seq = useq.MDASequence(**case["seq"])
            core.mda.engine.use_hardware_sequencing = case["sequencing"]  # type: ignore[union-attr]
            plain(core, seq)  # warm-up: caches, first allocation of the buffer
            pairs = []
            for _ in range(repeats):
                p = plain(core, seq)
                with tempfile.TemporaryDirectory(dir=disk) as tmp:
                    s = smartscope(core, seq, Path(tmp))
                pairs.append((p, s))
            ratios = [s["fps"] / p["fps"] for p, s in pairs]
            e2e = [s["fps_end_to_end"] / p["fps"] for p, s in pairs]
            best = max(range(repeats), key=lambda k: ratios[k])
            p, s = pairs[best]
            rows.append(
                {
                    "case": name,
                    "size": size,
                    "frames": len(list(seq)),
                    "plain_fps": p["fps"],
                    "smartscope_fps": s["fps"],
                    "ratio_best": ratios[best],
                    "ratio_median": statistics.median(ratios),
                    "end_to_end_best": max(e2e),
                    "end_to_end_median": statistics.median(e2e),
                    "stored": s["stored"],
                    "axes_equal_plan": all(s["axes_equal_plan"] for _, s in pairs),
                    "status": ",".join(sorted({s["status"] for _, s in pairs})),
                    "all": [{"plain": p, "smartscope": s} for p, s in pairs],
                }
            )
    finally:
        core.unloadAllDevices()
        del core
        gc.collect()
    return rows


def throughput_table(rows: list[dict[str, Any]], repeats: int) -> Table:
    t = Table(
        title=f"bench/mda.py — demo config, identity pipeline, every frame to disk; {platform.node()}, "
        f"best and median of {repeats} alternating runs on a shared machine"
    )
    for col in (
        "case",
        "size",
        "frames",
        "pymmcore-plus fps",
        "smartscope fps",
        "ratio best",
        "ratio median",
        "end-to-end best",
        "end-to-end median",
        "indices = list(seq)",
        "status",
    ):
        t.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        t.add_row(
            r["case"],
            f"{r['size']}²",
            str(r["frames"]),
            f"{r['plain_fps']:.0f}",
            f"{r['smartscope_fps']:.0f}",
            f"{r['ratio_best']:.3f}",
            f"{r['ratio_median']:.3f}",
            f"{r['end_to_end_best']:.3f}",
            f"{r['end_to_end_median']:.3f}",
            "yes" if r["axes_equal_plan"] else "NO",
            r["status"],
        )
    return t


def events(seeds: list[int], duration_s: float, n_positions: int, out: Path) -> list[dict[str, Any]]:
    """The multi-position events scenario, slow and triggered, on each seed."""
    from smartscope.config.scenarios import EventsPositionsScenario
    from smartscope.scenarios import events_positions

    rows = []
    for seed in seeds:
        by_mode = {}
        for mode in ("slow", "triggered"):
            params = EventsPositionsScenario(
                mode=mode, seed=seed, duration_s=duration_s, n_positions=n_positions
            )
            res = events_positions.run(params, out / f"seed{seed}")
            by_mode[mode] = res
            s = res.scores
            rows.append(
                {
                    "seed": seed,
                    "mode": mode,
                    **{k: v for k, v in s.items() if k != "positions"},
                    "dose_per_position_mj": [round(r["dose_mj"], 3) for r in s["positions"]],
                    "burst_frames_per_position": [r["burst_frames"] for r in s["positions"]],
                    "status": str(res.loop.status),
                }
            )
        slow_dose = by_mode["slow"].scores["dose_mj"]
        rows[-1]["dose_vs_slow"] = rows[-1]["dose_mj"] / slow_dose if slow_dose else float("nan")
        rows[-2]["dose_vs_slow"] = 1.0
    return rows


def events_table(rows: list[dict[str, Any]], duration_s: float) -> Table:
    t = Table(
        title=f"bench/mda.py --events — the virtual microscope, {duration_s:g} s per run, plan every "
        "1 s per position, bursts of 50 × 100 ms where the classical detector fires"
    )
    for col in (
        "seed",
        "mode",
        "events",
        "caught",
        "fission in burst",
        "delay s (median)",
        "bursts (spurious)",
        "burst frames per position",
        "561 nm mJ per position",
        "dose / slow",
        "dose / fast everywhere",
        "plan off schedule ms (med / max)",
        "same, while others burst (n)",
    ):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            str(r["seed"]),
            r["mode"],
            str(r["n_events"]),
            f"{r['caught_fraction']:.0%}",
            f"{r['fission_in_burst_fraction']:.0%}",
            f"{r['median_delay_s']:.1f}",
            f"{r['n_bursts']} ({r['spurious_bursts']})",
            " ".join(str(b) for b in r["burst_frames_per_position"]),
            " ".join(f"{d:.1f}" for d in r["dose_per_position_mj"]),
            f"{r['dose_vs_slow']:.2f}",
            f"{r['dose_mj'] / r['dose_fast_everywhere_mj']:.2f}",
            f"{r['schedule_dev_all_median_ms']:.0f} / {r['schedule_dev_all_max_ms']:.0f}",
            f"{r['schedule_dev_during_bursts_median_ms']:.0f} / {r['schedule_dev_during_bursts_max_ms']:.0f}"
            f" ({r['plan_frames_during_bursts']})",
        )
    return t


def main(
    repeats: Annotated[int, typer.Option(help="alternating runs per case")] = 5,
    size: Annotated[int, typer.Option(help="camera frame edge (px)")] = 256,
    disk: Annotated[Path | None, typer.Option(help="where smartscope writes its runs (default: tmp)")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON of every run (and the tables as .txt)")] = None,
    events_seeds: Annotated[
        list[int] | None, typer.Option("--events", help="run the events scenario on these seeds instead")
    ] = None,
    duration_s: Annotated[float, typer.Option(help="events: seconds per run")] = 60.0,
    positions: Annotated[int, typer.Option(help="events: stage positions")] = 4,
) -> None:
    root = disk or Path(tempfile.gettempdir())
    if events_seeds:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            rows = events(events_seeds, duration_s, positions, Path(tmp))
        table = events_table(rows, duration_s)
        key = "events"
    else:
        rows = throughput(repeats, size, root)
        table = throughput_table(rows, repeats)
        key = "throughput"
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({key: rows}, indent=1, default=str), encoding="utf-8")
        with out.with_suffix(".txt").open("w", encoding="utf-8") as fh:
            Console(file=fh, width=260).print(table)


if __name__ == "__main__":
    typer.run(main)
