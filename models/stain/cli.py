"""``smartscope train stain``: pix2pix (or L1-only) virtual staining from paired data."""

from __future__ import annotations

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
from smartscope.models.provenance import command_line

__all__ = ["train_stain_cmd"]


def train_stain_cmd(
    ctx: typer.Context,
    out: BundleOutOption,
    data: Annotated[
        Path | None,
        typer.Option(help="folder with label_free/*.tif and <channel>/*.tif (same file names)"),
    ] = None,
    channels: Annotated[
        str, typer.Option(help="with --data: fluorescence channel folders, comma-separated, in order")
    ] = "",
    simulate: Annotated[bool, typer.Option(help="paired cell fields from the virtual microscope")] = False,
    n_fields: NFieldsOption = 40,
    field_px: FieldPxOption = 192,
    label_free_mode: Annotated[
        Literal["phase", "brightfield"],
        typer.Option(metavar="MODE", help="simulated label-free contrast: phase or brightfield"),
    ] = "phase",
    planes: Annotated[
        str,
        typer.Option(
            help="with --simulate: extra label-free planes, focus offsets in µm, comma-separated "
            "(e.g. '-1,1': a defocus pair the generator also sees)"
        ),
    ] = "",
    adv_weight: Annotated[float, typer.Option(help="adversarial weight; 0 trains the L1-only U-Net")] = 1.0,
    l1_weight: Annotated[float, typer.Option(help="λ_L1")] = 100.0,
    completion: Annotated[bool, typer.Option(help="also learn channel completion (mask input)")] = True,
    steps: StepsOption = 1500,
    batch_size: BatchSizeOption = 8,
    patch_px: PatchPxOption = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate (both networks)")] = 2e-4,
    depth: DepthOption = 3,
    base_width: BaseWidthOption = 16,
    val_fraction: ValFractionOption = 0.2,
    val_every: ValEveryOption = 100,
    patience: PatienceOption = 5,
    tile_px: TilePxOption = 256,
    overlap_px: OverlapPxOption = 32,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    threads: ThreadsOption = 0,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="checkpoint folder (best generator + checkpoint.json)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="engine name")] = None,
    quiet: QuietOption = False,
) -> None:
    """Train a virtual-staining generator (pix2pix) and write a verified engine bundle."""
    from smartscope.models.stain import data as sdata
    from smartscope.models.stain.train import StainTrainConfig, train_stain
    from smartscope.models.train_common import FitConfig

    if (data is None) == (not simulate):
        raise typer.BadParameter("give exactly one of --data DIR or --simulate")
    try:
        planes_um = tuple(float(z) for z in planes.split(",") if z.strip())
    except ValueError as exc:
        raise typer.BadParameter(
            f"{planes!r}: not a comma-separated list of numbers", param_hint="--planes"
        ) from exc
    if planes_um and not simulate:
        raise typer.BadParameter("extra label-free planes come from the simulator only (--simulate)")
    if 0.0 in planes_um or len(set(planes_um)) != len(planes_um):
        raise typer.BadParameter(
            "offsets must be distinct and non-zero (focus is always input)", param_hint="--planes"
        )
    try:
        if simulate:
            dataset = sdata.simulate(n_fields, field_px, seed, mode=label_free_mode, planes_um=planes_um)
        else:
            assert data is not None
            dataset = sdata.from_tiff_dir(data, [c.strip() for c in channels.split(",") if c.strip()])
        cfg = StainTrainConfig(
            completion=completion,
            depth=depth,
            base_width=base_width,
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
            l1_weight=l1_weight,
            adv_weight=adv_weight,
            patch_px=patch_px,
            val_fraction=val_fraction,
            tile_px=tile_px,
            overlap_px=overlap_px,
        )
    except ValueError as exc:  # the data and config checks of training raise ValueError
        fail(describe(exc) or str(exc))
    method = "pix2pix" if adv_weight > 0 else "l1"
    path, metrics = train_stain(
        dataset,
        cfg,
        out,
        command=command_line(ctx=ctx),
        name=name or f"stain-{method}",
        checkpoint_dir=checkpoint_dir,
        quiet=quiet,
        data_seed=seed,
    )
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    typer.echo(f"wrote {path}: {shown}")
