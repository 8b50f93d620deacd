"""``smartscope apply BUNDLE INPUT... --out DIR``: the command over :mod:`smartscope.batch.apply`.

Options shared with ``smartscope localize`` (cluster, workers, chunks, GPU) and the
progress / failure report come from :mod:`smartscope.batch.command`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smartscope.batch.apply import ApplyJob, select_channels
from smartscope.batch.command import (
    ChunkFramesOption,
    ClusterOption,
    GpuOption,
    WorkersOption,
    cluster_spec,
    pixel_size_warnings,
    run_job,
    warn,
)
from smartscope.batch.jobs import PartStore
from smartscope.batch.stacks import StackError
from smartscope.exceptions import fail

__all__ = ["apply_cmd"]


def apply_cmd(
    bundle: Annotated[Path, typer.Argument(help="engine bundle folder or zip", show_default=False)],
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="TIFF / OME-TIFF stacks, globs, run folders or OME-Zarr images", show_default=False
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the output OME-TIFFs")],
    backend: Annotated[str, typer.Option(help="auto, onnxruntime, torch, tensorrt")] = "auto",
    device: Annotated[
        str | None,
        typer.Option(help="cpu, cuda, cuda:0 ... [default: the backend's choice; cuda with --gpu]"),
    ] = None,
    channels: Annotated[
        str | None,
        typer.Option(help="comma-separated file channels to feed the engine (by name) [default: all]"),
    ] = None,
    cluster: ClusterOption = None,
    workers: WorkersOption = None,
    chunk_frames: ChunkFramesOption = 64,
    gpu: GpuOption = False,
) -> None:
    """Run an engine bundle over recorded stacks; each output is an OME-TIFF with the input's
    pixel size: OUT/<stack>.<output>.ome.tif.

    Frames larger than the engine's tile are tiled with blended overlaps. With --cluster the
    stacks are cut into chunks of --chunk-frames, run by Dask workers and merged in order.
    """
    from smartscope.batch.cluster import worker_threads
    from smartscope.batch.jobs import stack_fingerprint
    from smartscope.batch.stacks import resolve_inputs
    from smartscope.engines.bundle import BundleError, load_bundle

    if backend not in ("auto", "onnxruntime", "torch", "tensorrt"):
        fail(f"--backend: {backend!r} is not one of auto, onnxruntime, torch, tensorrt")
    try:
        b = load_bundle(bundle)
    except BundleError as exc:
        fail(str(exc))
        raise
    man = b.manifest
    if len(man.inputs) != 1:
        fail(f"{bundle}: engines with {len(man.inputs)} input tensors are not supported by apply")
    if man.inputs[0].frames > 1:
        fail(
            f"{bundle}: {man.name!r} takes {man.inputs[0].frames} consecutive frames; apply feeds one "
            "frame at a time (run it in the live engine stage, or replay the run)"
        )
    try:
        stacks = resolve_inputs(inputs)
        use = [c.strip() for c in channels.split(",")] if channels else None
        plans = tuple(select_channels(s, man.inputs[0].channels, man.name, use) for s in stacks)
    except StackError as exc:
        fail(str(exc))
        raise
    for msg in pixel_size_warnings(man.pixel_size_um, stacks, f"engine {man.name!r}"):
        warn(msg)
    spec = cluster_spec(cluster, workers, len(stacks), gpu)
    dev = device or ("cuda" if gpu else None)
    outputs = tuple((t.name, tuple(t.channels)) for t in man.outputs)
    fingerprint = {
        "command": "apply",
        "bundle_sha256": man.onnx_sha256,
        "backend": backend,
        "device": dev,
        "channels": plans,
        "stacks": [stack_fingerprint(s) for s in stacks],
    }
    job = ApplyJob(
        bundle=bundle,
        sha256=man.onnx_sha256,
        backend=backend,
        device=dev,
        stacks=tuple(stacks),
        channels=plans,
        outputs=outputs,
        out=out,
        parts=PartStore(out, fingerprint),
        cpu_threads=worker_threads(spec) if spec.distributed else 0,
    )
    if not spec.distributed:
        try:  # a backend that cannot start fails here, once
            engine = job.engine()
        except Exception as exc:
            fail(f"{bundle}: cannot open the engine with backend {backend!r}: {exc}")
            raise
        typer.echo(f"engine: {engine.describe()}", err=True)
    run_job(job, spec, out=out, gpu=gpu, chunk_frames=chunk_frames, label=f"applying {man.name}")
