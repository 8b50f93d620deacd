"""Scale-out bench: ``smartscope localize`` and ``smartscope apply`` on 1 and 2 local Dask
workers against the same command in one process, and a projection to N workers.

Three tables (Markdown, also written to ``--out``):

1. **Measured, end to end.** Each command runs as a subprocess, exactly as typed by a user,
   on the same files: ``--cluster none`` (one plain process), ``--cluster local:1`` and
   ``--cluster local:2``. Frames per second = frames / wall time of the whole command
   (start-up, cluster start, merge included). Ratio = Dask path with 1 worker / one plain
   process (goal >= 0.9). Best of and median over ``--repeats``.
2. **Decomposition** (in this process, ``smartscope.batch.jobs.execute`` on a LocalCluster
   of 1 worker): cluster start, warm-up (submit to the first result beyond one chunk: the
   worker's imports, engine open), median chunk time (read + compute + part write),
   per-chunk overhead (median gap between two completions not spent in a chunk:
   scheduler, transfers, task start) and the merge.
3. **Projection** to N workers for an archive of ``--archive-frames`` frames:
   ``T(N) = start + warm-up + max(ceil(K / N) * (c + o), K * o) + merge`` with K chunks, c the median
   chunk time and o the per-chunk overhead. Assumptions: each worker as fast as this
   machine's one worker (its own cores; no sharing), the shared file system delivers the
   read and write rate shown, the scheduler handles one chunk's overhead at a time (the
   ``K * o`` bound), chunks balance evenly, one stack per chunk boundary as measured.

Run: ``python bench/scale.py`` (defaults: 3000 SMLM frames of 256² for localize, 600
frames of 256² for the N2V denoiser, 3 repeats).
"""

from __future__ import annotations

import argparse
import json
import math
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
    return {"localize": smlm, "apply": cells}


def commands(data: dict[str, Path], work: Path, chunk: int, apply_chunk: int) -> dict[str, list[str]]:
    bundle = ROOT / "models" / "bundles" / "denoise-n2v-lowlight"
    return {
        "localize": ["localize", str(data["localize"]), "--chunk-frames", str(chunk)],
        "apply": ["apply", str(bundle), str(data["apply"]), "--chunk-frames", str(apply_chunk)],
    }


def run_cli(args: list[str], out: Path, cluster: str) -> float:
    """Wall time of one whole command (a fresh process, as a user runs it)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = subprocess.run(
        [*SMARTSCOPE, *args, "--out", str(out), "--cluster", cluster], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} --cluster {cluster} failed:\n{res.stderr[-2000:]}")
    return wall


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
    k = math.ceil(archive_frames / d["chunk_frames"])
    c, o = d["chunk_s"], d["overhead_per_chunk_ms"] / 1e3
    rows = []
    t1 = None
    for n in workers:
        t = d["start_s"] + d["warmup_s"] + max(math.ceil(k / n) * (c + o), k * o) + d["merge_s"]
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
    args = ap.parse_args()

    data = make_data(args.work, args.frames, args.apply_frames, args.size)
    cmds = commands(data, args.work, args.chunk_frames, args.apply_chunk_frames)
    kinds = [args.only] if args.only else ["localize", "apply"]
    n_frames = {"localize": args.frames, "apply": args.apply_frames}
    walls: dict[str, dict[str, list[float]]] = {k: {"none": [], "local:1": [], "local:2": []} for k in kinds}
    for r in range(args.repeats):
        for kind in kinds:
            for cluster in ("none", "local:1", "local:2"):
                w = run_cli(cmds[kind], args.work / f"out_{kind}", cluster)
                walls[kind][cluster].append(w)
                print(f"repeat {r + 1}: {kind} --cluster {cluster}: {w:.1f} s", file=sys.stderr, flush=True)

    lines = [
        f"# smartscope scale-out bench ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"`python bench/scale.py {' '.join(sys.argv[1:])}` on {_machine()}",
        "",
        f"## 1. Measured, end to end (whole command, frames / wall s; best of / median of {args.repeats})",
        "",
        "| command | frames | one process fps | Dask 1 worker fps | ratio (goal >= 0.9) | "
        "Dask 2 workers fps | 2 workers / one process |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds if args.repeats else []:
        n = n_frames[kind]
        fps = {c: [n / w for w in ws] for c, ws in walls[kind].items()}

        def cell(v: list[float]) -> str:
            return f"{max(v):.1f} / {statistics.median(v):.1f}"

        ratio = [a / b for a, b in zip(fps["local:1"], fps["none"], strict=True)]
        speed = [a / b for a, b in zip(fps["local:2"], fps["none"], strict=True)]
        label = {
            "localize": f"localize (classical MLE), {args.size}², chunks of {args.chunk_frames}",
            "apply": f"apply denoise-n2v-lowlight, {args.size}², chunks of {args.apply_chunk_frames}",
        }[kind]
        lines.append(
            f"| {label} | {n} | {cell(fps['none'])} | {cell(fps['local:1'])} | "
            f"{max(ratio):.2f} / {statistics.median(ratio):.2f} | {cell(fps['local:2'])} | "
            f"{max(speed):.2f} / {statistics.median(speed):.2f} |"
        )
    decomp = {
        k: decompose(k, data, args.work, args.chunk_frames if k == "localize" else args.apply_chunk_frames)
        for k in kinds
    }
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
            f"o = {d['overhead_per_chunk_ms']:.1f} ms per chunk)",
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
    raw = {"walls_s": walls, "frames": n_frames, "decomposition": decomp, "argv": sys.argv[1:]}
    (args.out / "scale.json").write_text(json.dumps(raw, indent=1))


def _machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
