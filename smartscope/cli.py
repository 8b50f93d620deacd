"""The ``smartscope`` command line (typer + rich)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from smartscope.config import (
    ConfigError,
    SmartscopeConfig,
    example_config_text,
    load_config,
    validate_config,
)

app = typer.Typer(
    name="smartscope",
    help="Real-time, acquisition-coupled smart-microscopy controller.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Example and validation of run configurations.", no_args_is_help=False)
app.add_typer(config_app, name="config")


def _register_engine_commands() -> None:
    """Commands that live beside the code they drive (simulator, engines, training)."""
    from smartscope.batch.apply import apply_cmd
    from smartscope.engines.cli import compile_cmd, engines_cmd, export_cmd
    from smartscope.models.cli import app as train_app
    from smartscope.models.smlm.cli import localize_cmd
    from smartscope.remote.cli import keys_cmd, serve_cmd, watch_cmd, worker_cmd
    from smartscope.simulators.cli import simulate

    app.command("simulate")(simulate)
    app.add_typer(train_app, name="train")
    app.command("export")(export_cmd)
    app.command("compile")(compile_cmd)
    app.command("engines")(engines_cmd)
    app.command("localize")(localize_cmd)
    app.command("apply")(apply_cmd)
    app.command("worker")(worker_cmd)
    app.command("keys")(keys_cmd)
    app.command("serve")(serve_cmd)
    app.command("watch")(watch_cmd)


_register_engine_commands()
console = Console()
err_console = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _load(path: Path) -> SmartscopeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable; keeps type checkers happy


def _summary(result: Any) -> None:
    m = result.metrics
    table = Table(title=f"run {result.status}: {result.reason}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("frames stored (raw, on disk)", f"{m['frames_stored']}"),
        ("frames analysed", f"{m['frames_analysed']}"),
        ("frames skipped (analysis behind)", f"{m['frames_skipped']}"),
        ("frames failed in analysis", f"{m['frames_failed']}"),
        ("actions applied", f"{m['actions_applied']}"),
        ("acquired frames/s", f"{m['fps_acquired']:.1f}"),
        (
            "latency camera→decision p50/p95/p99 (ms)",
            "/".join(f"{m['latency_decision'][k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
        ),
        (
            "latency camera→action p50/p95/p99 (ms)",
            "/".join(f"{m['latency_action'][k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
        ),
        ("run folder", result.run_dir),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


def _run(cfg: SmartscopeConfig) -> None:
    from smartscope.drivers import DriverError
    from smartscope.runner import run

    total = cfg.acquisition.n_frames
    with Progress(
        TextColumn("[bold]acquiring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("frames", total=total)

        def tick(n: int, _total: int | None) -> None:
            if n % 10 == 0 or n == total:
                progress.update(task, completed=n)

        servers: list[Any] = []

        def serve(loop: Any) -> None:
            if cfg.remote is not None:
                from smartscope.remote.server import attach_server

                servers.append(attach_server(loop, cfg.remote))

        try:
            result = run(cfg, progress=tick, on_loop=serve)
        except DriverError as exc:
            _fail(str(exc))
            raise
        finally:
            for server in servers:
                server.close()
    _summary(result)
    console.print(f"report: {Path(result.run_dir) / 'report.html'}")
    if result.status == "failed":
        raise typer.Exit(1)


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
) -> None:
    """Run the closed loop described by CONFIG."""
    _run(_load(config))


DEMO_CONFIG: dict[str, Any] = {
    "microscope": {
        "driver": "pymmcore-plus",
        "config_file": "virtual",
        "camera": "Camera",
        "focus": "Z",
        "mirror": "Mirror",
        "lasers": {
            "488": {
                "device": "Laser488",
                "power_property": "Power",
                "wavelength_nm": 488,
                "max_power_mw": 100,
            }
        },
    },
    "acquisition": {"exposure_ms": 20.0, "n_frames": 600, "lasers_mw": {"488": 2.0}},
    "pipeline": {"stages": [{"kind": "stats", "name": "stats"}]},
    "controllers": [
        {
            "kind": "exposure_band",
            "name": "laser_band",
            "stage": "stats",
            "statistic": "p99_adu",
            "low": 300,
            "high": 420,
            "actuator": "laser_power",
            "laser": "488",
            "offset_adu": 100,
        }
    ],
    "limits": {"laser_max_mw": {"488": 50.0}, "max_power_change_mw_per_s": 10.0},
    "storage": {"root": "runs", "name": "demo"},
}


def smlm_demo_config(frames: int, out: Path, seed: int) -> dict[str, Any]:
    """Live SMLM on the virtual microscope: classical MLE localizer + 405 nm density control."""
    lasers = {
        "405": {"device": "Laser405", "power_property": "Power", "wavelength_nm": 405, "max_power_mw": 50},
        "640": {"device": "Laser640", "power_property": "Power", "wavelength_nm": 640, "max_power_mw": 200},
    }
    return {
        "seed": seed,
        "microscope": {
            "config_file": "virtual",
            "camera": "Camera",
            "startup": [
                {"device": "Camera", "property": "Scenario", "value": "smlm"},
                {"device": "Camera", "property": "Seed", "value": seed},
                {"device": "Camera", "property": "SensorSize", "value": 256},
            ],
            "lasers": lasers,
        },
        "acquisition": {"exposure_ms": 10.0, "n_frames": frames},
        "pipeline": {"stages": [{"kind": "smlm", "name": "smlm", "psf_sigma_nm": 93.3}]},
        "controllers": [
            {"kind": "smlm_density", "laser": "405", "target_density_per_um2": 0.5, "update_every": 5}
        ],
        "limits": {"laser_max_mw": {"405": 20.0}, "max_power_change_mw_per_s": 5.0},
        "storage": {"root": str(out), "name": "demo-smlm"},
    }


@app.command()
def demo(
    frames: Annotated[int, typer.Option(help="frames to acquire")] = 600,
    out: Annotated[Path, typer.Option(help="folder the run folder is made in")] = Path("runs"),
    denoise: Annotated[
        bool, typer.Option(help="add the shipped N2V denoiser: denoised stream saved, its SNR logged")
    ] = False,
    scenario: Annotated[
        str, typer.Option(help="bleach (default) | events | ao | lowlight | smlm | stain")
    ] = "bleach",
    seed: Annotated[int, typer.Option(help="seed of the scenario")] = 0,
) -> None:
    """The closed-loop demo on the built-in virtual microscope.

    Default (``bleach``): fluorescent cells under a 488 nm laser; the controller holds the
    99th-percentile intensity in a band by adjusting laser power, raising it as the dye
    bleaches. ``events``: slow imaging that bursts fast on detected mitochondrial fission;
    ``ao``: modal sensorless correction of a random aberration through the deformable
    mirror; ``lowlight``: the least 561 nm power that keeps the denoised SNR on target;
    ``smlm``: live localization with the 405 nm activation laser holding the density;
    ``stain``: label-free frames become virtual fluorescence channels live, with a trust
    signal that rises when the operator defocuses.
    """
    if scenario in ("events", "ao", "lowlight", "stain"):
        from smartscope.controllers.demo import run_demo

        console.print(f"demo scenario {scenario!r} on the virtual microscope (seed {seed})")
        png = run_demo(scenario, out, seed)
        console.print(f"run folder: {png.parent}\nplot: {png}")
        return
    if scenario == "smlm":
        _run(validate_config(smlm_demo_config(frames, out, seed), "demo smlm"))
        return
    if scenario != "bleach":
        _fail(f"--scenario: {scenario!r} is not one of bleach, events, ao, lowlight, smlm, stain")
    data = {
        **DEMO_CONFIG,
        "acquisition": {**DEMO_CONFIG["acquisition"], "n_frames": frames},
        "storage": {"root": str(out), "name": "demo"},
    }
    if denoise:
        from smartscope.models import shipped_bundle

        bundle = shipped_bundle("denoise-n2v-lowlight")
        stages = [
            *DEMO_CONFIG["pipeline"]["stages"],
            {"kind": "engine", "name": "denoise", "bundle": str(bundle)},
        ]
        data["pipeline"] = {"stages": stages}
    cfg = validate_config(data, "demo")
    console.print(
        f"demo: {cfg.microscope.config_file} microscope, {frames} frames; laser-power controller "
        "holding the 99th-percentile intensity in 300..420 ADU as the sample bleaches"
    )
    _run(cfg)


@app.command()
def replay(
    stack: Annotated[Path, typer.Argument(help="OME-TIFF stack, e.g. a run's raw.ome.tif")],
    config: Annotated[Path | None, typer.Option(help="run config for the pipeline/controllers")] = None,
    fps: Annotated[float | None, typer.Option(help="playback rate; default: as recorded")] = None,
) -> None:
    """Play a recorded stack through the same pipeline as if it were live."""
    base: dict[str, Any] = {"storage": {"name": "replay"}}
    if config is not None:
        base = _load(config).model_dump(mode="json")
    micro: dict[str, Any] = base.setdefault("microscope", {})
    micro.update({"driver": "replay", "replay_path": str(stack), "replay_fps": fps})
    acq: dict[str, Any] = base.setdefault("acquisition", {})
    acq["n_frames"] = None
    _run(validate_config(base, str(config or "replay")))


@app.command()
def recover(run_dir: Annotated[Path, typer.Argument(help="run folder of a run that died")]) -> None:
    """Finish the OME headers of a crashed run and write its report."""
    from smartscope.report import write_report
    from smartscope.storage import recover as do_recover

    found = do_recover(run_dir)
    for name, n in found.items():
        console.print(f"{name}: {n} frames readable")
    write_report(run_dir)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="run folder")]) -> None:
    """(Re)write a run folder's report.html from its files."""
    from smartscope.report import write_report

    console.print(str(write_report(run_dir)))


@config_app.callback(invoke_without_command=True)
def config_main(
    ctx: typer.Context,
    example: Annotated[bool, typer.Option("--example", help="print a complete, commented example")] = False,
) -> None:
    """Print the example config (--example) or validate one (config validate FILE)."""
    if ctx.invoked_subcommand is not None:
        return
    if example:
        sys.stdout.write(example_config_text())
        return
    console.print(ctx.get_help())


@config_app.command("validate")
def config_validate(path: Annotated[Path, typer.Argument(help="YAML run configuration")]) -> None:
    """Check a config file; errors name the field and the reason."""
    _load(path)
    console.print(f"[green]ok[/]: {path}")


def main() -> None:  # pragma: no cover - console-script shim
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # pymmcore-plus lowers the root logger to DEBUG when it is imported (it filters on its own
    # handlers); filter ours too, or every library's debug lines reach the terminal
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
