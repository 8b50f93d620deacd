"""``smartscope check run.yaml``: commission a rig before its first experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smartscope.check.rig import CheckReport, Status, check_rig, write_json

__all__ = ["check_cmd"]

_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def _tables(report: CheckReport, console: Console) -> None:
    if report.search is not None:
        console.print("device adapters: " + escape(report.search.describe()))
    devices = Table(title="devices", title_justify="left")
    for col in ("label", "type", "adapter", "device", "description"):
        devices.add_column(col)
    for d in report.devices:
        devices.add_row(*(escape(v) for v in (d.label, d.type, d.adapter, d.name, d.description[:60])))
    if report.devices:
        console.print(devices)
    if report.groups:
        console.print(
            "groups and presets the run uses: "
            + escape("; ".join(f"{g}: {', '.join(p)}" for g, p in report.groups.items()))
        )
    checks = Table(title="checks", title_justify="left")
    checks.add_column("status")
    checks.add_column("what", overflow="fold")
    checks.add_column("detail", overflow="fold")
    for f in report.findings:
        checks.add_row(f"[{_STYLE[f.status]}]{f.status.value}[/]", escape(f.subject), escape(f.detail))
    console.print(checks)
    cam, disk = report.camera, report.disk
    if cam is None and disk is None:
        return
    measured = Table(title="measured", title_justify="left", show_header=False)
    measured.add_column("what")
    measured.add_column("value", justify="right")
    if cam is not None:
        measured.add_row(
            "camera", escape(f"{cam.camera}: {cam.width}×{cam.height}, {8 * cam.bytes_per_pixel} bit")
        )
        measured.add_row("exposure (ms)", f"{cam.exposure_ms:g}")
        measured.add_row("snap (ms)", f"{cam.snap_ms:.1f}")
        measured.add_row("first frame after a start (ms)", " / ".join(f"{v:.0f}" for v in cam.first_frame_ms))
        measured.add_row("start cost beyond the exposure (ms)", f"{cam.start_cost_ms:.0f}")
        measured.add_row("stop (ms)", f"{cam.stop_ms:.0f}")
        measured.add_row("frames/s received", f"{cam.fps:.1f} ({cam.frames_counted} frames)")
        measured.add_row("circular buffer (frames)", f"{cam.buffer_frames}")
    if disk is not None:
        measured.add_row(
            "write rate into storage.root (MB/s)",
            f"{disk.mb_per_s:.0f} ({disk.bytes_written / 1e6:.0f} MB in {disk.seconds:.2f} s)",
        )
    if report.stream_mb_per_s is not None:
        measured.add_row("this stream needs (MB/s)", f"{report.stream_mb_per_s:.0f}")
    console.print(measured)


def check_cmd(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    out: Annotated[Path, typer.Option(help="where check.json is written")] = Path("check.json"),
    seconds: Annotated[
        float, typer.Option(min=0.2, max=60, help="how long the camera streams for its rate")
    ] = 1.0,
    write_mb: Annotated[
        float, typer.Option(min=8, max=1 << 16, help="MB written to measure the disk")
    ] = 256.0,
) -> None:
    """Commission a rig: load its configuration, check every device, property and limit
    the run names, measure the camera, its buffer and the disk, and say what will fail or
    fall behind. No run is started and no light is switched on. Exit status 1 when the
    run would fail; check.json keeps everything."""
    from smartscope.config import load_config

    cfg = load_config(config)
    console = Console()
    report = check_rig(cfg, str(config), seconds=seconds, write_mb=write_mb)
    _tables(report, console)
    write_json(report, out)
    n_fail = sum(f.status is Status.FAIL for f in report.findings)
    n_warn = sum(f.status is Status.WARN for f in report.findings)
    verdict = "[bold red]the run would fail[/]" if n_fail else "[green]ready[/]"
    console.print(f"{verdict}: {n_fail} failed, {n_warn} warnings; {escape(str(out))}")
    if n_fail:
        raise typer.Exit(1)
