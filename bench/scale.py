"""Scale-out bench: ``smartscope localize`` and ``smartscope apply`` on 1 and 2 local Dask
workers against the same command in one process, and a projection to N workers.

Three tables (Markdown, also written to ``--out``):

1. **Measured, end to end.** Each command runs as a subprocess, exactly as typed by a user,
   on the same files: ``--cluster none`` (one plain process), ``--cluster local:1``,
   ``--cluster local:2``, and as the machine's own ceiling for two processes, two plain
   processes side by side, each on half of the frames. Frames per second = frames / wall
   time of the whole command (start-up, cluster start, merge included); CPU ratio = frames
   per CPU second of all the command's processes, Dask with 1 worker / one plain process
   (less sensitive than wall time to other jobs on the machine). Goal: Dask with 1 worker
   >= 0.9 of one plain process. Best of and median over ``--repeats``, the order of the
   runs interleaved.
2. **Decomposition** (in this process, ``smartscope.batch.jobs.execute`` on a LocalCluster
   of 1 worker): cluster start, warm-up (submit to the first result beyond one chunk: the
   worker's imports, engine open), median chunk time (read + compute + part write),
   per-chunk overhead (median gap between two completions not spent in a chunk:
   scheduler, transfers, task start) and the merge.
3. **Projection** to N workers for an archive of ``--archive-frames`` frames in stacks like
   the bench's: ``T(N) = start + warm-up + max(W / N, K * o) + m`` with ``W = K (c + o) + S m``,
   K chunks, S stacks, c the median chunk time, o the per-chunk overhead and m one stack's
   merge (done on a worker, stacks in parallel; the last one not overlapped). Assumptions:
   each worker as fast as this machine's one worker with its own cores (no sharing), the
   shared file system delivers the read and write rates shown, the scheduler handles one
   chunk's overhead at a time (the ``K * o`` bound: all of o counted as the scheduler's),
   work balances evenly over the workers; an o measured below 1 ms counts as 1 ms.

Run: ``python bench/scale.py`` (defaults: 3000 SMLM frames of 256² for localize, 600
frames of 256² for the N2V denoiser, 3 repeats).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SMARTSCOPE = [sys.executable, "-m", "smartscope.cli"]
O_FLOOR_MS = 1.0  # per-chunk overhead below this is below what the client's clock resolves


def make_data(work: Path, frames: int, apply_frames: int, size: int) -> dict[str, Path]:
    """The SMLM stack and the fluorescence stack (cached in ``work``)."""
    from smartscope.simulators.datasets import denoise_pairs, smlm_frames

    work.mkdir(parents=True, exist_ok=True)
    smlm = work / f"smlm_{frames}x{size}.tif"
    if not smlm.is_file():
        with tifffile.TiffWriter(smlm, bigtiff=True) as tw:
            done = 0
            seed = 0
            while done < frames:  # in blocks: memory stays small
                n = min(500, frames - done)
                block, _, _ = smlm_frames(n, (size, size), seed=seed)
                for f in block:
                    tw.write(f, contiguous=True)
                done += n
                seed += 1
    cells = work / f"cells_{apply_frames}x{size}.ome.tif"
    if not cells.is_file():
        noisy, _ = denoise_pairs(apply_frames, (size, size), seed=7)
        tifffile.imwrite(
            cells,
            noisy.astype(np.uint16),
            ome=True,
            photometric="minisblack",
            metadata={"axes": "TYX", "PhysicalSizeX": 0.1, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.1},
        )
    for path in (smlm, cells):  # each half, for two plain processes side by side
        for k in (0, 1):
            half = _half(path, k)
            if not half.is_file():
                with tifffile.TiffFile(path) as tf:
                    n = len(tf.series[0].pages)
                    stop = n // 2 if k == 0 else n
                    pages = tf.series[0].asarray(key=slice(k * (n // 2), stop))
                tifffile.imwrite(half, pages, photometric="minisblack")
    return {"localize": smlm, "apply": cells}


def _half(path: Path, k: int) -> Path:
    return path.with_name(f"half{k}_{path.name.split('.')[0]}.tif")


def command(kind: str, src: Path, chunk: int) -> list[str]:
    if kind == "localize":
        return ["localize", str(src), "--chunk-frames", str(chunk)]
    bundle = ROOT / "models" / "bundles" / "denoise-n2v-lowlight"
    return ["apply", str(bundle), str(src), "--chunk-frames", str(chunk)]


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_cli(runs: list[tuple[list[str], Path, str]]) -> tuple[float, float]:
    """Wall time and CPU time (every process of the command: client, scheduler, workers) of
    one or more whole commands started together, each a fresh process as a user runs it."""
    import shutil

    for _, out, _ in runs:
        shutil.rmtree(out, ignore_errors=True)
    cpu0 = _cpu_children()
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*SMARTSCOPE, *args, "--out", str(out), "--cluster", cluster],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, out, cluster in runs
    ]
    errs = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    for p, err, (args, _, cluster) in zip(procs, errs, runs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} --cluster {cluster} failed:\n{err[-2000:]}")
    return wall, _cpu_children() - cpu0


def decompose(kind: str, data: dict[str, Path], work: Path, chunk: int) -> dict[str, float]:
    """Cluster start, chunk times, per-chunk overhead and merge of one run on 1 local worker."""
    from smartscope.batch.cluster import ClusterSpec, connect
    from smartscope.batch.jobs import ChunkDone, ChunkOutcome, PartStore, execute
    from smartscope.batch.stacks import resolve_inputs

    stacks = resolve_inputs([data[kind]])
    out = work / f"decompose_{kind}"
    parts = PartStore(out, {"bench": kind, "t": time.time()})
    job: Any
    if kind == "localize":
        from smartscope.models.smlm.batch import LocalizeJob, output_folders
        from smartscope.models.smlm.stage import SMLMStageConfig

        job = LocalizeJob(
            tuple(stacks), (SMLMStageConfig(),), output_folders(stacks, out), parts, cpu_threads=0
        )
    else:
        from smartscope.batch.apply import ApplyJob, select_channels
        from smartscope.engines.bundle import load_bundle

        bundle = ROOT / "models" / "bundles" / "denoise-n2v-lowlight"
        man = load_bundle(bundle).manifest
        job = ApplyJob(
            bundle,
            man.onnx_sha256,
            "auto",
            None,
            tuple(stacks),
            tuple(select_channels(s, man.inputs[0].channels, man.name) for s in stacks),
            tuple((t.name, tuple(t.channels)) for t in man.outputs),
            out,
            parts,
            cpu_threads=0,
        )
    t0 = time.perf_counter()
    with connect(ClusterSpec("local", 1)) as client:
        started = time.perf_counter() - t0
        done: list[tuple[float, ChunkDone]] = []

        def note(o: ChunkOutcome) -> None:
            if isinstance(o, ChunkDone):
                done.append((time.perf_counter(), o))

        t1 = time.perf_counter()
        report = execute(job, client=client, chunk_frames=chunk, on_outcome=note)
        t2 = time.perf_counter()
    if report.failures:
        raise RuntimeError(report.failures[0].describe())
    secs = [o.seconds for _, o in done]
    ends = [t for t, _ in done]
    c = statistics.median(secs[1:] or secs)
    # one worker runs chunks one after another: the gap between two completions that is not
    # spent inside the chunk is the per-chunk overhead (scheduler, transfers, task start)
    gaps = [ends[i] - ends[i - 1] - secs[i] for i in range(1, len(secs))]
    frames = stacks[0].n_frames
    return {
        "frames": frames,
        "chunks": len(secs),
        "chunk_frames": chunk,
        "start_s": started,
        "chunk_s": c,
        "frame_ms": 1e3 * c / chunk,
        "warmup_s": (ends[0] - t1) - c,  # submit to first result, beyond one chunk: imports, engine
        "overhead_per_chunk_ms": 1e3 * max(statistics.median(gaps), 0.0) if gaps else 0.0,
        "merge_s": t2 - ends[-1],
        "bytes_per_frame": stacks[0].height * stacks[0].width * 2,
        "out_bytes_per_frame": stacks[0].height * stacks[0].width * 4 if kind == "apply" else 0,
    }


def project(d: dict[str, float], archive_frames: int, workers: list[int]) -> list[dict[str, float]]:
    """T(N) = start + warm-up + max(W / N, K * o) + m, W = K (c + o) + S m: K chunks, S stacks
    like the bench's (each merged once, on some worker), the last merge not overlapped."""
    k = math.ceil(archive_frames / d["chunk_frames"])
    n_stacks = math.ceil(archive_frames / d["frames"])
    c, o, m = d["chunk_s"], max(d["overhead_per_chunk_ms"], O_FLOOR_MS) / 1e3, d["merge_s"]
    work = k * (c + o) + n_stacks * m
    rows = []
    t1 = None
    for n in workers:
        t = d["start_s"] + d["warmup_s"] + max(work / n, k * o) + m
        t1 = t1 or t
        fps = archive_frames / t
        rows.append(
            {
                "workers": n,
                "hours": t / 3600,
                "fps": fps,
                "speedup": t1 / t,
                "read_mb_s": fps * d["bytes_per_frame"] / 1e6,
                "write_mb_s": fps * d["out_bytes_per_frame"] / 1e6,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=3000, help="SMLM frames for localize")
    ap.add_argument("--apply-frames", type=int, default=600, help="frames for apply (N2V denoiser)")
    ap.add_argument("--size", type=int, default=256, help="frame edge, px")
    ap.add_argument("--chunk-frames", type=int, default=250, help="localize chunk")
    ap.add_argument("--apply-chunk-frames", type=int, default=50, help="apply chunk")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--archive-frames", type=int, default=10_000_000, help="projection: frames to process")
    ap.add_argument("--work", type=Path, default=Path("/tmp/smartscope-bench-scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale")
    ap.add_argument("--only", choices=["localize", "apply"], default=None)
    ap.add_argument(
        "--from-json", type=Path, default=None, help="print the tables again from a scale.json (no runs)"
    )
    args = ap.parse_args()

    kinds = [args.only] if args.only else ["localize", "apply"]
    chunk = {"localize": args.chunk_frames, "apply": args.apply_chunk_frames}
    n_frames = {"localize": args.frames, "apply": args.apply_frames}
    modes = ("none", "local:1", "2 plain", "local:2")
    walls: dict[str, dict[str, list[float]]] = {k: {m: [] for m in modes} for k in kinds}
    cpus: dict[str, dict[str, list[float]]] = {k: {m: [] for m in modes} for k in kinds}
    loads: list[float] = []
    argv = sys.argv[1:]
    if args.from_json is not None:
        raw = json.loads(args.from_json.read_text())
        walls, cpus, loads, n_frames, argv = (
            raw["walls_s"],
            raw["cpu_s"],
            raw["load_1min"],
            raw["frames"],
            raw["argv"],
        )
        decomp = raw["decomposition"]
        kinds = list(decomp)
        args.repeats = len(next(iter(walls.values()))["none"])
    else:
        data = make_data(args.work, args.frames, args.apply_frames, args.size)
    for r in range(args.repeats if args.from_json is None else 0):
        for kind in kinds:
            for mode in modes:
                out = args.work / f"out_{kind}"
                if mode == "2 plain":
                    runs = [
                        (command(kind, _half(data[kind], h), chunk[kind]), out / f"half{h}", "none")
                        for h in (0, 1)
                    ]
                else:
                    runs = [(command(kind, data[kind], chunk[kind]), out, mode)]
                loads.append(os.getloadavg()[0])
                w, c = run_cli(runs)
                walls[kind][mode].append(w)
                cpus[kind][mode].append(c)
                print(
                    f"repeat {r + 1}: {kind} {mode}: {w:.1f} s wall, {c:.1f} s CPU (load {loads[-1]:.1f})",
                    file=sys.stderr,
                    flush=True,
                )

    lines = [
        f"# smartscope scale-out bench ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"`python bench/scale.py {' '.join(argv)}` on {_machine()}; 1-min load average "
        f"when the runs started: median {statistics.median(loads) if loads else 0:.1f}, "
        f"max {max(loads) if loads else 0:.1f} (other jobs shared the cores)",
        *(
            [
                "(tables printed again from that run's numbers: "
                f"`python bench/scale.py --from-json {args.from_json}`)"
            ]
            if args.from_json is not None
            else []
        ),
        "",
        f"## 1. Measured, end to end (whole command, frames / wall s; best of / median of {args.repeats})",
        "",
        "| command | frames | one process | Dask, 1 worker | ratio (goal >= 0.9) | CPU ratio "
        "| 2 plain processes | Dask, 2 workers | Dask 2 workers / 2 plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(v: list[float], digits: int = 1) -> str:
        return f"{max(v):.{digits}f} / {statistics.median(v):.{digits}f}"

    for kind in kinds if args.repeats else []:
        n = n_frames[kind]
        fps = {m: [n / w for w in ws] for m, ws in walls[kind].items()}
        ratio = [a / b for a, b in zip(fps["local:1"], fps["none"], strict=True)]
        cpu_ratio = [a / b for a, b in zip(cpus[kind]["none"], cpus[kind]["local:1"], strict=True)]
        two = [a / b for a, b in zip(fps["local:2"], fps["2 plain"], strict=True)]
        label = {
            "localize": f"localize (classical MLE), {args.size}², chunks of {args.chunk_frames}",
            "apply": f"apply denoise-n2v-lowlight, {args.size}², chunks of {args.apply_chunk_frames}",
        }[kind]
        lines.append(
            f"| {label} | {n} | {cell(fps['none'])} | {cell(fps['local:1'])} | {cell(ratio, 2)} | "
            f"{cell(cpu_ratio, 2)} | {cell(fps['2 plain'])} | {cell(fps['local:2'])} | {cell(two, 2)} |"
        )
    if args.from_json is None:
        decomp = {k: decompose(k, data, args.work, chunk[k]) for k in kinds}
    lines += [
        "",
        "## 2. Decomposition (one run, LocalCluster of 1 worker, in process)",
        "",
        "| command | chunks × frames | cluster start s | warm-up s | median chunk s | ms / frame "
        "| overhead / chunk ms | merge s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, d in decomp.items():
        lines.append(
            f"| {kind} | {d['chunks']} × {d['chunk_frames']} | {d['start_s']:.2f} | {d['warmup_s']:.2f} | "
            f"{d['chunk_s']:.3f} | {d['frame_ms']:.2f} | {d['overhead_per_chunk_ms']:.1f} | "
            f"{d['merge_s']:.2f} |"
        )
    workers = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    lines += [
        "",
        f"## 3. Projection for {args.archive_frames:,} frames (assumptions in the bench's docstring)",
        "",
    ]
    for kind, d in decomp.items():
        lines += [
            f"**{kind}** (c = {d['chunk_s']:.3f} s per chunk of {d['chunk_frames']}, "
            f"o = {max(d['overhead_per_chunk_ms'], O_FLOOR_MS):.1f} ms per chunk, measured "
            f"{d['overhead_per_chunk_ms']:.1f}, at least {O_FLOOR_MS:.0f} ms counted)",
            "",
            "| workers | hours | frames/s | speed-up | read MB/s | write MB/s |",
            "|---|---|---|---|---|---|",
        ]
        for row in project(d, args.archive_frames, workers):
            lines.append(
                f"| {row['workers']} | {row['hours']:.2f} | {row['fps']:.0f} | {row['speedup']:.1f} | "
                f"{row['read_mb_s']:.0f} | {row['write_mb_s']:.0f} |"
            )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.md").write_text(text + "\n")
    raw = {
        "walls_s": walls,
        "cpu_s": cpus,
        "load_1min": loads,
        "frames": n_frames,
        "decomposition": decomp,
        "argv": argv,
    }
    (args.out / "scale.json").write_text(json.dumps(raw, indent=1))


def _machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
