"""The frame writer alone against the disk's physical limit: 2048² sCMOS frames.

Every case writes the same frames (``--size``², uint16, ``--frames`` of them, a few
distinct random frames cycled) into ``--dir`` and is timed from the first frame to the
last byte synced:

* **dd oflag=direct** (``bs=8M``, ``conv=fsync``, from /dev/zero): the disk's own
  large-write bandwidth;
* **O_DIRECT pwritev 32 MiB**: the same bytes from one prefilled aligned buffer, written
  back to back (dd reads /dev/zero between writes, which here costs it a good part of its
  rate); the better of the two is the limit of the ratio column;
* **smartscope direct / buffered**: the whole writer path a run uses (``RunFolder`` +
  ``FrameWriter``: the bounded queue, batches, ``frames.jsonl``), frames in ordinary numpy
  memory as pymmcore-plus pops them, ``storage.io`` forced to each mode; timed until every
  frame is stored, listed and synced (the OME header written at close is in the note);
* **smartscope ome-zarr**: the same path with ``storage.format: ome-zarr``;
* **tifffile**: ``TiffWriter(bigtiff=True)``, one page per frame;
* **tensorstore**: zarr v3, one chunk per frame, up to 8 writes in flight;
* **acquire-zarr**: ``ZarrStream``, one chunk per frame (its own thread pool);
* **ome-writers/<backend>**: ome-writers' stream on each backend, as smartscope uses it.

Columns: MB/s of pixels (best and median of ``--repeats`` rounds, the cases alternating
within each round), the ratio of the best to the limit's best, the slowest single write call
(smartscope: one ``pwritev``; dd: not seen; the libraries: one frame's write), and CPU
seconds per GB written: the process's own (user + system; dd: the child's) and the whole
machine's (busy time of all cores from /proc/stat, which also counts the kernel's
write-back threads; meaningful only on a quiet machine).

    python bench/storage.py --dir /var/tmp --frames 400 --repeats 3 --out bench/results/storage/storage.json
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from smartscope.frame import Frame
from smartscope.state import DriverState
from smartscope.storage import FrameWriter, RunFolder, sync_tree
from smartscope.storage.direct import aligned_empty, direct_io_refusal, open_file, round_up

console = Console(width=200)


@dataclass
class Result:
    case: str
    mb_s: float
    worst_ms: float | None
    cpu_s_per_gb: float
    machine_cpu_s_per_gb: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _machine_busy_s() -> float:
    """Busy CPU seconds of all cores since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / ticks


@contextlib.contextmanager
def _clock() -> Iterator[dict[str, float]]:
    """Wall, process CPU, children's CPU and machine busy time of the block."""
    out: dict[str, float] = {}
    wall, cpu, busy = time.perf_counter(), time.process_time(), _machine_busy_s()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield out
    k2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["wall_s"] = time.perf_counter() - wall
    out["cpu_s"] = time.process_time() - cpu
    out["child_cpu_s"] = (k2.ru_utime - kids.ru_utime) + (k2.ru_stime - kids.ru_stime)
    out["machine_s"] = _machine_busy_s() - busy


def _result(
    case: str, nbytes: int, clock: dict[str, float], worst_s: float | None, child: bool = False
) -> Result:
    gb = nbytes / 1e9
    cpu = clock["child_cpu_s"] if child else clock["cpu_s"]
    return Result(
        case,
        nbytes / clock["wall_s"] / 1e6,
        None if worst_s is None else worst_s * 1e3,
        cpu / gb,
        clock["machine_s"] / gb,
    )


# ------------------------------------------------------------------------------ cases


def case_dd(folder: Path, frames: list[np.ndarray], n: int) -> Result:
    nbytes = n * frames[0].nbytes
    count = -(-nbytes // (8 << 20))
    out = folder / "dd.bin"
    with _clock() as c:
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={out}", "bs=8M", f"count={count}", "oflag=direct", "conv=fsync"],
            check=True,
            capture_output=True,
        )
    return _result("dd oflag=direct bs=8M", count * (8 << 20), c, None, child=True)


def case_pwritev(folder: Path, frames: list[np.ndarray], n: int) -> Result:
    """The same bytes from one prefilled aligned buffer, 32 MiB ``O_DIRECT`` writes back to
    back: what the disk takes from a process that does nothing else."""
    block = 32 << 20
    nbytes = n * frames[0].nbytes
    buf = aligned_empty(block)
    buf[:] = np.frombuffer(frames[0].tobytes() * (block // frames[0].nbytes + 1), np.uint8)[:block]
    f = open_file(folder / "pwritev.bin", direct=True)
    worst = 0.0
    with _clock() as c:
        for off in range(0, round_up(nbytes, block), block):
            t = time.perf_counter()
            f.writev([buf.data], off)
            worst = max(worst, time.perf_counter() - t)
        f.sync()
    f.close()
    return _result("O_DIRECT pwritev 32 MiB", round_up(nbytes, block), c, worst)


def _frame(i: int, image: np.ndarray) -> Frame:
    return Frame(i, image, camera_time_s=time.time(), state=DriverState(exposure_ms=10.0))


def _smartscope(folder: Path, frames: list[np.ndarray], n: int, io: str, fmt: str) -> Result:
    """Timed until every frame is stored, listed and synced; the close (the OME header,
    built from every plane: about 1 ms a plane) is timed apart, after the run's frames."""
    run = RunFolder(folder, f"bench-{io}-{fmt}", fmt=fmt, io=io)
    done = threading.Event()
    stored = [0]

    def on_stored(batch: Any) -> None:
        stored[0] += len(batch)
        if stored[0] >= n:
            done.set()

    writer = FrameWriter(run, 1024 << 20, "wait", on_stored=on_stored)
    raw = run.path / ("raw.ome.tif" if fmt == "ome-tiff" else "raw.ome.zarr")
    with _clock() as c:
        for i in range(n):
            writer.put_raw(_frame(i, frames[i % len(frames)]))
        while not done.wait(0.01) and writer.error is None:
            pass
        sync_tree(raw)
    t = time.perf_counter()
    writer.close()
    run.close()
    close_s = time.perf_counter() - t
    if writer.error:
        raise RuntimeError(writer.error)
    stats = run.raw_write_stats
    name = f"smartscope {fmt}" + (f", {run.io}" if fmt == "ome-tiff" else "")
    r = _result(name, n * frames[0].nbytes, c, stats.worst_s if stats.calls else None)
    r.note = f"close {close_s:.1f} s"
    r.extra = {
        "io": run.io,
        "write_calls": stats.calls,
        "copied_mb": stats.copied_bytes / 1e6,
        "close_s": close_s,
    }
    return r


def case_tifffile(folder: Path, frames: list[np.ndarray], n: int) -> Result:
    import tifffile

    path = folder / "tifffile.ome.tif"
    worst = 0.0
    with _clock() as c:
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            for i in range(n):
                t = time.perf_counter()
                tw.write(frames[i % len(frames)], contiguous=False)
                worst = max(worst, time.perf_counter() - t)
        sync_tree(path)
    return _result("tifffile (BigTIFF)", n * frames[0].nbytes, c, worst)


def case_tensorstore(folder: Path, frames: list[np.ndarray], n: int) -> Result:
    import tensorstore as ts

    h, w = frames[0].shape
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(folder / "ts.zarr")},
        "metadata": {
            "shape": [n, h, w],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, h, w]}},
            "data_type": "uint16",
        },
        "create": True,
        "delete_existing": True,
    }
    worst = 0.0
    with _clock() as c:
        arr = ts.open(spec).result()
        pending: list[tuple[float, Any]] = []
        for i in range(n):
            pending.append((time.perf_counter(), arr[i].write(frames[i % len(frames)])))
            while len(pending) >= 8:
                t0, fut = pending.pop(0)
                fut.result()
                worst = max(worst, time.perf_counter() - t0)
        for t0, fut in pending:
            fut.result()
            worst = max(worst, time.perf_counter() - t0)
        sync_tree(folder / "ts.zarr")
    return _result("tensorstore (zarr3)", n * frames[0].nbytes, c, worst)


def case_acquire_zarr(folder: Path, frames: list[np.ndarray], n: int) -> Result:
    import acquire_zarr as az

    h, w = frames[0].shape
    settings = az.StreamSettings(
        store_path=str(folder / "az.zarr"),
        arrays=[
            az.ArraySettings(
                dimensions=[
                    az.Dimension(
                        name=name, kind=kind, array_size_px=px, chunk_size_px=max(1, px), shard_size_chunks=1
                    )
                    for name, kind, px in (
                        ("t", az.DimensionType.TIME, 0),  # grows as frames come, a chunk per frame
                        ("y", az.DimensionType.SPACE, h),
                        ("x", az.DimensionType.SPACE, w),
                    )
                ],
                data_type=np.uint16,
            )
        ],
        version=az.ZarrVersion.V3,
    )
    worst = 0.0
    with _clock() as c:
        stream = az.ZarrStream(settings)
        for i in range(n):
            t = time.perf_counter()
            stream.append(frames[i % len(frames)])
            worst = max(worst, time.perf_counter() - t)
        stream.close()
        del stream
        gc.collect()
        sync_tree(folder / "az.zarr")
    return _result("acquire-zarr", n * frames[0].nbytes, c, worst)


def case_ome_writers(folder: Path, frames: list[np.ndarray], n: int, backend: str) -> Result:
    from ome_writers import AcquisitionSettings, Dimension, OmeZarrFormat, create_stream

    h, w = frames[0].shape
    dims = (
        Dimension(name="t", count=None, type="time"),
        Dimension(name="y", count=h, type="space"),
        Dimension(name="x", count=w, type="space"),
    )
    root = folder / f"ow-{backend}.ome.zarr"
    settings = AcquisitionSettings(
        root_path=str(root), dimensions=dims, dtype="uint16", format=OmeZarrFormat(backend=backend)
    )
    worst = 0.0
    with _clock() as c:
        stream = create_stream(settings)
        for i in range(n):
            t = time.perf_counter()
            stream.append(frames[i % len(frames)])
            worst = max(worst, time.perf_counter() - t)
        stream.close()
        sync_tree(root)
    return _result(f"ome-writers/{backend}", n * frames[0].nbytes, c, worst)


CASES: dict[str, Callable[[Path, list[np.ndarray], int], Result]] = {
    "dd": case_dd,
    "pwritev": case_pwritev,
    "direct": lambda d, f, n: _smartscope(d, f, n, "direct", "ome-tiff"),
    "buffered": lambda d, f, n: _smartscope(d, f, n, "buffered", "ome-tiff"),
    "zarr": lambda d, f, n: _smartscope(d, f, n, "auto", "ome-zarr"),
    "tifffile": case_tifffile,
    "tensorstore": case_tensorstore,
    "acquire-zarr": case_acquire_zarr,
    "ome-writers/tensorstore": lambda d, f, n: case_ome_writers(d, f, n, "tensorstore"),
    "ome-writers/acquire-zarr": lambda d, f, n: case_ome_writers(d, f, n, "acquire-zarr"),
}


def main(
    dir: Annotated[Path | None, typer.Option(help="a folder on the disk to measure (default: temp)")] = None,
    size: Annotated[int, typer.Option(help="frame edge in pixels")] = 2048,
    frames: Annotated[int, typer.Option(help="frames per case (each frame size²×2 bytes)")] = 400,
    repeats: Annotated[int, typer.Option(help="rounds; the cases alternate within each")] = 3,
    only: Annotated[list[str] | None, typer.Option(help=f"cases to run (of {', '.join(CASES)})")] = None,
    out: Annotated[Path | None, typer.Option(help="also write the rows as JSON here")] = None,
) -> None:
    dir = dir or Path(tempfile.gettempdir())
    cases = only or list(CASES)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise typer.BadParameter(f"unknown case(s) {unknown}; have {list(CASES)}")
    dir.mkdir(parents=True, exist_ok=True)
    refusal = direct_io_refusal(dir)
    if refusal is not None:
        cases = [c for c in cases if c not in ("direct", "dd", "pwritev")]
        console.print(f"{dir} refuses direct I/O ({refusal}): the direct and dd cases are left out")
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4096, (size, size), dtype=np.uint16) for _ in range(4)]
    need = frames * pool[0].nbytes * 1.1
    free = shutil.disk_usage(dir).free
    if need > free * 0.8:
        raise typer.BadParameter(
            f"--frames {frames} needs {need / 1e9:.1f} GB; {dir} has {free / 1e9:.1f} GB free"
        )
    runs: dict[str, list[Result]] = {c: [] for c in cases}
    for r in range(repeats):
        for case in cases:
            with tempfile.TemporaryDirectory(dir=dir) as tmp:
                gc.collect()
                try:
                    res = CASES[case](Path(tmp), pool, frames)
                except Exception as exc:  # a library that fails here is reported, not fatal
                    res = Result(
                        case, 0.0, None, float("nan"), float("nan"), note=f"{type(exc).__name__}: {exc}"[:80]
                    )
                runs[case].append(res)
                console.print(f"round {r + 1}/{repeats} {res.case}: {res.mb_s:.0f} MB/s {res.note}")
    # the physical limit: the better of dd and plain O_DIRECT writes, in the same rounds
    refs = [x.mb_s for c in ("dd", "pwritev") for x in runs.get(c, [])]
    dd_best = max(refs, default=float("nan"))
    load = os.getloadavg()
    table = Table(
        title=f"bench/storage.py — {frames} frames of {size}² uint16 "
        f"({frames * pool[0].nbytes / 1e9:.1f} GB) to {dir}; "
        f"{platform.node()}, {os.cpu_count()} cores, load {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
        f"best / median of {repeats}"
    )
    for col in (
        "writer",
        "MB/s best",
        "MB/s median",
        "÷ limit (best)",
        "worst write ms",
        "CPU s/GB (process)",
        "CPU s/GB (machine)",
        "note",
    ):
        table.add_column(col, justify="right" if col not in ("writer", "note") else "left")
    rows = []
    for case in cases:
        rs = runs[case]
        best = max(rs, key=lambda x: x.mb_s)
        med = statistics.median(x.mb_s for x in rs)
        worst = max((x.worst_ms for x in rs if x.worst_ms is not None), default=None)
        cpu = statistics.median(x.cpu_s_per_gb for x in rs)
        mach = statistics.median(x.machine_cpu_s_per_gb for x in rs)
        note = "; ".join(sorted({x.note for x in rs if x.note}))
        table.add_row(
            best.case,
            f"{best.mb_s:.0f}",
            f"{med:.0f}",
            f"{best.mb_s / dd_best:.2f}" if dd_best == dd_best else "–",
            "–" if worst is None else f"{worst:.1f}",
            f"{cpu:.2f}",
            f"{mach:.2f}",
            note,
        )
        rows.append(
            {
                "case": best.case,
                "mb_s_best": best.mb_s,
                "mb_s_median": med,
                "ratio_to_limit": best.mb_s / dd_best,
                "worst_write_ms": worst,
                "cpu_s_per_gb": cpu,
                "machine_cpu_s_per_gb": mach,
                "rounds": [x.__dict__ for x in rs],
            }
        )
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {"frames": frames, "size": size, "dir": str(dir), "load": load, "rows": rows}, indent=2
            )
        )
        with console.capture() as cap:
            console.print(table)
        out.with_suffix(".txt").write_text(cap.get())


if __name__ == "__main__":
    typer.run(main)
