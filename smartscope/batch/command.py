"""What ``smartscope localize`` and ``smartscope apply`` share: the cluster options, the
progress bar with a total, the report of failed chunks (``failures.json``), and the one-line
``error:`` / ``warning:`` messages (a warning names what was assumed, never guesses silently).

A command exits 0 when every stack was written, 1 when a chunk failed (the others are
written; the parts of unfinished stacks stay, and the same command resumes them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from smartscope.batch.cluster import GPU_RESOURCE, ClusterError, ClusterSpec, connect, parse_cluster
from smartscope.batch.jobs import ChunkFailed, ChunkJob, ChunkOutcome, JobReport, execute
from smartscope.batch.stacks import Stack
from smartscope.exceptions import fail

__all__ = [
    "ChunkFramesOption",
    "ClusterOption",
    "GpuOption",
    "WorkersOption",
    "cluster_spec",
    "fail",
    "pixel_size_warnings",
    "run_job",
    "warn",
]

ClusterOption = Annotated[
    str | None,
    typer.Option(
        help="none | local | local:N | tcp://host:8786 (an existing Dask scheduler) | slurm[:N] "
        "(dask-jobqueue); default: local when more than one input or worker, else none",
    ),
]
WorkersOption = Annotated[
    int | None, typer.Option(help="Dask workers (local: processes on this machine; slurm: jobs)")
]
ChunkFramesOption = Annotated[
    int, typer.Option(min=1, help="frames per chunk on a cluster (each chunk is one task and one part file)")
]
GpuOption = Annotated[
    bool,
    typer.Option(help=f"run on GPU workers: each chunk asks Dask for the resource {GPU_RESOURCE}=1"),
]

_console = Console(stderr=True)


def warn(msg: str) -> None:
    """One warning line on stderr; the command goes on."""
    typer.echo(f"warning: {msg}", err=True)


def pixel_size_warnings(model_um: float | None, stacks: Sequence[Stack], what: str) -> list[str]:
    """Where a stack's pixel size is missing or differs from the model's by more than 10 %."""
    out = []
    for s in stacks:
        if s.pixel_size_um is None:
            if model_um:
                out.append(
                    f"{s.path}: records no pixel size; {what} expects {model_um:g} µm and the "
                    "outputs will carry none"
                )
            continue
        px = s.pixel_size_um[1]
        if model_um and abs(px / model_um - 1) > 0.10:
            out.append(
                f"{s.path}: pixel size {px:g} µm, but {what} was made for {model_um:g} µm "
                f"({100 * (px / model_um - 1):+.0f} %): its output may not be what it was trained for"
            )
    return out


def cluster_spec(cluster: str | None, workers: int | None, n_inputs: int, gpu: bool) -> ClusterSpec:
    try:
        return parse_cluster(cluster, workers=workers, n_inputs=n_inputs, gpu=gpu)
    except ClusterError as exc:
        fail(str(exc))
        raise  # unreachable


def run_job(
    job: ChunkJob,
    spec: ClusterSpec,
    *,
    out: Path,
    gpu: bool,
    chunk_frames: int,
    label: str,
) -> JobReport:
    """Run ``job`` where ``spec`` says with a progress bar; report and exit 1 on failures."""
    total = sum(s.n_frames for s in job.stacks)
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    _console.print(f"{label} {len(job.stacks)} stack(s), {total} frames, on {spec.describe()}")
    with Progress(*columns, console=_console, transient=False) as progress:
        task = progress.add_task(label, total=total)

        def tick(n: int) -> None:
            progress.advance(task, n)

        def note(outcome: ChunkOutcome) -> None:
            if isinstance(outcome, ChunkFailed):
                progress.console.print(f"[red]chunk failed[/]: {outcome.describe()}")

        if not spec.distributed:
            report = execute(job, on_frames=tick)
        else:
            try:
                with connect(spec, gpu=gpu) as client:
                    report = execute(
                        job,
                        client=client,
                        chunk_frames=chunk_frames,
                        resources={GPU_RESOURCE: 1} if gpu else None,
                        on_frames=tick,
                        on_outcome=note,
                    )
            except ClusterError as exc:
                fail(str(exc))
                raise
    for line in report.written.values():
        typer.echo(line)
    if report.resumed_chunks:
        _console.print(f"resumed: {report.resumed_chunks} chunk(s) were already done by an earlier run")
    if report.failures:
        doc = [
            {"file": f.file, "first_frame": f.chunk.start, "last_frame": f.chunk.stop - 1, "reason": f.reason}
            for f in report.failures
        ]
        out.mkdir(parents=True, exist_ok=True)
        (out / "failures.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        for f in report.failures:
            typer.echo(f"failed: {f.describe()}", err=True)
        written = len(report.written)
        fail(
            f"{len(report.failures)} chunk(s) failed; {written} of {len(job.stacks)} stack(s) "
            f"written; list in {out / 'failures.json'}"
        )
    stale = out / "failures.json"
    if stale.is_file():
        stale.unlink()
    return report
