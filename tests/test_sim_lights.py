"""Light over wall-clock time: step timelines, window means, and what a frame receives."""

from __future__ import annotations

import numpy as np
import pytest

from smartscope.simulators.lights import LightPath, StepTimeline
from smartscope.simulators.microscope import VirtualMicroscope


def test_window_mean_integrates_power_and_gate_changes() -> None:
    lp = LightPath(["561", "640"], {"561": 10.0})
    lp.set_power("561", 30.0, 1.5)
    lp.set_gate(False, 2.5)
    mean, const = lp.received(1.0, 3.0)
    # 0.5 s at 10 mW, 1 s at 30 mW, 0.5 s dark
    assert mean["561"] == pytest.approx((0.5 * 10 + 1.0 * 30 + 0.5 * 0) / 2.0)
    assert mean["640"] == 0.0 and const["640"] and not const["561"]
    assert lp.received(1.6, 2.4) == ({"561": 30.0, "640": 0.0}, {"561": True, "640": True})
    # a collapsed window reads the settings in force now (gate closed)
    assert lp.received(5.0, 5.0)[0] == {"561": 0.0, "640": 0.0}
    assert lp.setpoints() == {"561": 30.0, "640": 0.0}


def test_a_late_entry_with_an_earlier_stamp_lands_in_time_order() -> None:
    tl = StepTimeline(0.0)
    tl.set(5.0, 10.0)
    tl.set(7.0, 12.0)
    tl.set(3.0, 11.0)  # recorded last, in force from 11 to 12
    assert [tl.value_at(t) for t in (9.9, 10.5, 11.5, 12.5)] == [0.0, 5.0, 3.0, 7.0]
    assert tl.latest == 7.0
    assert tl.breakpoints(10.0, 12.0) == [11.0]
    for k in range(2000):  # history beyond keep_s before the newest entry is dropped ...
        tl.set(float(k), 1000.0 + k)
    assert len(tl.breakpoints(-np.inf, np.inf)) <= 512
    # ... and everything within keep_s of it is exact
    recent = np.arange(2999.0 - tl.keep_s, 3000.0)
    assert [tl.value_at(t) for t in recent] == list(recent - 1000.0)


def test_a_frame_receives_the_mean_of_a_change_in_mid_exposure() -> None:
    # same sample, same clock: 10 → 30 mW half-way through equals a steady 20 mW, exactly
    changed = VirtualMicroscope("cells", seed=4, sensor_px=64)
    steady = VirtualMicroscope("cells", seed=4, sensor_px=64)
    changed.set_power("561", 10.0, at_s=100.0)
    changed.set_power("561", 30.0, at_s=100.05)
    steady.set_power("561", 20.0, at_s=99.0)
    _, ta = changed.render_frame((100.0, 100.1))
    _, tb = steady.render_frame((100.0, 100.1))
    assert ta.power_mean_mw["561"] == pytest.approx(20.0) and not ta.power_constant["561"]
    assert tb.power_constant["561"]
    assert ta.clean is not None and tb.clean is not None
    np.testing.assert_allclose(ta.clean, tb.clean, rtol=1e-5)
    assert ta.dose_mj == pytest.approx(tb.dose_mj)
    assert (ta.exposure_start_s, ta.exposure_end_s) == (100.0, 100.1)
    assert ta.power_mw["561"] == 30.0 and tb.power_mw["561"] == 20.0


def test_shutter_and_auto_shutter_make_the_gate() -> None:
    vm = VirtualMicroscope("beads", sensor_px=32)
    assert not vm.shutter_open and vm.auto_shutter and vm.light_gate_open
    vm.set_auto_shutter(False, at_s=10.0)
    assert not vm.light_gate_open
    vm.set_shutter(True, at_s=11.0)
    _, t = vm.render_frame((10.0, 12.0))  # dark for 1 s, lit for 1 s
    assert t.power_mean_mw["640"] == pytest.approx(0.5 * vm.power_mw["640"])
    assert t.shutter_open and not t.power_constant["640"]
