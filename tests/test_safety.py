"""Safety gate: limits clamp or refuse, rates are bounded, lowering light is always allowed."""

from __future__ import annotations

import pytest

from smartscope.actions import (
    ActionRequest,
    SetExposure,
    SetInterval,
    SetLaserPower,
    SetLaserSequence,
    SetMirror,
    SetProperty,
    SetZ,
)
from smartscope.config import LaserConfig, LimitsConfig
from smartscope.safety import SafetyGate
from smartscope.state import DriverState

LASERS = {"488": LaserConfig(device="L488", power_property="Power", wavelength_nm=488, max_power_mw=50)}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def req(action) -> ActionRequest:  # type: ignore[no-untyped-def]
    return ActionRequest(action=action, reason="test", source="test")


CASES = [
    # limits, action, verdict, expected action after vetting (None = refused)
    ({}, SetExposure(exposure_ms=5), "applied", SetExposure(exposure_ms=5)),
    ({"exposure_ms": (1, 100)}, SetExposure(exposure_ms=500), "clamped", SetExposure(exposure_ms=100)),
    ({"exposure_ms": (1, 100), "on_violation": "refuse"}, SetExposure(exposure_ms=500), "refused", None),
    ({}, SetLaserPower(laser="488", power_mw=80), "clamped", SetLaserPower(laser="488", power_mw=50)),
    (
        {"laser_max_mw": {"488": 20}},
        SetLaserPower(laser="488", power_mw=30),
        "clamped",
        SetLaserPower(laser="488", power_mw=20),
    ),
    ({}, SetLaserPower(laser="640", power_mw=1), "refused", None),
    (
        {},
        SetProperty(device="L488", property="Power", value=90),
        "clamped",
        SetProperty(device="L488", property="Power", value=50.0),
    ),
    ({}, SetProperty(device="L488", property="Power", value="lots"), "refused", None),
    (
        {"allowed_values": {"Filter.Label": ["GFP", "RFP"]}},
        SetProperty(device="Filter", property="Label", value="DAPI"),
        "refused",
        None,
    ),
    (
        {"allowed_values": {"Filter.Label": ["GFP", "RFP"]}},
        SetProperty(device="Filter", property="Label", value="GFP"),
        "applied",
        SetProperty(device="Filter", property="Label", value="GFP"),
    ),
    ({"interval_ms_min": 50}, SetInterval(interval_ms=10), "clamped", SetInterval(interval_ms=50)),
    (
        {"mirror_max_rad": 1.0},
        SetMirror(zernike_rad=(0.0, 2.0, -3.0)),
        "clamped",
        SetMirror(zernike_rad=(0.0, 1.0, -1.0)),
    ),
    ({"z_um": (-10, 10)}, SetZ(z_um=25), "clamped", SetZ(z_um=10)),
    (
        {"laser_max_mw": {"488": 20}},
        SetLaserSequence(laser="488", powers_mw=(0, 10, 30)),
        "clamped",
        SetLaserSequence(laser="488", powers_mw=(0, 10, 20)),
    ),
    (
        {"laser_max_mw": {"488": 20}, "on_violation": "refuse"},
        SetLaserSequence(laser="488", powers_mw=(0, 30)),
        "refused",
        None,
    ),
    ({}, SetLaserSequence(laser="640", powers_mw=(0, 1)), "refused", None),
]


@pytest.mark.parametrize(("limits", "action", "verdict", "expected"), CASES)
def test_limits(limits, action, verdict, expected) -> None:  # type: ignore[no-untyped-def]
    gate = SafetyGate(LimitsConfig(**limits), LASERS)
    d = gate.vet(req(action))
    assert d.verdict == verdict, d.note
    assert d.action == expected
    if verdict != "applied":
        assert d.note  # a clamp or refusal always says why


def test_laser_rise_is_rate_limited_but_lowering_is_not() -> None:
    clock = Clock()
    gate = SafetyGate(LimitsConfig(max_power_change_mw_per_s=10), LASERS, clock=clock)
    gate.observe_state(DriverState(exposure_ms=10.0, lasers={"488": 5.0}))
    clock.t += 0.5
    d = gate.vet(req(SetLaserPower(laser="488", power_mw=40)))
    assert d.verdict == "clamped"
    assert d.action == SetLaserPower(laser="488", power_mw=10.0)  # 5 + 10 mW/s * 0.5 s
    assert d.action is not None
    clock.t += 0.01
    down = gate.vet(req(SetLaserPower(laser="488", power_mw=0)))
    assert down.verdict == "applied"


def test_exposure_ratio_rate_limit() -> None:
    clock = Clock()
    gate = SafetyGate(LimitsConfig(max_exposure_ratio_per_s=4.0), {}, clock=clock)
    gate.observe_state(DriverState(exposure_ms=10.0))
    clock.t += 0.5
    up = gate.vet(req(SetExposure(exposure_ms=100)))
    assert up.verdict == "clamped"
    assert isinstance(up.action, SetExposure)
    assert up.action.exposure_ms == pytest.approx(20.0)  # 4 ** 0.5 = 2x
    gate.observe_applied([up.action], [None])
    clock.t += 0.5  # judged against the scheduled 20 ms, not the 10 ms the camera had
    down = gate.vet(req(SetExposure(exposure_ms=1)))
    assert isinstance(down.action, SetExposure)
    assert down.action.exposure_ms == pytest.approx(10.0)


def test_a_laser_schedule_rises_no_faster_than_a_single_power() -> None:
    """A schedule may reach its peak on its first frame: the peak is vetted as a power
    (rate-limited from the scheduled value) and becomes the scheduled value; and it steps
    once per frame, so each step rises at most the rate times one exposure."""
    clock = Clock()
    gate = SafetyGate(LimitsConfig(max_power_change_mw_per_s=10), LASERS, clock=clock)
    gate.observe_state(DriverState(exposure_ms=100.0, lasers={"488": 0.0}))
    clock.t += 0.5
    d = gate.vet(req(SetLaserSequence(laser="488", powers_mw=(0, 2, 40))))
    # the peak: at most 5 mW after 0.5 s; each 100 ms frame: at most +1 mW
    assert d.verdict == "clamped" and d.action == SetLaserSequence(laser="488", powers_mw=(0, 1.0, 2.0))
    assert gate.scheduled("laser:488") == 2.0
    gate.observe_applied([d.action], [None])
    clock.t += 0.01  # a power right after cannot use the schedule's low steps to jump
    after = gate.vet(req(SetLaserPower(laser="488", power_mw=40))).action
    assert isinstance(after, SetLaserPower) and after.power_mw == pytest.approx(2.1)


@pytest.mark.parametrize("powers", [(1.0,), (1.0, -1.0), (1.0, float("nan")), (1.0, float("inf"))])
def test_a_schedule_with_one_step_or_impossible_powers_does_not_validate(powers) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        SetLaserSequence(laser="488", powers_mw=powers)
