"""``smartscope train denoise``: train an N2V or CARE denoiser into a verified engine bundle.

smartscope train denoise --method n2v --simulate lowlight --out models/bundles/my-n2v
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal

import typer

from smartscope.errors import describe
from smartscope.exceptions import fail
from smartscope.models.cli_options import (
    BaseWidthOption,
    BatchSizeOption,
    BundleOutOption,
    DepthOption,
    DeviceOption,
    FieldPxOption,
    NFieldsOption,
    OverlapPxOption,
    PatchPxOption,
    PatienceOption,
    QuietOption,
    SeedOption,
    StepsOption,
    ThreadsOption,
    TilePxOption,
    ValEveryOption,
    ValFractionOption,
)
from smartscope.models.denoise import data as ddata
from smartscope.models.distributed import launch, launched
from smartscope.models.provenance import command_line

__all__ = ["train_denoise_cmd"]


def train_denoise_cmd(
    ctx: typer.Context,
    out: BundleOutOption,
    method: Annotated[
        Literal["n2v", "care"], typer.Option(help="n2v (self-supervised) or care (paired)")
    ] = "n2v",
    data: Annotated[
        Path | None,
        typer.Option(help="TIFF folder: N2V *.tif noisy stacks; CARE low/*.tif + high/*.tif"),
    ] = None,
    simulate: Annotated[
        str | None,
        typer.Option(help="simulator scenario: lowlight (5-80 photons), verylowlight (2-8), fixed20"),
    ] = None,
    photons: Annotated[
        float | None, typer.Option(help="one light level (peak photons/px) instead of the scenario's")
    ] = None,
    n_fields: NFieldsOption = 24,
    field_px: FieldPxOption = 128,
    steps: StepsOption = 400,
    batch_size: BatchSizeOption = 16,
    patch_px: PatchPxOption = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    depth: DepthOption = 2,
    base_width: BaseWidthOption = 16,
    arch: Annotated[
        Literal["unet", "fast"],
        typer.Option(help="unet (2-D U-Net) or fast (multi-frame real-time FastDenoiser)"),
    ] = "unet",
    frames: Annotated[int, typer.Option(min=1, help="input frames: the current one and those before it")] = 1,
    width: Annotated[int, typer.Option(min=4, help="fast: channels at 1/stride resolution")] = 32,
    blocks: Annotated[int, typer.Option(min=0, help="fast: residual 3x3 convolutions")] = 2,
    stride: Annotated[int, typer.Option(min=1, help="fast: space-to-depth factor")] = 4,
    coarse: Annotated[bool, typer.Option(help="fast: one coarser level")] = True,
    residual: Annotated[bool, typer.Option(help="fast: add the current frame to the output")] = True,
    max_speed_px: Annotated[
        float, typer.Option(help="--simulate with --frames > 1: maximum sample drift, px per frame")
    ] = 1.0,
    val_fraction: ValFractionOption = 0.2,
    val_every: ValEveryOption = 50,
    patience: PatienceOption = 4,
    tile_px: TilePxOption = 256,
    overlap_px: OverlapPxOption = 64,
    normalization: Annotated[
        Literal["percentile", "affine"],
        typer.Option(help="percentile (per frame, any light level) or affine (fixed)"),
    ] = "percentile",
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    threads: ThreadsOption = 0,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="checkpoint folder (best weights + checkpoint.json)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="engine name (default from method/data)")] = None,
    quiet: QuietOption = False,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="training processes (torch.distributed DDP through torchrun: gloo on CPU, NCCL on "
            "CUDA); --batch-size is the global batch, split evenly over them",
        ),
    ] = 1,
) -> None:
    """Train an N2V or CARE denoiser and write a verified engine bundle with its metrics."""
    if nproc > 1 and not launched():
        if batch_size % nproc:
            msg = f"{batch_size} does not split evenly over {nproc} processes"
            raise typer.BadParameter(msg, param_hint="--batch-size")
        raise typer.Exit(launch(nproc, shlex.split(command_line(ctx=ctx))[1:]))
    from smartscope.engines.networks.denoise import FastDenoiserConfig
    from smartscope.engines.networks.unet import UNetConfig
    from smartscope.models.denoise.train import DenoiseTrainConfig, train_denoise  # torch: the ml extra
    from smartscope.models.train_common import FitConfig

    if (data is None) == (simulate is None):
        raise typer.BadParameter("give exactly one of --data DIR or --simulate SCENARIO")
    try:
        if simulate is not None:
            dataset = ddata.simulate(
                simulate,
                n_fields=n_fields,
                field_px=field_px,
                seed=seed,
                photons=photons,
                frames=frames,
                max_speed_px=max_speed_px,
            )
        else:
            assert data is not None
            dataset = ddata.from_tiff_dir(data, method)
        cfg = DenoiseTrainConfig(
            method=method,
            arch=arch,
            unet=UNetConfig(depth=depth, base_width=base_width, in_channels=frames),
            fast=FastDenoiserConfig(
                frames=frames, width=width, blocks=blocks, stride=stride, coarse=coarse, residual=residual
            ),
            fit=FitConfig(
                steps=steps,
                batch_size=batch_size,
                lr=lr,
                val_every=val_every,
                patience=patience,
                seed=seed,
                device=device,
                threads=threads,
            ),
            patch_px=patch_px,
            val_fraction=val_fraction,
            tile_px=tile_px,
            overlap_px=overlap_px,
            normalization=normalization,
        )
    except ValueError as exc:  # the data and config checks of training raise ValueError
        fail(describe(exc) or str(exc))
    label = simulate if simulate is not None else Path(str(data)).name
    path, metrics = train_denoise(
        dataset,
        cfg,
        out,
        command=command_line(ctx=ctx),
        name=name or f"denoise-{method}-{label}",
        checkpoint_dir=checkpoint_dir,
        quiet=quiet,
    )
    if not metrics:  # a rank other than 0 of a --nproc run: rank 0 reports
        return
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    typer.echo(f"wrote {path}: {shown}")
