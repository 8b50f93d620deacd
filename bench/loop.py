"""Loop overhead: raw pymmcore-plus sequence acquisition vs smartscope, same camera, same run.

For each frame size the DemoCamera is set up once (FastImage, fixed exposure) and then:

* **raw**: ``startSequenceAcquisition`` + ``popNextImageAndMD`` as fast as frames come,
  nothing else: the ceiling for any Python consumer of that camera;
* **smartscope**: the full loop with an identity pipeline: every frame to OME-TIFF on
  disk, frames.jsonl, the newest frame to analysis, watchdog running.

Rate = (frames − 1) / (time the last frame was taken off the buffer − time the first was),
for both. Latency = camera timestamp → decision made, from the loop's own record.

    python bench/loop.py                 # 512² and 2048², to disk and to tmpfs, ~4 s each
"""

from __future__ import annotations

import gc
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import mm_test_adapters
import typer
from pymmcore_plus import CMMCorePlus
from rich.console import Console
from rich.table import Table

from smartscope.config import validate_config
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.runner import run
from smartscope.storage import read_jsonl

console = Console(width=200)


def _core(size: int, exposure_ms: float) -> CMMCorePlus:
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


def smartscope_rate(core: CMMCorePlus, n: int, exposure_ms: float, root: Path) -> dict[str, Any]:
    cfg = validate_config(
        {
            "acquisition": {"exposure_ms": exposure_ms, "n_frames": n},
            "pipeline": {"stages": [{"kind": "identity"}]},
            "storage": {"root": str(root), "name": "bench"},
        }
    )
    driver = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=core)
    res = run(cfg, driver=driver, report=False)
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    deq = [f["times"]["dequeued"] for f in frames]
    return {
        "fps": (len(deq) - 1) / (deq[-1] - deq[0]),
        "stored": res.metrics["frames_stored"],
        "skipped": res.metrics["frames_skipped"],
        "analysed": res.metrics["frames_analysed"],
        "p50_ms": res.metrics["latency_decision"]["p50_ms"],
        "p99_ms": res.metrics["latency_decision"]["p99_ms"],
        "status": res.status,
    }


CASES = [  # (size, exposure_ms); 10 ms at 2048² is the sCMOS reference (100 fps)
    (512, 1.0),
    (2048, 1.0),
    (2048, 10.0),
]


def disk_mb_s(root: Path, mb: int = 800) -> float:
    """Sustained write rate of the storage root, measured like the loop writes (8 MiB chunks)."""
    chunk = b"\0" * (8 << 20)
    path = root / "disk_probe.bin"
    t = time.perf_counter()
    with path.open("wb") as fh:
        for _ in range(mb // 8):
            fh.write(chunk)
            fh.flush()
        os.fsync(fh.fileno())
    dt = time.perf_counter() - t
    path.unlink()
    return mb / dt


def main(
    seconds: Annotated[float, typer.Option(help="target duration per measurement")] = 4.0,
    disk: Annotated[Path | None, typer.Option(help="on-disk storage root (default: the temp dir)")] = None,
    tmpfs: Annotated[Path, typer.Option(help="in-memory storage root (isolates loop overhead)")] = Path(
        "/dev/shm"
    ),
    out: Annotated[Path | None, typer.Option(help="also write the rows as JSON here")] = None,
) -> None:
    rows = []
    disk = disk or Path(tempfile.gettempdir())
    roots = [("disk", disk)] + ([("tmpfs", tmpfs)] if tmpfs.is_dir() else [])
    for size, exposure_ms in CASES:
        core = _core(size, exposure_ms)
        probe = raw_rate(core, 50)
        n = max(100, int(probe * seconds))
        raw = raw_rate(core, n)
        for label, root in roots:
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                sm = smartscope_rate(core, n, exposure_ms, Path(tmp))
            rows.append(
                {
                    "size": size,
                    "exposure_ms": exposure_ms,
                    "storage": label,
                    "frames": n,
                    "raw_fps": raw,
                    **sm,
                    "ratio": sm["fps"] / raw,
                    "mb_s": sm["fps"] * size * size * 2 / 1e6,
                }
            )
        core.unloadAllDevices()
        del core
        gc.collect()
    with tempfile.TemporaryDirectory(dir=disk) as tmp:
        disk_rate = disk_mb_s(Path(tmp))

    table = Table(
        title=f"bench/loop.py — DemoCamera (FastImage), identity pipeline, {platform.node()}, "
        f"{os.cpu_count()} cores; disk sustains {disk_rate:.0f} MB/s"
    )
    for col in (
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
        "status",
    ):
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
            r["status"],
        )
    console.print(table)
    if out is not None:
        out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    typer.run(main)
