"""The virtual camera behaves like a real one in wall-clock time (Pacing=RealTime).

Sequence start/stop cost, real exposure windows in every frame's metadata, light changed in
mid-exposure integrated in proportion, the shutter and the core's AutoShutter — all through
a real UniMMCore loaded with virtual_microscope.cfg.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pymmcore_plus.experimental.unicore import UniMMCore

from smartscope.simulators import get_virtual_microscope, virtual_config_path
from smartscope.simulators.devices import FRAME_METADATA_KEYS
from smartscope.simulators.microscope import LIGHT_SOURCES


@pytest.fixture
def rtcore() -> Iterator[UniMMCore]:
    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))
    core.setProperty("Camera", "SensorSize", "64")
    assert core.getProperty("Camera", "Pacing") == "RealTime"  # the shipped default
    yield core
    if core.isSequenceRunning():
        core.stopSequenceAcquisition()
    core.unloadAllDevices()
    del core
    gc.collect()


def pop(core: UniMMCore, n: int, timeout_s: float = 30.0) -> list[tuple[np.ndarray, dict[str, Any], float]]:
    """n frames from the buffer, each with the wall time it was popped."""
    out: list[tuple[np.ndarray, dict[str, Any], float]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        if core.getRemainingImageCount():
            img, md = core.popNextImageAndMD()
            out.append((np.array(img), dict(md), time.time()))
        else:
            time.sleep(0.0005)
    assert len(out) == n
    return out


def window(md: dict[str, Any]) -> tuple[float, float]:
    return float(md["ExposureStart_s"]), float(md["ExposureEnd_s"])


def test_default_costs_are_those_of_an_scmos(rtcore: UniMMCore) -> None:
    assert float(rtcore.getProperty("Camera", "SequenceStartCost_ms")) == 100.0
    assert float(rtcore.getProperty("Camera", "SequenceStopCost_ms")) == 20.0


def test_a_one_second_start_cost_delays_the_first_frame(rtcore: UniMMCore) -> None:
    rtcore.setProperty("Camera", "SequenceStartCost_ms", 1000.0)
    t_call = time.time()
    rtcore.startSequenceAcquisition(3, 0, True)
    returned_after = time.time() - t_call
    frames = pop(rtcore, 3)
    first_start, first_end = window(frames[0][1])
    # the call returns at once; the camera arms in the background (like UniMMCore's thread)
    assert returned_after < 0.9
    assert first_start - t_call >= 1.0
    assert frames[0][2] - t_call >= 1.0 + 0.010  # popped after the cost and one 10 ms exposure
    assert first_end - first_start == pytest.approx(0.010, abs=2e-6)


def test_stop_takes_the_stop_cost_and_the_next_start_pays_again(rtcore: UniMMCore) -> None:
    rtcore.setProperty("Camera", "SequenceStartCost_ms", 200.0)
    rtcore.setProperty("Camera", "SequenceStopCost_ms", 300.0)
    rtcore.startContinuousSequenceAcquisition(0)
    pop(rtcore, 2)
    t = time.time()
    rtcore.stopSequenceAcquisition()
    assert time.time() - t >= 0.3
    rtcore.clearCircularBuffer()
    t_call = time.time()
    rtcore.startSequenceAcquisition(1, 0, True)
    ((_, md, _),) = pop(rtcore, 1)
    assert window(md)[0] - t_call >= 0.2


def test_exposure_windows_are_real_back_to_back_intervals(rtcore: UniMMCore) -> None:
    rtcore.setProperty("Camera", "SequenceStartCost_ms", 0.0)
    rtcore.setExposure(50.0)
    t_call = time.time()
    rtcore.startSequenceAcquisition(12, 0, True)
    frames = pop(rtcore, 12)
    wins = [window(md) for _, md, _ in frames]
    for (s, e), (_, md, popped) in zip(wins, frames, strict=True):
        assert e - s == pytest.approx(0.050, abs=2e-6)  # two µs-rounded stamps
        assert popped >= e  # a frame is read out after its exposure ended
        assert set(FRAME_METADATA_KEYS) <= set(md)
    starts = np.array([s for s, _ in wins])
    assert starts[0] >= t_call
    # frame k+1 starts when frame k ends (exposure-limited); never earlier, later only when
    # the host falls behind (bench/simulator.py --realtime measures how often)
    gaps = np.diff(starts)
    assert np.all(gaps >= 0.050 - 2e-6)
    assert np.sum(np.abs(gaps - 0.050) < 2e-6) >= 1


def test_as_fast_as_possible_spends_no_wall_time(rtcore: UniMMCore) -> None:
    rtcore.setProperty("Camera", "Pacing", "AsFastAsPossible")
    rtcore.setProperty("Camera", "SequenceStartCost_ms", 1900.0)
    rtcore.setExposure(1000.0)
    t_call = time.time()
    rtcore.startSequenceAcquisition(3, 0, True)
    frames = pop(rtcore, 3)
    assert frames[-1][2] - t_call < 2.5  # neither the 1.9 s start cost nor 3 × 1 s of exposure
    for _, md, _ in frames:
        s, e = window(md)
        assert s == e  # the window collapses to the rendering moment
        assert float(md["Exposure-ms"]) == 1000.0  # photons still count a 1 s exposure


def straddling(
    frames: list[tuple[np.ndarray, dict[str, Any], float]], t_before: float, t_after: float
) -> int:
    """Index of the frame whose exposure contains the change made between the two times."""
    hits = [i for i, (_, md, _) in enumerate(frames) if window(md)[0] < t_before and t_after < window(md)[1]]
    assert len(hits) == 1, "the change fell between exposures (host far behind)"
    return hits[0]


def test_power_changed_in_mid_exposure_counts_in_proportion(rtcore: UniMMCore) -> None:
    vm = get_virtual_microscope(rtcore)
    rtcore.setProperty("Camera", "SequenceStartCost_ms", 0.0)
    rtcore.setExposure(400.0)
    rtcore.setProperty("Laser561", "Power", 10.0)
    rtcore.startContinuousSequenceAcquisition(0)
    first = pop(rtcore, 1)  # at 10 mW; the next exposure starts as it ends: change in its middle
    time.sleep(max(0.0, window(first[0][1])[1] + 0.200 - time.time()))
    t_before = time.time()
    rtcore.setProperty("Laser561", "Power", 30.0)
    t_after = time.time()
    frames = first + pop(rtcore, 4)
    rtcore.stopSequenceAcquisition()
    k = straddling(frames, t_before, t_after)
    assert k < len(frames) - 1, "no frame after the change (host far behind)"
    truths = [vm.truth(int(md["SimFrame"])) for _, md, _ in frames]
    t0, t1, t2 = truths[k - 1], truths[k], truths[k + 1]
    s, e = window(frames[k][1])
    # the part of the exposure at 30 mW: the change happened between t_before and t_after
    frac_lo, frac_hi = (e - t_after) / (e - s), (e - t_before) / (e - s)
    assert 0.0 < frac_lo <= frac_hi < 1.0
    assert 10 + 20 * frac_lo - 1e-9 <= t1.power_mean_mw["561"] <= 10 + 20 * frac_hi + 1e-9
    assert not t1.power_constant["561"] and t1.power_constant["488"]
    md1 = frames[k][1]
    assert md1["SimPowerConstant"] == "0"
    assert float(md1["SimPowerMean_mW_561"]) == pytest.approx(t1.power_mean_mw["561"], rel=1e-5)
    assert all(t.power_constant["561"] and t.power_mean_mw["561"] == 10.0 for t in truths[:k])
    assert all(t.power_constant["561"] and t.power_mean_mw["561"] == 30.0 for t in truths[k + 1 :])
    assert t1.power_mw["561"] == 30.0  # the setpoint at the end of the exposure
    # photons and dose are the integral of the light: between the 10 mW and 30 mW frames
    assert t0.clean is not None and t1.clean is not None and t2.clean is not None
    p0, p1, p2 = (float(t.clean.mean()) for t in (t0, t1, t2))
    w = (t1.power_mean_mw["561"] - 10.0) / 20.0
    assert p1 == pytest.approx(p0 + w * (p2 - p0), rel=0.03)  # ~2 %/frame bleaching aside
    assert t1.dose_mj["561"] == pytest.approx(t1.power_mean_mw["561"] * 400.0 * 1e-3)
    ledger = {int(r["frame"]): r for r in vm.ledger}
    assert ledger[t1.frame]["dose_mj_561"] == pytest.approx(t1.dose_mj["561"])


def test_closed_shutter_gives_dark_frames_and_autoshutter_opens_it(rtcore: UniMMCore) -> None:
    vm = get_virtual_microscope(rtcore)
    rtcore.setProperty("Camera", "Pacing", "AsFastAsPossible")
    assert rtcore.getShutterDevice() == "Shutter" and rtcore.getAutoShutter()
    assert not rtcore.getShutterOpen()  # closed at rest ...
    rtcore.snapImage()  # ... yet lit: the core's AutoShutter opens it for the exposure
    lit = vm.truth(vm.frame - 1)
    assert lit.power_mean_mw["561"] == 10.0 and lit.shutter_open
    rtcore.setAutoShutter(False)
    rtcore.snapImage()
    dark = vm.truth(vm.frame - 1)
    assert all(v == 0.0 for v in dark.power_mean_mw.values()) and not dark.shutter_open
    assert dark.clean is not None and float(dark.clean.max()) == 0.0
    assert dark.dose_mj["561"] == 0.0
    img = rtcore.getImage()
    cam = vm.camera
    assert abs(float(img.mean()) + 0.5 - cam.offset_adu) < 1.0  # offset and read noise only
    rtcore.setShutterOpen(True)
    rtcore.snapImage()
    assert vm.truth(vm.frame - 1).power_mean_mw["561"] == 10.0
    rtcore.setShutterOpen(False)
    rtcore.setProperty("Core", "AutoShutter", "1")
    rtcore.snapImage()
    assert vm.truth(vm.frame - 1).power_mean_mw["561"] == 10.0


def test_closing_the_shutter_in_mid_exposure_cuts_the_light_in_proportion(rtcore: UniMMCore) -> None:
    vm = get_virtual_microscope(rtcore)
    rtcore.setProperty("Camera", "SequenceStartCost_ms", 0.0)
    rtcore.setAutoShutter(False)
    rtcore.setShutterOpen(True)
    rtcore.setExposure(400.0)
    rtcore.startContinuousSequenceAcquisition(0)
    first = pop(rtcore, 1)
    time.sleep(max(0.0, window(first[0][1])[1] + 0.200 - time.time()))
    t_before = time.time()
    rtcore.setShutterOpen(False)
    t_after = time.time()
    frames = first + pop(rtcore, 2)
    rtcore.stopSequenceAcquisition()
    k = straddling(frames, t_before, t_after)
    s, e = window(frames[k][1])
    t1 = vm.truth(int(frames[k][1]["SimFrame"]))
    open_lo, open_hi = (t_before - s) / (e - s), (t_after - s) / (e - s)
    assert 10.0 * open_lo - 1e-9 <= t1.power_mean_mw["561"] <= 10.0 * open_hi + 1e-9
    assert 0.0 < t1.power_mean_mw["561"] < 10.0
    assert not t1.power_constant["561"] and not t1.shutter_open
    assert set(t1.power_mean_mw) == set(LIGHT_SOURCES)
