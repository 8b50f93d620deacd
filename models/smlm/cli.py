"""``smartscope train smlm``: the typer command (imports torch only when it runs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from smartscope.errors import describe

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
        typer.echo(f"error: {describe(exc) or exc}", err=True)
        raise typer.Exit(1) from exc
    argv = list(sys.argv)
    if argv and argv[0].endswith("cli.py"):
        argv[0:1] = ["python", "-m", "smartscope.models.smlm.cli"]
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
    stack: Annotated[Path, typer.Argument(help="TIFF stack (T, Y, X) of raw camera frames")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for table, render, drift")],
    method: Annotated[str, typer.Option(help="classical or network")] = "classical",
    bundle: Annotated[Path | None, typer.Option(help="DECODE-class bundle (network)")] = None,
    backend: Annotated[str, typer.Option(help="auto, onnxruntime, torch, tensorrt")] = "auto",
    pixel_size_um: Annotated[float, typer.Option(help="camera pixel in the sample plane")] = 0.1,
    psf_sigma_nm: Annotated[float, typer.Option(help="Gaussian PSF sigma (classical)")] = 100.0,
    camera: Annotated[str, typer.Option(help="scmos or emccd")] = "scmos",
    offset_adu: Annotated[float, typer.Option(help="camera offset")] = 100.0,
    gain_adu_per_e: Annotated[float, typer.Option(help="conversion gain, ADU per e⁻")] = 2.0,
    em_gain: Annotated[float, typer.Option(help="EM gain (EMCCD)")] = 1.0,
    read_noise_e: Annotated[float, typer.Option(help="read noise, e⁻ rms")] = 0.9,
    render_pixel_nm: Annotated[float, typer.Option(help="super-resolution pixel")] = 20.0,
) -> None:
    """Localize a recorded stack: localizations.csv (+ ThunderSTORM CSV), Gaussian render
    (TIFF) and drift estimate in OUT."""
    import numpy as np
    import tifffile
    from pydantic import ValidationError

    from smartscope.config.stages import SMLMCameraConfig, SMLMStageConfig
    from smartscope.frame import Frame
    from smartscope.models.smlm.stage import SMLMStage

    if not stack.is_file():
        typer.echo(f"error: stack {stack} does not exist", err=True)
        raise typer.Exit(1)
    data = tifffile.imread(stack)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        typer.echo(f"error: {stack}: expected (T, Y, X) frames, got shape {data.shape}", err=True)
        raise typer.Exit(1)
    try:
        cfg = SMLMStageConfig(
            method=method,  # type: ignore[arg-type]
            bundle=bundle,
            backend=backend,  # type: ignore[arg-type]
            pixel_size_um=pixel_size_um,
            psf_sigma_nm=psf_sigma_nm,
            camera=SMLMCameraConfig(
                kind=camera,  # type: ignore[arg-type]
                offset_adu=offset_adu,
                gain_adu_per_e=gain_adu_per_e,
                em_gain=em_gain,
                read_noise_e=read_noise_e,
            ),
            render_pixel_nm=render_pixel_nm,
            output_dir=out,
        )
    except ValidationError as exc:
        typer.echo(f"error: {describe(exc) or exc}", err=True)
        raise typer.Exit(1) from exc
    stage = SMLMStage(cfg)
    for i, img in enumerate(data):
        stage.process(Frame(index=i, image=np.asarray(img), camera_time_s=0.0), {})
    stage.close()  # flushes the network's last frame and writes the outputs
    n = len(stage.table())
    typer.echo(f"{n} localizations from {len(data)} frames -> {out}")


if __name__ == "__main__":
    main()
