"""Shared fixtures: real Micro-Manager cores from the mm-test-adapters package."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mm_test_adapters
import pytest
import yaml
from pymmcore_plus import CMMCorePlus

DATA = Path(__file__).parent / "data"
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


def start_cli_run(
    tmp_path: Path,
    n_frames: int = 100_000,
    lasers_mw: dict[str, float] | None = None,
    started_frames: int = 20,
    storage: dict[str, Any] | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """``smartscope run`` in its own process on the laser demo config; returns once
    ``started_frames`` frames are on disk (the process and its run folder). ``storage``
    adds to the storage section (``io``, ``format``)."""
    from smartscope.storage import read_jsonl

    acquisition: dict[str, Any] = {"exposure_ms": 1.0, "n_frames": n_frames}
    if lasers_mw:
        acquisition["lasers_mw"] = lasers_mw
    cfg = cfg_dict(
        tmp_path,
        acquisition=acquisition,
        microscope={"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
    )
    cfg["storage"].update(storage or {})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "smartscope.cli", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = list((tmp_path / "runs").glob("*"))
        if runs and len(read_jsonl(runs[0] / "frames.jsonl")) >= started_frames:
            return proc, runs[0]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"run did not start: {proc.stderr.read() if proc.stderr else ''!r}")
