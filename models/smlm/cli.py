"""``smartscope train smlm``: the typer command (imports torch only when it runs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from smartscope.batch.command import ChunkFramesOption, ClusterOption, GpuOption, WorkersOption

__all__ = ["localize_cmd", "main", "train_smlm_cmd"]


def train_smlm_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")] = Path(
        "models/bundles/smlm-decode-small"
    ),
    minutes: Annotated[float, typer.Option(help="wall-clock training budget")] = 18.0,
    steps: Annotated[int, typer.Option(help="stop after this many steps (0: no limit)")] = 0,
    batch: Annotated[int, typer.Option(help="three-frame windows per step")] = 16,
    lr: Annotated[float, typer.Option(help="peak learning rate (cosine decay)")] = 1e-3,
    width: Annotated[int, typer.Option(help="U-Net base width")] = 16,
    depth: Annotated[int, typer.Option(help="U-Net depth")] = 2,
    tile: Annotated[int, typer.Option(help="training tile edge, px")] = 40,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
) -> None:
    """Train the DECODE-class SMLM localizer on simulated data; write an engine bundle."""
    from smartscope.models.smlm.network import SMLMNetConfig
    from smartscope.models.smlm.train import SimSpec, train_smlm
    from smartscope.models.train_common import command_line

    try:
        net = SMLMNetConfig(base_width=width, depth=depth)
        spec = SimSpec(tile_px=tile)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    argv = list(sys.argv)
    if argv and argv[0].endswith("train.py"):
        argv[0:1] = ["python", "-m", "smartscope.models.smlm.train"]
    path = train_smlm(
        out,
        minutes=minutes,
        max_steps=steps or None,
        batch=batch,
        lr=lr,
        seed=seed,
        net_config=net,
        spec=spec,
        threads=threads,
        command=command_line(argv),
    )
    typer.echo(f"wrote {path}")


def main() -> None:
    typer.run(train_smlm_cmd)


def localize_cmd(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="raw camera frames: TIFF / OME-TIFF stacks, globs, run folders or OME-Zarr images",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for table, render, drift")],
    method: Annotated[str, typer.Option(help="classical or network")] = "classical",
    bundle: Annotated[Path | None, typer.Option(help="DECODE-class bundle (network)")] = None,
    backend: Annotated[str, typer.Option(help="auto, onnxruntime, torch, tensorrt")] = "auto",
    pixel_size_um: Annotated[
        float | None,
        typer.Option(help="camera pixel in the sample plane [default: the file's calibration, else 0.1]"),
    ] = None,
    psf_sigma_nm: Annotated[float, typer.Option(help="Gaussian PSF sigma (classical)")] = 100.0,
    camera: Annotated[str, typer.Option(help="scmos or emccd")] = "scmos",
    offset_adu: Annotated[float, typer.Option(help="camera offset")] = 100.0,
    gain_adu_per_e: Annotated[float, typer.Option(help="conversion gain, ADU per e⁻")] = 2.0,
    em_gain: Annotated[float, typer.Option(help="EM gain (EMCCD)")] = 1.0,
    read_noise_e: Annotated[float, typer.Option(help="read noise, e⁻ rms")] = 0.9,
    render_pixel_nm: Annotated[float, typer.Option(help="super-resolution pixel")] = 20.0,
    drift_correct: Annotated[
        bool,
        typer.Option(
            help="correct table and render by the drift estimate (>= 200 frames, >= 500 localizations)"
        ),
    ] = False,
    cluster: ClusterOption = None,
    workers: WorkersOption = None,
    chunk_frames: ChunkFramesOption = 256,
    gpu: GpuOption = False,
) -> None:
    """Localize recorded stacks: localizations.csv (+ ThunderSTORM CSV), Gaussian render
    (TIFF) and drift estimate in OUT (in OUT/<stack>/ for several stacks).

    Frames are read page by page (memory stays constant whatever the stack's size). With
    --cluster the stacks are cut into chunks of --chunk-frames, localized by Dask workers and
    merged in frame order; drift is estimated (and with --drift-correct corrected) on the
    merged table, and the render made from it.
    """
    from pydantic import ValidationError

    from smartscope.batch.cluster import worker_threads
    from smartscope.batch.command import cluster_spec, fail, run_job
    from smartscope.batch.jobs import PartStore, stack_fingerprint
    from smartscope.batch.stacks import StackError, resolve_inputs
    from smartscope.models.smlm.batch import LocalizeJob, open_stage, output_folders
    from smartscope.models.smlm.stage import SMLMCameraConfig, SMLMStageConfig

    try:
        stacks = resolve_inputs(inputs)
    except StackError as exc:
        fail(str(exc))
        raise
    for s in stacks:
        if s.n_channels != 1:
            fail(f"{s.path}: localize reads one channel; this stack has {s.n_channels} {list(s.channels)}")
    configs = []
    try:
        for s in stacks:
            px = pixel_size_um or (s.pixel_size_um[1] if s.pixel_size_um is not None else 0.1)
            configs.append(
                SMLMStageConfig(
                    method=method,  # type: ignore[arg-type]
                    bundle=bundle,
                    backend=backend,  # type: ignore[arg-type]
                    pixel_size_um=px,
                    psf_sigma_nm=psf_sigma_nm,
                    camera=SMLMCameraConfig(
                        kind=camera,  # type: ignore[arg-type]
                        offset_adu=offset_adu,
                        gain_adu_per_e=gain_adu_per_e,
                        em_gain=em_gain,
                        read_noise_e=read_noise_e,
                    ),
                    render_pixel_nm=render_pixel_nm,
                )
            )
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}")
    if gpu and method != "network":
        fail("--gpu: the classical localizer runs on CPU; --gpu is for --method network")
    bundle_sha = None
    if method == "network":
        from smartscope.engines.bundle import BundleError

        try:  # a bundle that is not an SMLM engine fails here, once, not in every chunk
            bundle_sha = open_stage(configs[0]).engine.bundle.onnx_sha256  # type: ignore[union-attr]
        except (BundleError, ValueError) as exc:
            fail(str(exc))
    spec = cluster_spec(cluster, workers, len(stacks), gpu)

    fingerprint = {
        "command": "localize",
        "configs": [c.model_dump(mode="json") for c in configs],
        "drift_correct": drift_correct,
        "bundle_sha256": bundle_sha,
        "stacks": [stack_fingerprint(s) for s in stacks],
    }
    job = LocalizeJob(
        stacks=tuple(stacks),
        configs=tuple(configs),
        folders=output_folders(stacks, out),
        parts=PartStore(out, fingerprint),
        cpu_threads=worker_threads(spec) if spec.distributed else 0,
        drift_correct=drift_correct,
    )
    run_job(job, spec, out=out, gpu=gpu, chunk_frames=chunk_frames, label="localizing")
