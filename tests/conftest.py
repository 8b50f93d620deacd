"""Shared fixtures: real Micro-Manager cores from the mm-test-adapters package."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mm_test_adapters
import pytest
import yaml
from pymmcore_plus import CMMCorePlus

DATA = Path(__file__).parent / "data"

# pymmcore-plus gives every core made while a Qt application exists Qt signals instead of
# psygnal. The napari tests make one that lives to the end of the session, so the back-end of
# every later core would depend on test order: the suite pins psygnal, and
# tests/test_qt_signals.py runs the Qt back-end in processes of its own.
# SMARTSCOPE_TEST_QT=1 runs the whole suite under Qt instead (a Qt application from the start).
if os.environ.get("SMARTSCOPE_TEST_QT") == "1":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qtpy.QtWidgets import QApplication

    _QT_APP = QApplication.instance() or QApplication([])
else:
    os.environ.setdefault("PYMM_SIGNALS_BACKEND", "psygnal")
ADAPTERS = mm_test_adapters.device_adapter_path()


def _release(core: CMMCorePlus) -> None:
    if core.isSequenceRunning():
        core.stopSequenceAcquisition()
    core.unloadAllDevices()


@pytest.fixture
def demo_core() -> Iterator[CMMCorePlus]:
    """The Micro-Manager demo configuration."""
    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([ADAPTERS])
    core.loadSystemConfiguration(str(Path(ADAPTERS) / "MMConfig_demo.cfg"))
    yield core
    _release(core)
    del core
    gc.collect()


@pytest.fixture
def laser_core() -> Iterator[CMMCorePlus]:
    """Demo camera, shutter, Z stage and an analog-modulated 'laser' (D-DA, 0-10 V)."""
    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([ADAPTERS])
    core.loadSystemConfiguration(str(DATA / "demo_laser.cfg"))
    yield core
    _release(core)
    del core
    gc.collect()


@pytest.fixture
def seq_tester_core() -> Iterator[CMMCorePlus]:
    """SequenceTester: every image encodes the device settings it was taken with."""
    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([ADAPTERS])
    core.loadDevice("THub", "SequenceTester", "THub")
    core.initializeDevice("THub")
    core.loadDevice("TCamera", "SequenceTester", "TCamera")
    core.setParentLabel("TCamera", "THub")
    core.setProperty("TCamera", "ImageMode", "MachineReadable")
    core.setProperty("TCamera", "ImageWidth", 128)
    core.setProperty("TCamera", "ImageHeight", 128)
    core.initializeDevice("TCamera")
    core.setCameraDevice("TCamera")
    yield core
    _release(core)
    del core
    gc.collect()


def cfg_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A config mapping writing runs under ``tmp_path``; keyword args replace sections."""
    base: dict[str, Any] = {"storage": {"root": str(tmp_path / "runs"), "name": "test"}}
    base.update(sections)
    return base


LASERS = {
    "488": {"device": "Laser488", "power_property": "Voltage", "wavelength_nm": 488, "max_power_mw": 10.0}
}


# ------------------------------------------------------------------ both drivers

DRIVERS = ("pymmcore-plus", "pycromanager")


@dataclass
class Rig:
    """A real Micro-Manager core on a .cfg, and the smartscope driver that speaks to it:
    pymmcore-plus's ``CMMCorePlus``, or pycromanager's headless (pymmcore) core."""

    driver: str
    core: Any
    cfg_file: Path

    @property
    def driver_cls(self) -> type[Any]:
        from smartscope.drivers.mmcore import PycromanagerDriver, PymmcorePlusDriver

        return PymmcorePlusDriver if self.driver == "pymmcore-plus" else PycromanagerDriver

    def get(self, device: str, prop: str) -> float:
        if self.driver == "pymmcore-plus":
            return float(self.core.getProperty(device, prop))
        return float(self.core.get_property(device, prop))

    def set(self, device: str, prop: str, value: float) -> None:
        if self.driver == "pymmcore-plus":
            self.core.setProperty(device, prop, value)
        else:
            self.core.set_property(device, prop, float(value))

    def make(self, cfg: Any, cls: type[Any] | None = None) -> Any:
        """The driver (``cls``: a subclass of it) over this core, for ``cfg``."""
        return (cls or self.driver_cls)(cfg.microscope, cfg.acquisition, cfg.safe_state, core=self.core)

    def microscope(self, **over: Any) -> dict[str, Any]:
        """The config's ``microscope:`` section for this rig (laser 488 on D-DA)."""
        return {"driver": self.driver, "config_file": str(self.cfg_file), "lasers": LASERS, **over}


@contextlib.contextmanager
def open_rig(driver: str, cfg_file: Path) -> Iterator[Rig]:
    if driver == "pymmcore-plus":
        core = CMMCorePlus()
        core.setDeviceAdapterSearchPaths([ADAPTERS])
        core.loadSystemConfiguration(str(cfg_file))
        try:
            yield Rig(driver, core, cfg_file)
        finally:
            _release(core)
            del core
            gc.collect()
        return
    pycromanager = pytest.importorskip("pycromanager")
    pycromanager.start_headless(
        ADAPTERS, str(Path(cfg_file).resolve()), python_backend=True, buffer_size_mb=64
    )
    core = pycromanager.Core()
    try:
        yield Rig(driver, core, cfg_file)
    finally:
        with contextlib.suppress(Exception):  # a test may leave the camera running (a broken driver)
            core.stop_sequence_acquisition()
        pycromanager.stop_headless()
        del core
        gc.collect()


@pytest.fixture(params=DRIVERS)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The laser demo config (``demo_laser.cfg``) behind each of the two drivers."""
    with open_rig(request.param, DATA / "demo_laser.cfg") as r:
        yield r


@dataclass
class PowerSampler:
    """Reads a light's power from the hardware every ``every_s`` in a thread of its own: what
    the light did, sample by sample, whoever wrote it."""

    read: Any
    every_s: float = 0.002
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PowerSampler:
        def go() -> None:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # the core may be going away at the end
                    self.samples.append((time.time(), float(self.read())))
                self._stop.wait(self.every_s)

        self._thread = threading.Thread(target=go, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def after(self, t: float) -> list[float]:
        """Every power read after wall-clock time ``t``."""
        return [p for ts, p in self.samples if ts > t]


def spawn_cli_run(
    tmp_path: Path,
    n_frames: int = 100_000,
    lasers_mw: dict[str, float] | None = None,
    driver: str = "pymmcore-plus",
    storage: dict[str, Any] | None = None,
) -> subprocess.Popen[bytes]:
    """``smartscope run`` in its own process on the laser demo config (with ``driver``);
    ``storage`` adds to the storage section (``io``, ``format``)."""
    acquisition: dict[str, Any] = {"exposure_ms": 1.0, "n_frames": n_frames}
    if lasers_mw:
        acquisition["lasers_mw"] = lasers_mw
    cfg = cfg_dict(
        tmp_path,
        acquisition=acquisition,
        microscope={"driver": driver, "config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
    )
    cfg["storage"].update(storage or {})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen(
        [sys.executable, "-m", "smartscope.cli", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def start_cli_run(
    tmp_path: Path,
    n_frames: int = 100_000,
    lasers_mw: dict[str, float] | None = None,
    started_frames: int = 20,
    driver: str = "pymmcore-plus",
    storage: dict[str, Any] | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """:func:`spawn_cli_run`, returned once ``started_frames`` frames are on disk (the
    process and its run folder)."""
    from smartscope.storage import read_jsonl

    proc = spawn_cli_run(tmp_path, n_frames, lasers_mw, driver, storage)
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = list((tmp_path / "runs").glob("*"))
        if runs and len(read_jsonl(runs[0] / "frames.jsonl")) >= started_frames:
            return proc, runs[0]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"run did not start: {proc.stderr.read() if proc.stderr else ''!r}")


@dataclass
class Done:
    """A finished command: exit status, stderr, wall time and its own peak memory."""

    returncode: int
    stderr: str
    seconds: float
    max_rss_mb: float


def run_measured(argv: list[str], timeout: float = 300) -> Done:
    """``argv`` in its own process: exit status, stderr, wall time, and the peak memory of
    that process (``VmHWM`` of its own program, read until it exits: a forked child's
    ``ru_maxrss`` would count pytest's pages from before the exec)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_kb = [0]

    def watch() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
                line = next(ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:"))
                peak_kb[0] = max(peak_kb[0], int(line.split()[1]))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        watcher.join(5)
    return Done(proc.returncode, err.decode(), time.monotonic() - t0, peak_kb[0] / 1024)


def assert_events_typed(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of a run's ``events.jsonl`` has exactly the keys of its ``RunEvent`` type."""
    from typing import get_args, get_type_hints

    from smartscope.schema import RunEvent
    from smartscope.storage import read_jsonl

    by_kind: dict[str, set[str]] = {}
    for typed in get_args(RunEvent):
        hints = get_type_hints(typed)
        for kind in get_args(hints["event"]):
            by_kind[kind] = set(hints)
    events = read_jsonl(run_dir / "events.jsonl")
    for e in events:
        assert e["event"] in by_kind, f"events.jsonl: {e['event']!r} is not a RunEvent kind"
        assert set(e) == by_kind[e["event"]], (e, sorted(by_kind[e["event"]]))
        assert isinstance(e["t"], float)
    return events
