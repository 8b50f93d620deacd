"""Assemble and run a loop from a validated config: the one path CLI, tests and bench use."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from smartscope.config.loading import dump_config
from smartscope.config.run import SmartscopeConfig
from smartscope.controllers.base import Controller
from smartscope.drivers import Driver, DriverError, open_driver
from smartscope.exceptions import note_log
from smartscope.logs import RunLog
from smartscope.loop import Loop, RunResult
from smartscope.pipeline import Pipeline, Stage
from smartscope.registry import build_controller, build_stage
from smartscope.report import write_report
from smartscope.safety import Devices, SafetyGate
from smartscope.signals import Interrupted, shielded, signal_name, signal_of
from smartscope.storage import RunFolder, resolve_io

log = logging.getLogger(__name__)


def run(
    cfg: SmartscopeConfig,
    driver: Driver | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    report: bool = True,
    stages: Sequence[Stage] | None = None,
    controllers: Sequence[Controller] | None = None,
    on_loop: Callable[[Loop], None] | None = None,
) -> RunResult:
    """Run ``cfg`` to the end; the run folder holds everything, even after a fault.

    Stages and controllers are built before any hardware moves, so a bad bundle or
    controller setting fails here without touching the microscope. ``stages`` and
    ``controllers`` replace the ones the config describes (scripted runs, tests);
    ``on_loop`` sees the loop before it starts (listeners, remote control).

    A stop signal at any moment ends in the safe state: during the run the loop handles it;
    during start-up it raises :class:`~smartscope.signals.Interrupted` (``during`` says
    when) once the driver is safe and closed; while the run closes it is kept, the closing
    finishes, and the result carries it (exit status 128 + signal).
    """
    if stages is None:
        stages = [build_stage(s) for s in cfg.pipeline.stages]
    if controllers is None:
        controllers = [build_controller(c) for c in cfg.controllers]
    pipeline = Pipeline(stages)
    _check_writable(Path(cfg.storage.root))  # before any hardware moves
    io = resolve_io(Path(cfg.storage.root), cfg.storage.io)  # direct I/O, or why not (one line)
    gate = SafetyGate(cfg.limits, cfg.microscope.lasers, Devices.from_config(cfg.microscope))
    own_driver = driver is None
    phase = "start-up"
    try:
        if driver is None:
            driver = open_driver(cfg, gate)  # refuses out-of-limit start-up writes before making them
        gate.bind(driver.devices)  # the devices as found on the hardware (focus, mirrors, lights)
        over = gate.over_ceiling(driver.state().lasers)
        if over:  # a driver made elsewhere, with other limits: the run's ceilings hold
            driver.safe_state()
            raise DriverError("refused before the run, every declared light switched off: " + "; ".join(over))
        folder = RunFolder(
            Path(cfg.storage.root),
            cfg.storage.name,
            cfg.storage.fsync_every,
            cfg.storage.format,
            cfg.acquisition.axis_layout(),
            io,
        )
        run_log = RunLog(folder.path / "run.log")  # smartscope's log, events, verdicts
        (folder.path / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        for stage in stages:  # optional hook: stages that write per-run files (SMLM tables)
            attach = getattr(stage, "attach_run_dir", None)
            if attach is not None:
                attach(folder.path / "outputs")
        loop = Loop(cfg, driver, pipeline, controllers, folder, progress, safety=gate)
        loop.add_listener(run_log)
        if on_loop is not None:
            on_loop(loop)  # attach listeners, keep a handle for control, before frames flow
        phase = "the run"
        try:
            result = loop.run_loop()  # handles stop signals itself, to the end of its closing
        except Exception as exc:  # run.log keeps the traceback; the command line points at it
            log.exception("the run stopped on an error")
            note_log(exc, run_log.path)
            raise
        finally:
            phase = "closing"
            with shielded("the run's files close") as late:
                folder.close()
                pipeline.close()
                run_log.close()
    except KeyboardInterrupt as exc:  # a stop signal outside the loop: say when it came
        signum = signal_of(exc)
        log.info("%s during %s: safe state, then exit", signal_name(signum), phase)
        raise Interrupted(signum, during=phase) from None
    finally:
        with shielded("the safe state goes on") as late_too:
            if driver is not None:
                driver.safe_state()
                if own_driver:
                    with contextlib.suppress(Exception):
                        driver.close()
    if report:
        with shielded("the report is written") as late_report:
            try:
                write_report(Path(result.run_dir))
            except OSError as exc:  # a full disk: the run's data and metrics are already written
                log.error("report.html not written: %s", exc)
    else:
        late_report = []
    late_signals = late + late_too + late_report
    if late_signals and result.signal is None:  # came while the run closed: it closed first
        result.signal = late_signals[0]
        result.signal_while_closing = True
    return result


def _check_writable(root: Path) -> None:
    """The storage root exists (or can be made) and takes files, or a clear error now."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".smartscope-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"storage.root is not writable ({exc.strerror})", str(root)) from None
