"""The ``smartscope`` command line (typer + rich)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from smartscope import __version__, signals
from smartscope.config import (
    SmartscopeConfig,
    example_config_text,
    load_config,
    validate_config,
)
from smartscope.errors import command_app
from smartscope.exceptions import fail

app = command_app(  # every command: a user's mistake is one `error: ...` line
    name="smartscope",
    help="Real-time, acquisition-coupled smart-microscopy controller.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = command_app(help="Example and validation of run configurations.", no_args_is_help=False)
app.add_typer(config_app, name="config")


def _register_engine_commands() -> None:
    """Commands that live beside the code they drive (simulator, engines, training)."""
    from smartscope.batch.cli import apply_cmd
    from smartscope.check.cli import check_cmd
    from smartscope.engines.cli import compile_cmd, engines_app, export_command
    from smartscope.models import heldout_input
    from smartscope.models.cli import app as train_app
    from smartscope.models.smlm.cli import calibrate_app, localize_cmd
    from smartscope.napari_plugin.cli import view_cmd
    from smartscope.remote.cli import keys_cmd, serve_cmd, watch_cmd, worker_cmd
    from smartscope.simulators.cli import simulate

    app.command("simulate")(simulate)
    app.command("check")(check_cmd)
    app.add_typer(train_app, name="train")
    app.command("export")(export_command(heldout_input))
    app.command("compile")(compile_cmd)
    app.add_typer(engines_app, name="engines")
    app.command("localize")(localize_cmd)
    app.command("view")(view_cmd)
    app.add_typer(calibrate_app, name="calibrate")
    app.command("apply")(apply_cmd)
    app.command("worker")(worker_cmd)
    app.command("keys")(keys_cmd)
    app.command("serve")(serve_cmd)
    app.command("watch")(watch_cmd)


_register_engine_commands()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"smartscope {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(help="console log level: DEBUG, INFO, WARNING, ERROR (run.log always keeps INFO)"),
    ] = None,
) -> None:
    """Real-time, acquisition-coupled smart-microscopy controller."""
    if log_level is not None:
        from smartscope.logs import configure

        configure(log_level)


console = Console()
err_console = Console(stderr=True)


def _load(path: Path) -> SmartscopeConfig:
    return load_config(path)  # a ConfigError is one `error:` line (FormattedErrors)


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


@contextlib.contextmanager
def _progress(total: int | None) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar of frames stored; yields the loop's ``progress`` callback."""
    with Progress(
        TextColumn("[bold]acquiring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("frames", total=total)

        def tick(n: int, asked: int | None) -> None:
            if n % 10 == 0 or n == asked:
                progress.update(task, completed=n, total=asked)

        yield tick


def _run(cfg: SmartscopeConfig) -> None:
    from smartscope.runner import run

    servers: list[Any] = []

    def serve(loop: Any) -> None:
        if cfg.remote is not None:
            from smartscope.remote.server import attach_server

            servers.append(attach_server(loop, cfg.remote))

    with _progress(cfg.acquisition.n_frames) as tick:
        try:  # a DriverError is a UserError: one `error:` line, exit 2
            result = run(cfg, progress=tick, on_loop=serve)
        finally:
            for server in servers:
                server.close()
    _summary(result)
    console.print(f"report: {Path(result.run_dir) / 'report.html'}")
    if result.signal_while_closing and result.signal is not None:
        err_console.print(
            f"stopped: {signals.signal_name(result.signal)} came while the run was closing; it closed "
            "first (safe state on, every frame written)",
            soft_wrap=True,
        )
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
) -> None:
    """Run the closed loop described by CONFIG."""
    _run(_load(config))


@app.command()
def demo(
    frames: Annotated[int, typer.Option(help="frames to acquire (bleach, lowlight, smlm)")] = 600,
    out: Annotated[Path, typer.Option(help="folder the run folder is made in")] = Path("runs"),
    denoise: Annotated[
        bool,
        typer.Option(help="bleach: add the shipped N2V denoiser (denoised stream saved, its SNR logged)"),
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
    from smartscope.scenarios import SCENARIOS, run_demo
    from smartscope.scenarios.base import Hooks

    spec = SCENARIOS.get(scenario)
    if spec is None:
        fail(f"--scenario: {scenario!r} is not one of {', '.join(SCENARIOS)}", 2)
    params = spec.demo_params(seed, frames)
    if denoise:
        if scenario != "bleach":
            fail("--denoise: only the bleach scenario adds the denoiser stage", 2)
        params = params.model_copy(update={"denoise": True})
    console.print(f"demo {scenario!r} on the virtual microscope (seed {seed}): {spec.summary}")
    with _progress(getattr(params, "n_frames", None)) as tick:
        outcome = run_demo(scenario, out, seed, frames, Hooks(progress=tick), params=params)
    _summary(outcome.result.loop)
    console.print(f"run folder: {outcome.result.run_dir}\nplot: {outcome.plot}")
    console.print(f"report: {Path(outcome.result.run_dir) / 'report.html'}")
    if outcome.result.loop.exit_code:
        raise typer.Exit(outcome.result.loop.exit_code)


@app.command()
def replay(
    stack: Annotated[Path, typer.Argument(help="a run folder, an OME-TIFF stack or an OME-Zarr image")],
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


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the run configuration (editor completion and checks)."""
    sys.stdout.write(json.dumps(SmartscopeConfig.model_json_schema(), indent=2) + "\n")


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
    signals.install()  # SIGTERM and SIGHUP stop a command the way Ctrl-C does
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
