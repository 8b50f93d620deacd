"""The virtual microscope as a well-behaved Micro-Manager microscope (what
``tests/test_device_contract.py`` cannot ask of every rig): binning 1/2/4, honest limits, a
labelled objective turret with pixel sizes, an autofocus device on the drift model that
useq autofocus plans drive through pymmcore-plus and through ``smartscope run``, a focus
direction the MDA engine restores by, and a sample ready before the first frame, so a
time-lapse keeps its first interval."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
from pymmcore_plus import DeviceType
from pymmcore_plus.experimental.unicore import UniMMCore

from smartscope.config import validate_config
from smartscope.runner import run
from smartscope.scenarios.base import virtual_lights
from smartscope.simulators import AutofocusUniMMCore, get_virtual_microscope, virtual_config_path
from smartscope.simulators.optics import OBJECTIVES
from smartscope.storage import read_jsonl
from tests.conftest import cfg_dict


def _core(size: int = 64, pacing: str = "AsFastAsPossible") -> AutofocusUniMMCore:
    core = AutofocusUniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))
    core.setProperty("Camera", "SensorSize", str(size))
    core.setProperty("Camera", "Pacing", pacing)
    core.waitForSystem()
    return core


@pytest.fixture
def core() -> Iterator[AutofocusUniMMCore]:
    c = _core()
    yield c
    c.unloadAllDevices()
    del c
    gc.collect()


def _defocus_after_snap(core: Any) -> float:
    core.snapImage()
    vm = get_virtual_microscope(core)
    return float(vm.truth(vm.frame - 1).defocus_um)


# ---------------------------------------------------------------- camera, limits, turret


def test_binning_sums_charge_and_the_pixel_size_follows(core: Any) -> None:
    assert [int(b) for b in core.getAllowedPropertyValues("Camera", "Binning")] == [1, 2, 4]
    core.setProperty("Laser561", "Power", 10)
    core.setExposure(20)
    core.snapImage()
    one = core.getImage().astype(float)
    vm = get_virtual_microscope(core)
    px = vm.truth(vm.frame - 1).pixel_size_um
    core.setProperty("Camera", "Binning", "2")
    core.snapImage()
    two = core.getImage().astype(float)
    assert two.shape == (32, 32) and core.getImageWidth() == 32
    assert core.getPixelSizeUm() == pytest.approx(0.2) and vm.truth(
        vm.frame - 1
    ).pixel_size_um == pytest.approx(2 * px)
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    assert (two.mean() - offset) == pytest.approx(4 * (one.mean() - offset), rel=0.15)
    core.setROI(4, 4, 8, 8)  # in binned pixels, as Micro-Manager's
    core.snapImage()
    assert core.getImage().shape == (8, 8)
    core.setProperty("Camera", "Binning", "4")  # a new binning clears the ROI
    assert core.getROI() == [0, 0, 16, 16]
    with pytest.raises((RuntimeError, ValueError)):
        core.setProperty("Camera", "Binning", "3")


def test_limits_match_behaviour(core: Any) -> None:
    assert core.getPropertyUpperLimit("Laser405", "Power") == 50
    assert core.getPropertyUpperLimit("Lamp", "Power") == 100
    assert core.getPropertyUpperLimit("Laser640", "Power") == 200
    core.setProperty("Laser405", "Power", 50)
    assert core.getProperty("Laser405", "Power") == 50
    with pytest.raises((RuntimeError, ValueError)):
        core.setProperty("Laser405", "Power", 100)  # refused, not clamped
    assert core.getProperty("Laser405", "Power") == 50
    with pytest.raises((RuntimeError, ValueError)):
        core.loadPropertySequence("Laser405", "Power", [10, 60])
    lo, hi = (
        core.getPropertyLowerLimit("Camera", "Exposure"),
        core.getPropertyUpperLimit("Camera", "Exposure"),
    )
    for ms in (lo, hi):
        core.setProperty("Camera", "Exposure", ms)
        assert core.getExposure() == pytest.approx(ms)
    for ms in (lo / 2, hi * 2):
        with pytest.raises((RuntimeError, ValueError)):
            core.setExposure(ms)
    assert core.hasPropertyLimits("Camera", "EMGain")
    with pytest.raises((RuntimeError, ValueError)):
        core.setProperty("Camera", "EMGain", 0.5)


def test_every_turret_position_is_a_labelled_objective_with_a_pixel_size(core: Any) -> None:
    labels = core.getStateLabels("Objective")
    assert sorted(labels) == sorted(o.label for o in OBJECTIVES)
    assert sorted(core.getAvailableConfigs("Objective")) == sorted(
        ["10x", "20x", "40x Air", "40x Oil", "60x", "100x"]
    )
    vm = get_virtual_microscope(core)
    for state, label in enumerate(labels):
        core.setState("Objective", state)
        obj = next(o for o in OBJECTIVES if o.label == label)
        assert core.getPixelSizeUm() == pytest.approx(obj.pixel_size_um)
        core.snapImage()
        assert vm.truth(vm.frame - 1).objective == label


def test_the_shutter_has_a_state_property(core: Any) -> None:
    assert core.getShutterDevice() == "Shutter"
    core.setProperty("Shutter", "State", 1)
    assert core.getShutterOpen("Shutter") and get_virtual_microscope(core).shutter_open
    core.setShutterOpen("Shutter", False)
    assert core.getProperty("Shutter", "State") == 0


def test_a_python_device_property_change_is_signalled_once(core: Any) -> None:
    got: list[tuple[Any, ...]] = []
    core.events.propertyChanged.connect(lambda *a: got.append(a) if a[0] != "Core" else None)
    many: list[bool] = []
    core.events.propertiesChanged.connect(lambda: many.append(True))
    core.setProperty("Laser488", "Power", 3.0)
    core.setProperty("Laser488", "Power", 3.0)  # the same value: no signal
    core.setProperty("Camera", "Scenario", "beads")
    assert got == [("Laser488", "Power", "3.0"), ("Camera", "Scenario", "beads")]
    assert many == [True]  # a new scenario loads its own light settings: every property may change


# ---------------------------------------------------------------- focus: direction and autofocus


def test_the_engine_restores_the_start_position_it_knows_the_focus_direction_of(core: Any) -> None:
    assert core.getFocusDirection("Z") != 0
    core.setZPosition(0.0)
    core.setXYPosition(0.0, 0.0)
    core.mda.run(useq.MDASequence(stage_positions=[(100.0, 50.0, 5.0)]))
    assert core.getZPosition() == pytest.approx(0.0)
    assert core.getXYPosition() == pytest.approx((0.0, 0.0))


def test_autofocus_cancels_the_drift_and_holds_its_offset(core: Any) -> None:
    assert core.getAutoFocusDevice() == "Autofocus"
    assert list(core.getLoadedDevicesOfType(DeviceType.AutoFocus)) == ["Autofocus"]
    core.setProperty("Z", "FocusDriftRate_um_per_s", 1.0)
    core.setExposure(250)  # simulated time: 0.25 s a frame, so 0.25 µm of drift a frame
    for _ in range(8):
        drifted = _defocus_after_snap(core)
    assert drifted > 1.5
    core.fullFocus()
    assert abs(_defocus_after_snap(core)) <= 0.02
    assert core.getLastFocusScore() == pytest.approx(1.0)
    core.setAutoFocusOffset(1.0)
    core.fullFocus()
    assert _defocus_after_snap(core) == pytest.approx(-1.0, abs=0.02)
    core.setAutoFocusOffset(0.0)
    core.enableContinuousFocus(True)  # the lock follows the drift frame by frame
    assert [abs(_defocus_after_snap(core)) <= 0.02 for _ in range(6)] == [True] * 6
    assert core.isContinuousFocusLocked()
    core.enableContinuousFocus(False)
    assert [_defocus_after_snap(core) for _ in range(3)][-1] > 0.4  # released: the drift is back
    core.setProperty("Autofocus", "CaptureRange_um", 1.0)
    core.setZPosition(core.getZPosition() + 5.0)
    with pytest.raises(RuntimeError, match="beyond the capture range"):
        core.fullFocus()


def test_a_useq_autofocus_plan_runs_through_pymmcore_plus(core: Any) -> None:
    core.setProperty("Z", "FocusDriftRate_um_per_s", 1.0)
    core.setExposure(250)
    vm = get_virtual_microscope(core)
    defocus: list[float] = []
    core.mda.events.frameReady.connect(lambda *a: defocus.append(vm.truth(vm.frame - 1).defocus_um))
    plain = useq.MDASequence(time_plan={"interval": 0, "loops": 6})
    core.mda.run(plain)
    assert defocus[-1] - defocus[0] > 1.0  # the drift, uncorrected
    defocus.clear()
    focused = plain.model_copy(
        update={"autofocus_plan": useq.AxesBasedAF(autofocus_motor_offset=0.0, axes=("t",))}
    )
    core.mda.run(focused)
    assert len(defocus) == 6 and max(abs(d) for d in defocus) <= 0.02, defocus


def test_a_useq_autofocus_plan_runs_through_smartscope_run(tmp_path: Path) -> None:
    plan = useq.MDASequence(
        time_plan={"interval": 0, "loops": 5},
        autofocus_plan=useq.AxesBasedAF(autofocus_motor_offset=0.0, axes=("t",)),
    )
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={
                "config_file": "virtual",
                "lasers": virtual_lights(),
                "focus": "Z",
                "buffer_size_mb": 16,
                "startup": [
                    {"device": "Camera", "property": "SensorSize", "value": "64"},
                    {"device": "Camera", "property": "Pacing", "value": "AsFastAsPossible"},
                    {"device": "Z", "property": "FocusDriftRate_um_per_s", "value": 1.0},
                ],
            },
            acquisition={"exposure_ms": 250.0, "mda": json.loads(plan.model_dump_json(exclude_unset=True))},
        )
    )
    res = run(cfg, report=False)
    assert res.status == "completed", res.reason
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    assert [f["axes"]["t"] for f in frames] == [0, 1, 2, 3, 4]
    z = [f["state"]["z_um"] for f in frames]
    steps = np.diff(z)
    assert np.all(steps > 0.1), z  # the autofocus moved Z with the drift before every frame


# ---------------------------------------------------------------- the first interval of a time-lapse


def _exposure_starts(core: Any, seq: useq.MDASequence) -> list[float]:
    vm = get_virtual_microscope(core)
    starts: list[float] = []
    core.mda.events.frameReady.connect(lambda *a: starts.append(vm.truth(vm.frame - 1).exposure_start_s))
    core.mda.run(seq)
    return starts


def test_the_first_time_lapse_interval_keeps_the_plan_after_a_change_the_core_waited_for() -> None:
    core = _core(size=128, pacing="RealTime")
    try:
        core.setProperty("Camera", "Scenario", "events")  # the sample must be rebuilt ...
        core.waitForSystem()  # ... and the camera is busy until it is
        starts = _exposure_starts(core, useq.MDASequence(time_plan={"interval": 0.5, "loops": 3}))
        assert np.diff(starts)[0] == pytest.approx(0.5, rel=0.1), starts
    finally:
        core.unloadAllDevices()


@pytest.mark.slow
def test_the_first_time_lapse_interval_keeps_the_plan_on_the_shipped_configuration() -> None:
    core = UniMMCore()  # a plain pymmcore-plus program: the sample was built at initialisation
    core.loadSystemConfiguration(str(virtual_config_path()))
    try:
        starts = _exposure_starts(core, useq.MDASequence(time_plan={"interval": 0.5, "loops": 3}))
        assert np.diff(starts)[0] == pytest.approx(0.5, rel=0.1), starts
    finally:
        core.unloadAllDevices()


def test_the_first_time_lapse_interval_keeps_the_plan_through_smartscope_run(tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={
                "config_file": "virtual",
                "lasers": virtual_lights(),
                "startup": [
                    {"device": "Camera", "property": "SensorSize", "value": "128"},
                    {"device": "Camera", "property": "Scenario", "value": "events"},
                ],
            },
            acquisition={"exposure_ms": 10.0, "interval_ms": 500.0, "n_frames": 3},
        )
    )
    res = run(cfg, report=False)
    assert res.status == "completed", res.reason
    t = [f["camera_time_s"] for f in read_jsonl(Path(res.run_dir) / "frames.jsonl")]
    # the defect this guards against collapsed the first interval (the sample built at the
    # first frame delayed it, and the next frame kept the schedule: 286 ms instead of 500);
    # a loaded machine can only make a frame late, so the lower bound is the claim and the
    # upper one only says no frame was skipped
    first_s = float(np.diff(t)[0])
    assert 0.9 * 0.5 <= first_s < 2 * 0.5, t
