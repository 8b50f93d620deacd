"""Low-light dose control on the virtual microscope: less light at the target SNR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smartscope.actions import SetLaserPower
from smartscope.config import LowlightScenario, SNRDoseConfig
from smartscope.controllers.base import Observation
from smartscope.controllers.lowlight import SNRDoseController
from smartscope.frame import DriverState, Frame
from smartscope.pipeline import StageOutput
from smartscope.scenarios import lowlight


def _obs(i: int, snr: float, power: float) -> Observation:
    frame = Frame(index=i, image=np.zeros((4, 4), np.uint16), camera_time_s=float(i))
    state = DriverState(exposure_ms=10.0, lasers={"561": power})
    return Observation(frame, {"denoise": StageOutput(values={"snr": snr})}, state)


def test_scales_power_by_the_inverse_snr_law_and_waits_for_it() -> None:
    ctl = SNRDoseController(SNRDoseConfig(laser="561", target_snr=2.0, gamma=1.0, smoothing_frames=1))
    (req,) = ctl.update(_obs(0, 4.0, 20.0))  # twice the target: lower the power
    assert isinstance(req.action, SetLaserPower)
    assert req.action.power_mw == pytest.approx(20.0 / 1.5)  # bounded by max_step_ratio
    assert req.evidence["snr"] == 4.0
    assert ctl.update(_obs(1, 4.0, 20.0)) == []  # old power still in force: wait
    assert ctl.update(_obs(2, 2.2, req.action.power_mw)) == []  # settle frame
    assert ctl.update(_obs(3, 2.2, req.action.power_mw)) == []  # inside [2, 2.5]: hold
    (up,) = ctl.update(_obs(4, 1.0, req.action.power_mw))  # signal faded (bleaching): raise
    assert isinstance(up.action, SetLaserPower) and up.action.power_mw > req.action.power_mw


def test_power_limits_and_bad_config() -> None:
    ctl = SNRDoseController(SNRDoseConfig(laser="561", target_snr=2.0, smoothing_frames=1, max_power_mw=20))
    assert ctl.update(_obs(0, 0.5, 20.0)) == []  # already at the ceiling
    with pytest.raises(ValueError, match="min_power_mw"):
        SNRDoseConfig(laser="561", target_snr=2, min_power_mw=5, max_power_mw=1)


def test_dose_controller_lowers_power_while_snr_holds(tmp_path: Path) -> None:
    """Real loop, N2V bundle stage, MMCore virtual microscope: less dose, SNR kept at target."""
    both = lowlight.run(LowlightScenario(power_mw=20.0, target_snr=2.0, n_frames=300), tmp_path)
    fixed, ctl = both.fixed, both.controlled
    assert min(ctl.power_mw) < 20.0
    snr = np.asarray(ctl.snr)
    assert snr.size >= 20
    assert np.mean(snr >= 2.0 * 0.95) >= 0.8, snr
    assert ctl.dose_mj < 0.95 * fixed.dose_mj
    assert ctl.bleach_remaining > fixed.bleach_remaining  # less light, less bleaching
