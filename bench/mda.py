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

**Events** (the virtual microscope, once it has an XY stage): see ``--events``.

    python bench/mda.py --repeats 5 --out bench/results/mda/mda.json
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

console = Console(width=200)


def _demo_core(size: int) -> CMMCorePlus:
    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([mm_test_adapters.device_adapter_path()])
    core.loadSystemConfiguration(str(Path(mm_test_adapters.device_adapter_path()) / "MMConfig_demo.cfg"))
    core.setProperty("Camera", "OnCameraCCDXSize", size)
    core.setProperty("Camera", "OnCameraCCDYSize", size)
    core.setProperty("Z", "UseSequences", "Yes")
    core.setCircularBufferMemoryFootprint(64)
    return core


CASES: dict[str, dict[str, Any]] = {
    "4 pos × 5 z × 2 ch × 4 t, z sequenced": {
        "sequencing": True,
        "seq": dict(
            stage_positions=[(0, 0, 0), (100, 0, 0), (0, 100, 0), (100, 100, 0)],
            z_plan={"range": 4, "step": 1},
            channels=[{"config": "DAPI", "exposure": 5}, {"config": "FITC", "exposure": 5}],
            time_plan={"interval": 0, "loops": 4},
        ),
    },
    "same, one snap per event": {
        "sequencing": False,
        "seq": dict(
            stage_positions=[(0, 0, 0), (100, 0, 0), (0, 100, 0), (100, 100, 0)],
            z_plan={"range": 4, "step": 1},
            channels=[{"config": "DAPI", "exposure": 5}, {"config": "FITC", "exposure": 5}],
            time_plan={"interval": 0, "loops": 4},
        ),
    },
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


def main(
    repeats: Annotated[int, typer.Option(help="alternating runs per case")] = 5,
    size: Annotated[int, typer.Option(help="camera frame edge (px)")] = 256,
    disk: Annotated[Path | None, typer.Option(help="where smartscope writes its runs (default: tmp)")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON of every run")] = None,
) -> None:
    rows = throughput(repeats, size, disk or Path(tempfile.gettempdir()))
    console.print(throughput_table(rows, repeats))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"throughput": rows}, indent=1, default=str), encoding="utf-8")
        with out.with_suffix(".txt").open("w", encoding="utf-8") as fh:
            Console(file=fh, width=200).print(throughput_table(rows, repeats))


if __name__ == "__main__":
    typer.run(main)
