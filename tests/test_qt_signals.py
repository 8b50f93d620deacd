"""pymmcore-plus's Qt back-end: what napari-micromanager and pymmcore-widgets users run.

A core made while a Qt application exists emits Qt signals instead of psygnal ones. Each
test runs in a process of its own, with a Qt application made first (offscreen), so that
every core in it is a Qt-signal core and nothing leaks into the rest of the suite (which
pins psygnal: see conftest.py). Found by CI: a Qt application left behind by the napari
tests made every later virtual microscope unreachable and every MDA run deliver no frame.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("qtpy")
ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import json, os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.pop("PYMM_SIGNALS_BACKEND", None)
from qtpy.QtWidgets import QApplication
app = QApplication([])
from smartscope.core_signals import is_qt_signal
from smartscope.simulators import AutofocusUniMMCore, get_virtual_microscope, virtual_config_path
out = {}
"""


def _run(body: str, tmp_path: Path) -> dict[str, Any]:
    """Run ``body`` after the prelude in a fresh interpreter; it fills ``out``, printed as JSON."""
    script = PRELUDE + textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(out))\n"
    env = {k: v for k, v in os.environ.items() if k != "PYMM_SIGNALS_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def test_a_plain_unimmcore_under_qt_reaches_one_virtual_microscope(tmp_path: Path) -> None:
    out = _run(
        """
        from pymmcore_plus.experimental.unicore import UniMMCore
        core = UniMMCore()
        out["qt"] = is_qt_signal(core.events.propertyChanged)
        core.loadSystemConfiguration(str(virtual_config_path()))
        core.setProperty("Camera", "SensorSize", "64")
        vm = get_virtual_microscope(core)
        core.snapImage()
        core.getImage()
        out["same_after_snap"] = get_virtual_microscope(core) is vm and vm.frame == 1
        core.setProperty("Objective", "Label", "20x/0.75 Air")
        out["objective"] = vm.objective.label
        core.setProperty("Laser488", "Power", 3.0)
        out["power_488"] = float(core.getProperty("Laser488", "Power"))
        core.unloadAllDevices()
        try:
            get_virtual_microscope(core)
            out["after_unload"] = "found"
        except LookupError:
            out["after_unload"] = "gone"
        """,
        tmp_path,
    )
    assert out == {
        "qt": True,
        "same_after_snap": True,
        "objective": "20x/0.75 Air",
        "power_488": 3.0,
        "after_unload": "gone",
    }


def test_smartscopes_core_under_qt_follows_auto_shutter_and_pays_the_stop_cost(tmp_path: Path) -> None:
    out = _run(
        """
        core = AutofocusUniMMCore()
        out["qt"] = is_qt_signal(core.events.propertyChanged)
        core.loadSystemConfiguration(str(virtual_config_path()))
        core.setProperty("Camera", "SensorSize", "64")
        core.setProperty("Camera", "SequenceStopCost_ms", 300)
        vm = get_virtual_microscope(core)
        core.setAutoShutter(False)
        out["auto_shutter_off"] = vm.auto_shutter
        core.setAutoShutter(True)
        out["auto_shutter_on"] = vm.auto_shutter
        core.startContinuousSequenceAcquisition(0)
        while core.getRemainingImageCount() < 2:
            time.sleep(0.01)
        t0 = time.perf_counter()
        core.stopSequenceAcquisition()
        out["stop_s"] = time.perf_counter() - t0
        core.unloadAllDevices()
        """,
        tmp_path,
    )
    assert out["qt"] is True
    assert (out["auto_shutter_off"], out["auto_shutter_on"]) == (False, True)
    assert out["stop_s"] >= 0.29, out  # the camera heard the core stop it


def test_a_smartscope_mda_run_under_qt_delivers_every_frame(tmp_path: Path) -> None:
    out = _run(
        f"""
        from pathlib import Path
        from smartscope.config.loading import validate_config
        from smartscope.runner import run
        from smartscope.scenarios.base import virtual_lights
        cfg = validate_config({{
            "storage": {{"root": {str(tmp_path / "runs")!r}, "name": "qt"}},
            "microscope": {{
                "config_file": "virtual",
                "lasers": virtual_lights(),
                "buffer_size_mb": 16,
                "startup": [
                    {{"device": "Camera", "property": "SensorSize", "value": "64"}},
                    {{"device": "Camera", "property": "Pacing", "value": "AsFastAsPossible"}},
                ],
            }},
            "acquisition": {{"exposure_ms": 10.0, "mda": {{"time_plan": {{"interval": 0, "loops": 6}},
                             "channels": ["488", "561"]}}}},
        }})
        res = run(cfg, report=False)
        out["status"] = str(res.status.value)
        out["reason"] = res.reason
        frames = [json.loads(x) for x in (Path(res.run_dir) / "frames.jsonl").read_text().splitlines()]
        out["axes"] = [[f["axes"]["t"], f["axes"]["c"]] for f in frames]
        """,
        tmp_path,
    )
    assert out["status"] == "completed", out["reason"]
    assert out["axes"] == [[t, c] for t in range(6) for c in range(2)]
