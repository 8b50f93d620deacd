"""VirtualMicroscope: seeding, ground-truth history, dose ledger, timing."""

from __future__ import annotations

import numpy as np
import pytest

from smartscope.simulators.microscope import VirtualMicroscope


@pytest.mark.parametrize("scenario", ["cells", "smlm", "events"])
def test_same_seed_same_frames(scenario: str) -> None:
    a = VirtualMicroscope(scenario, seed=5, sensor_px=64)  # type: ignore[arg-type]
    b = VirtualMicroscope(scenario, seed=5, sensor_px=64)  # type: ignore[arg-type]
    c = VirtualMicroscope(scenario, seed=6, sensor_px=64)  # type: ignore[arg-type]
    fa = [a.render_frame()[0] for _ in range(3)]
    fb = [b.render_frame()[0] for _ in range(3)]
    fc = [c.render_frame()[0] for _ in range(3)]
    for x, y in zip(fa, fb, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(fa, fc, strict=True))


def test_history_ledger_and_clock() -> None:
    vm = VirtualMicroscope("smlm", seed=1, sensor_px=64, history_frames=5)
    vm.set_exposure_ms(20.0)
    vm.set_power(640, 50.0)
    for _ in range(8):
        vm.render_frame()
    with pytest.raises(KeyError, match="not in ground-truth history"):
        vm.truth(1)
    t = vm.truth(7)
    assert t.t_s == pytest.approx(7 * 0.020)  # exposure-limited frame interval
    assert t.dose_mj["640"] == pytest.approx(50.0 * 20.0 * 1e-3)
    assert len(vm.ledger) == 8
    assert sum(r["dose_mj_640"] for r in vm.ledger) == pytest.approx(8 * 1.0)


def test_bad_settings_are_refused_with_the_field_name() -> None:
    vm = VirtualMicroscope("beads", sensor_px=32)
    with pytest.raises(ValueError, match="power_mw"):
        vm.set_power("561", -1.0)
    with pytest.raises(ValueError, match="light source"):
        vm.set_power("999", 1.0)
    with pytest.raises(ValueError, match="scenario"):
        vm.configure(scenario="nope")
    with pytest.raises(ValueError, match="ROI"):
        vm.set_roi(0, 0, 64, 64)
    with pytest.raises(ValueError, match="exposure_ms"):
        vm.set_exposure_ms(0.0)
