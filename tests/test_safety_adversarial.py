"""Trying to get past the safety gate: every path that writes to hardware, any interleaving.

Table-driven attacks on the gate (SetProperty disguises, NaN, limits), configs that must not
validate, pre-run writes refused before anything is set, and a property-based test that
drives random requests from several threads against a fake clock.
"""

from __future__ import annotations

import itertools
import math
import threading
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from smartscope.actions import (
    AcquireAt,
    Action,
    ActionRequest,
    ClearROI,
    SetExposure,
    SetInterval,
    SetLaserPower,
    SetLaserSequence,
    SetMirror,
    SetPositionInterval,
    SetProperty,
    SetROI,
    SetZ,
    SkipPosition,
    StartBurst,
    StopBurst,
)
from smartscope.config import ConfigError, LaserConfig, LimitsConfig, validate_config
from smartscope.drivers import DriverError
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.safety import Decision, Devices, SafetyGate
from smartscope.state import DriverState
from tests.conftest import DATA, LASERS, cfg_dict

LASER = {"488": LaserConfig(device="Laser488", power_property="Power", wavelength_nm=488, max_power_mw=100)}
DEVICES = Devices(camera="Camera", focus="Z", mirror="Mirror", mirror_property="Z{j}")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def req(action: Action, source: str = "test") -> ActionRequest:
    return ActionRequest(action=action, reason="adversarial test", source=source)


def gate(clock: Clock | None = None, **limits: Any) -> SafetyGate:
    lim = {"laser_max_mw": {"488": 50.0}, "exposure_ms": (0.5, 500.0), "z_um": (-5.0, 5.0), **limits}
    return SafetyGate(LimitsConfig(**lim), LASER, DEVICES, clock=clock or Clock())


# a SetProperty aimed at a limited quantity is vetted as that quantity
DISGUISES: dict[str, tuple[SetProperty, str, Any]] = {
    "camera exposure beyond the limit": (
        SetProperty(device="Camera", property="Exposure", value=5000),
        "clamped",
        500.0,
    ),
    "Z position beyond z_um": (SetProperty(device="Z", property="Position", value=80), "clamped", 5.0),
    "Z position as text": (SetProperty(device="Z", property="Position", value="-80"), "clamped", -5.0),
    "mirror mode beyond the stroke": (SetProperty(device="Mirror", property="Z7", value=9.0), "clamped", 3.0),
    "mirror vector beyond the stroke": (
        SetProperty(device="Mirror", property="ZernikeVectorRad", value="0,0,0,4,-7"),
        "clamped",
        "0,0,0,3,-3",
    ),
    "laser power beyond the ceiling": (
        SetProperty(device="Laser488", property="Power", value=150),
        "clamped",
        50.0,
    ),
    "laser power NaN as text": (
        SetProperty(device="Laser488", property="Power", value="nan"),
        "refused",
        None,
    ),
    "laser power infinity as text": (
        SetProperty(device="Laser488", property="Power", value="inf"),
        "refused",
        None,
    ),
    "Z NaN as text": (SetProperty(device="Z", property="Position", value="NaN"), "refused", None),
    "exposure not a number": (
        SetProperty(device="Camera", property="Exposure", value="long"),
        "refused",
        None,
    ),
    "negative laser power": (SetProperty(device="Laser488", property="Power", value=-3), "refused", None),
    "an unlimited property passes": (SetProperty(device="Camera", property="Binning", value=2), "applied", 2),
}


@pytest.mark.parametrize("case", DISGUISES, ids=list(DISGUISES))
def test_set_property_is_vetted_as_what_it_sets(case: str) -> None:
    action, verdict, value = DISGUISES[case]
    d = gate().vet(req(action))
    assert d.verdict == verdict, d.note
    if verdict == "refused":
        assert d.action is None and d.note
    else:
        assert isinstance(d.action, SetProperty)
        assert d.action.value == value
        assert verdict == "applied" or d.note


def test_refuse_mode_refuses_instead_of_clamping() -> None:
    g = gate(on_violation="refuse")
    assert g.vet(req(SetProperty(device="Z", property="Position", value=80))).verdict == "refused"
    assert g.vet(req(SetZ(z_um=80))).verdict == "refused"


@pytest.mark.parametrize(
    "make",
    [
        lambda: SetZ(z_um=math.nan),
        lambda: SetZ(z_um=math.inf),
        lambda: SetLaserPower(laser="488", power_mw=math.nan),
        lambda: SetExposure(exposure_ms=math.inf),
        lambda: SetMirror(zernike_rad=(0.0, math.nan)),
        lambda: SetProperty(device="Z", property="Position", value=math.nan),
    ],
)
def test_nan_and_infinity_cannot_even_be_asked_for(make: Any) -> None:
    with pytest.raises(ValidationError):
        make()


def test_lowering_through_set_property_then_raising_is_rate_limited() -> None:
    """The bypass found on main: SetProperty to 0, then SetLaserPower(41) went straight through."""
    clock = Clock()
    g = gate(clock, max_power_change_mw_per_s=10.0)
    g.observe_state(DriverState(exposure_ms=10.0, lasers={"488": 40.0}))
    clock.t += 5
    down = g.vet(req(SetProperty(device="Laser488", property="Power", value=0)))
    assert down.verdict == "applied" and down.action is not None
    g.observe_applied([down.action], [None])  # the driver applied it at once
    clock.t += 0.1
    up = g.vet(req(SetLaserPower(laser="488", power_mw=41)))
    assert up.verdict == "clamped" and isinstance(up.action, SetLaserPower)
    assert up.action.power_mw == pytest.approx(1.0)  # 10 mW/s x 0.1 s from 0


def test_interleaved_sources_cannot_add_up_past_the_rate() -> None:
    clock = Clock()
    g = gate(clock, max_power_change_mw_per_s=10.0)
    g.observe_state(DriverState(exposure_ms=10.0, lasers={"488": 0.0}))
    clock.t += 1.0
    a = g.vet(req(SetLaserPower(laser="488", power_mw=10), "controller"))
    b = g.vet(req(SetProperty(device="Laser488", property="Power", value=20), "remote:peer"))
    assert isinstance(a.action, SetLaserPower) and a.action.power_mw == 10
    assert isinstance(b.action, SetProperty) and float(b.action.value) == pytest.approx(
        10.0
    )  # nothing more yet


def test_after_a_safe_state_light_returns_only_at_the_rate() -> None:
    clock = Clock()
    g = gate(clock, max_power_change_mw_per_s=10.0)
    g.observe_state(DriverState(exposure_ms=10.0, lasers={"488": 40.0}))
    g.observe_safe_state()
    clock.t += 0.2
    d = g.vet(req(SetLaserPower(laser="488", power_mw=40)))
    assert isinstance(d.action, SetLaserPower) and d.action.power_mw == pytest.approx(2.0)


# --------------------------------------------------------------- configs


BAD_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "infinite laser maximum": (
        {"microscope": {"lasers": {"488": {**LASERS["488"], "max_power_mw": float("inf")}}}},
        "max_power_mw",
    ),
    "negative per-laser ceiling": (
        {"microscope": {"lasers": LASERS}, "limits": {"laser_max_mw": {"488": -5.0}}},
        "laser_max_mw",
    ),
    "ceiling above the laser's maximum": (
        {"microscope": {"lasers": LASERS}, "limits": {"laser_max_mw": {"488": 50.0}}},
        "laser_max_mw.488",
    ),
    "start-up property above the ceiling": (
        {
            "microscope": {
                "lasers": LASERS,
                "startup": [{"device": "Laser488", "property": "Voltage", "value": 150}],
            }
        },
        "microscope.startup[0]",
    ),
    "safe state that switches a laser on": (
        {
            "microscope": {"lasers": LASERS},
            "safe_state": {"properties": [{"device": "Laser488", "property": "Voltage", "value": 2}]},
        },
        "safe_state.properties[0]",
    ),
    "NaN exposure": ({"acquisition": {"exposure_ms": float("nan")}}, "acquisition.exposure_ms"),
    "unordered z limits": ({"limits": {"z_um": [5, -5]}}, "z_um"),
    "infinite rate limit": (
        {"limits": {"max_power_change_mw_per_s": float("inf")}},
        "max_power_change_mw_per_s",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_unsafe_configs_do_not_validate(case: str, tmp_path: Path) -> None:
    data, field = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as err:
        validate_config(cfg_dict(tmp_path, **data))
    assert field in str(err.value)


# ----------------------------------------------------------- before the run


def _preset_cfg(tmp_path: Path, preset: str) -> Any:
    return validate_config(
        cfg_dict(
            tmp_path,
            microscope={
                "config_file": str(DATA / "demo_laser_presets.cfg"),
                "lasers": {"488": {**LASERS["488"], "max_power_mw": 5.0}},
            },
            acquisition={
                "exposure_ms": 5.0,
                "n_frames": 5,
                "channels": [{"group": "Channel", "preset": preset}],
            },
        )
    )


def test_a_channel_preset_beyond_the_ceiling_is_refused_before_anything_is_set(tmp_path: Path) -> None:
    cfg = _preset_cfg(tmp_path, "Bright")
    with pytest.raises(DriverError, match=r"acquisition.channels\[0\] \(Channel/Bright\).*Voltage") as err:
        PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state)
    assert "nothing was set" in str(err.value)


def test_a_preset_within_the_ceiling_runs(tmp_path: Path) -> None:
    from smartscope.runner import run

    res = run(_preset_cfg(tmp_path, "Dim"), report=False)
    assert res.status == "completed", res.reason


def test_a_ceiling_above_the_device_property_limit_is_refused(tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={
                "config_file": str(DATA / "demo_laser.cfg"),
                "lasers": {"488": {**LASERS["488"], "max_power_mw": 50.0}},  # D-DA Voltage goes to 10
            },
        )
    )
    with pytest.raises(DriverError, match=r"max_power_mw: 50 is above Laser488.Voltage's own upper limit 10"):
        PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state)


# --------------------------------------------------------- any interleaving


RATE_MW_PER_S = 10.0
CEILING_MW = 50.0

request_st = st.tuples(
    st.integers(0, 3),  # which thread (source) asks
    st.sampled_from(["laser", "property", "lower", "apply", "apply"]),
    st.floats(0, 200, allow_nan=False),  # power asked for
    st.floats(0, 0.5, allow_nan=False),  # clock advance before it
)


@settings(max_examples=60, deadline=None)
@given(st.lists(request_st, min_size=1, max_size=60), st.floats(0, CEILING_MW))
def test_applied_power_never_rises_faster_than_the_limit(requests: list[Any], start_mw: float) -> None:
    """Requests from four threads (controllers, a person, a remote client) through one gate,
    and a driver that applies what is queued whenever it gets to it (late, after a camera
    restart, or several at once): the power the hardware gets, at the time it gets it,
    obeys the rate and the ceiling."""
    clock = Clock()
    g = SafetyGate(
        LimitsConfig(laser_max_mw={"488": CEILING_MW}, max_power_change_mw_per_s=RATE_MW_PER_S),
        LASER,
        DEVICES,
        clock=clock,
    )
    g.observe_state(DriverState(exposure_ms=10.0, lasers={"488": start_mw}))
    applied: list[tuple[float, float]] = [(clock.t, start_mw)]  # (applied at, power), in order
    queued: list[Action] = []
    clock_lock = threading.Lock()
    by_thread: dict[int, list[Any]] = {}
    for r in requests:
        by_thread.setdefault(r[0], []).append(r)

    def queue(decision: Decision) -> None:  # what the loop does inside the gate's step
        if decision.action is not None:
            queued.append(decision.action)

    def apply_queued() -> None:  # the driver, at the clock's time now
        batch = list(queued)
        queued.clear()
        for a in batch:
            applied.append((clock.t, a.power_mw if isinstance(a, SetLaserPower) else float(a.value)))  # type: ignore[attr-defined]
        g.observe_applied(batch, [None] * len(batch))

    def worker(items: list[Any]) -> None:
        for _, kind, mw, dt in items:
            if kind == "apply":
                with clock_lock:
                    clock.t += dt
                    apply_queued()
                continue
            if kind == "laser":
                action: Action = SetLaserPower(laser="488", power_mw=mw)
            elif kind == "property":
                action = SetProperty(device="Laser488", property="Power", value=mw)
            else:
                action = SetLaserPower(laser="488", power_mw=0.0)
            with clock_lock:  # the fake clock moves between requests, never inside one
                clock.t += dt
                g.vet(req(action, f"thread{kind}"), then=queue)

    threads = [threading.Thread(target=worker, args=(items,)) for items in by_thread.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clock.t += 0.3
    apply_queued()
    for (t0, p0), (t1, p1) in itertools.pairwise(applied):
        assert p1 <= CEILING_MW + 1e-9
        assert p1 - p0 <= RATE_MW_PER_S * min(t1 - t0, 1.0) + 1e-6, (t0, p0, t1, p1)


# ------------------------------------------ rates judged on what the hardware gets


def _ramp(g: SafetyGate, clock: Clock, to_mw: float, step_mw: float = 10.0) -> None:
    """A slow ramp, each step applied at once."""
    while (g.scheduled("laser:488") or 0.0) < to_mw:
        clock.t += 1.0
        d = g.vet(req(SetLaserPower(laser="488", power_mw=(g.scheduled("laser:488") or 0.0) + step_mw)))
        assert d.action is not None
        g.observe_applied([d.action], [None])


@pytest.mark.parametrize("exposure_ms", [5.0, 20.0])
def test_a_laser_schedule_is_vetted_step_to_step(exposure_ms: float) -> None:
    """N8: after a slow ramp to 50 mW, a (0, 50) schedule toggled 0 <-> 50 mW every frame, a
    2536 mW/s rise against a 10 mW/s limit: only its peak was vetted."""
    clock = Clock()
    g = gate(clock, max_power_change_mw_per_s=RATE_MW_PER_S)
    g.observe_state(DriverState(exposure_ms=exposure_ms, lasers={"488": 0.0}))
    _ramp(g, clock, 50.0)
    clock.t += 1.0
    d = g.vet(req(SetLaserSequence(laser="488", powers_mw=(0.0, 50.0, 50.0, 10.0))))
    assert d.verdict == "clamped" and isinstance(d.action, SetLaserSequence)
    powers = d.action.powers_mw
    per_frame = RATE_MW_PER_S * exposure_ms / 1e3  # the hardware steps once a frame
    for a, b in itertools.pairwise((*powers, powers[0])):  # it repeats: the last step back to the first too
        assert b - a <= per_frame + 1e-9, powers
    assert "per frame" in d.note
    refuse = gate(clock, max_power_change_mw_per_s=RATE_MW_PER_S, on_violation="refuse")
    refuse.observe_state(DriverState(exposure_ms=exposure_ms, lasers={"488": 50.0}))
    assert refuse.vet(req(SetLaserSequence(laser="488", powers_mw=(0.0, 50.0)))).verdict == "refused"


def test_a_rise_counts_from_when_the_lowering_before_it_reached_the_hardware() -> None:
    """N9: a lowering queued behind a 0.9 s camera restart, then a raise 52 ms after it was
    applied: judged from when it was vetted, the raise went 0 -> 9 mW in 52 ms."""
    clock = Clock()
    g = gate(clock, max_power_change_mw_per_s=RATE_MW_PER_S)
    g.observe_state(DriverState(exposure_ms=10.0, lasers={"488": 9.0}))
    clock.t += 5.0
    down = g.vet(req(SetLaserPower(laser="488", power_mw=0.0)))
    assert down.verdict == "applied" and down.action is not None
    clock.t += 0.5  # still queued (the camera restarts): nothing may rise past it yet
    early = g.vet(req(SetLaserPower(laser="488", power_mw=9.0)))
    assert isinstance(early.action, SetLaserPower) and early.action.power_mw == 0.0
    clock.t += 0.4
    g.observe_applied([down.action, early.action], [None, None])  # the driver got to them now
    clock.t += 0.052
    up = g.vet(req(SetLaserPower(laser="488", power_mw=9.0)))
    assert isinstance(up.action, SetLaserPower)
    assert up.action.power_mw == pytest.approx(RATE_MW_PER_S * 0.052)  # from when 0 was applied


# ------------------------------------------------------------ bounds on what is asked


def test_an_acquire_at_is_bounded_in_frames_planes_and_channels() -> None:
    """N1: one in-limits AcquireAt (1000 z offsets x 100 000 frames, 9 KB, a remote client
    can send it) made the runner build 10^8 events."""
    g = gate()
    huge = AcquireAt(position=0, z_offsets_um=tuple(float(i) * 0.001 for i in range(1000)), n_frames=100_000)
    d = g.vet(req(huge, "remote:peer"))
    assert d.verdict == "refused" and "limits.max_burst_frames" in d.note and "100000 frames" in d.note
    ok = AcquireAt(position=0, z_offsets_um=(-1.0, 0.0, 1.0), channels=("A", "B"), n_frames=100)
    assert g.vet(req(ok)).verdict == "applied"
    assert g.vet(req(StartBurst(interval_ms=0.0, n_frames=10**7))).verdict == "refused"
    assert g.vet(req(StartBurst(interval_ms=0.0))).verdict == "applied"  # until StopBurst: no count
    with pytest.raises(ValidationError):  # the sizes an action may carry are bounded too
        SetMirror(zernike_rad=(0.0,) * 100_000)
    with pytest.raises(ValidationError):
        ActionRequest(action=SetExposure(exposure_ms=10), reason="x", source="s", evidence={"x": "y" * 20000})


# ----------------------------------------------------------------- lights nobody declared


def test_writes_to_a_light_source_nobody_declared_are_refused() -> None:
    g = SafetyGate(
        LimitsConfig(),
        LASER,
        Devices(camera="Camera", focus="Z", lights=frozenset({"Laser561"})),
        clock=Clock(),
    )
    d = g.vet(req(SetProperty(device="Laser561", property="Power", value=200), "remote:peer"))
    assert d.verdict == "refused" and "Laser561 is a light source not declared" in d.note
    assert "not declared" in (g.check_setting("Laser561", "Power", 0) or "")


# ------------------------------------------------------------------- the gate fails closed


EXAMPLES: dict[type, Action] = {
    SetExposure: SetExposure(exposure_ms=10),
    SetLaserPower: SetLaserPower(laser="488", power_mw=1),
    SetLaserSequence: SetLaserSequence(laser="488", powers_mw=(0, 1)),
    SetProperty: SetProperty(device="Camera", property="Binning", value=1),
    SetROI: SetROI(x=0, y=0, width=8, height=8),
    ClearROI: ClearROI(),
    SetInterval: SetInterval(interval_ms=10),
    SetMirror: SetMirror(zernike_rad=(0.1,)),
    SetZ: SetZ(z_um=1),
    StartBurst: StartBurst(interval_ms=0),
    StopBurst: StopBurst(),
    AcquireAt: AcquireAt(position=0),
    SkipPosition: SkipPosition(position=0),
    SetPositionInterval: SetPositionInterval(position=0, interval_ms=100),
}


def test_every_action_kind_has_a_rule_and_the_unvetted_ones_are_listed_with_a_reason() -> None:
    from smartscope.safety import UNVETTED

    kinds = set(typing.get_args(typing.get_args(Action)[0]))
    assert kinds == set(EXAMPLES)  # a new kind: give it an example here (and a rule in the gate)
    assert set(UNVETTED) <= kinds and all(len(why) > 20 for why in UNVETTED.values())
    g = gate()
    for kind, action in EXAMPLES.items():
        d = g.vet(req(action))
        assert "no safety rule" not in d.note, kind
        if kind in UNVETTED:
            assert d.verdict == "applied" and d.action == action


def test_an_action_kind_the_gate_does_not_know_is_refused() -> None:
    """The dispatch used to end in "applied" for any kind it did not list."""

    class SetWarp(BaseModel):
        model_config = ConfigDict(frozen=True)
        kind: Literal["warp"] = "warp"
        factor: float = 9.0

    request = ActionRequest.model_construct(action=SetWarp(), reason="built around validation", source="x")
    d = gate().vet(request)
    assert d.verdict == "refused" and d.action is None and "no safety rule" in d.note
