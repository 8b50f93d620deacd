"""Safety: every hardware write passes here before it can reach hardware.

``SafetyGate.vet`` clamps (or refuses, with ``limits.on_violation: refuse``) what falls
outside the configured limits, and rate-limits increases of laser power and changes of
exposure. Vetting and committing are one step under one lock: a request is judged against
the value the hardware will have once everything already vetted is applied (the
*scheduled* value), whatever thread, source or action type it came from, and the caller's
``then`` (queueing it for the driver) runs inside the same step, so the order of
application is the order of vetting. Rates are judged on what the hardware gets: the time
that counts is when the value before it was *applied* (:meth:`SafetyGate.observe_applied`,
called by the loop once the driver returns), and while a value is still queued nothing may
rise past it (it may be applied in the same batch). A ``SetLaserSequence`` is vetted step
to step too: each step rises at most the rate times one frame (the scheduled exposure).

A ``SetProperty`` aimed at a quantity a limit covers is vetted as that action: a laser's
power property as ``SetLaserPower``, the camera's ``Exposure`` as ``SetExposure``, the
focus stage's position as ``SetZ``, a mirror mode (``mirror_property``, e.g. ``Z5``) or
``ZernikeVectorRad`` as ``SetMirror``; any property listed in ``allowed_values`` takes only
those values. Numbers must be finite: NaN and infinity are refused, never clamped.
Lowering a laser is never rate limited: less light is always safe. After a safe state the
scheduled laser powers are 0, so light comes back only at the rate limit.

Plan actions: an ``AcquireAt`` target outside ``limits.xy_um`` or a plane outside
``limits.z_um`` is refused (never clamped: a clamped target is another place; the MDA
driver checks again once a plan position's coordinates are known), intervals below
``limits.interval_ms_min`` are clamped like ``SetInterval``; ``SkipPosition`` only takes
light away. An ``AcquireAt`` of more than ``limits.max_burst_frames`` images (frames x planes
x channels) and a counted ``StartBurst`` longer than that are refused before any event is made.

Every device that emits light is declared (``microscope.lasers``): the driver finds the
others on the core and refuses the run, and the gate refuses writes to any it was told of
(``Devices.lights``). The focus limits apply to the core's own focus device and the mirror
limits to every device with mirror properties (``Devices.mirrors``), whether or not the
configuration names them.

Every action kind is dispatched by one ``match`` ending in ``assert_never``: a new kind
nobody vets fails type checking, and one that arrives anyway (built around validation) is
refused: the gate fails closed. The kinds that pass unvetted are :data:`UNVETTED`, each with
the reason.

Writes that happen before a run (start-up properties, channel presets, safe-state extras)
go through :meth:`SafetyGate.check_setting`: the same limits, no rate limit; a refusal
stops the run before any of them is applied.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import assert_never

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
    Verdict,
)
from smartscope.config.microscope import LaserConfig, MicroscopeConfig
from smartscope.config.safety import LimitsConfig
from smartscope.frame import now_s
from smartscope.state import DriverState

__all__ = [
    "EMITS_LIGHT_PROPERTY",
    "FOCUS_POSITION_PROPERTIES",
    "MIRROR_VECTOR_PROPERTY",
    "UNVETTED",
    "Decision",
    "Devices",
    "SafetyGate",
    "looks_like_light",
]

# property names Micro-Manager Z stages use for their position, in µm
FOCUS_POSITION_PROPERTIES = ("Position", "ZPositionUm", "Position_um", "Z", "ZPosition")
MIRROR_VECTOR_PROPERTY = "ZernikeVectorRad"
# a property a device that emits light has (power, intensity, a laser setting); a device
# label with "laser" in it; or the virtual microscope's own marker
_LIGHT_PROPERTY = re.compile(r"power|intensity|irradiance|laser", re.IGNORECASE)
EMITS_LIGHT_PROPERTY = "EmitsLight"

# Action kinds that pass the gate unvetted, and why none of them can add light or motion.
UNVETTED: dict[type, str] = {
    SetROI: "a camera region: no light, no motion; the camera restarts with it, and a region "
    "the sensor does not have is refused by the camera",
    ClearROI: "back to the full sensor: no light, no motion",
    StopBurst: "back to the interval in force before the burst: only fewer frames",
    SkipPosition: "stops (or resumes at its planned rate) imaging one position: only less light",
}


def looks_like_light(label: str, properties: Sequence[str]) -> bool:
    """Whether a device looks like a light source: a power, intensity or laser property, the
    virtual microscope's ``EmitsLight`` marker, or "laser" in its label."""
    return (
        "laser" in label.lower()
        or EMITS_LIGHT_PROPERTY in properties
        or any(_LIGHT_PROPERTY.search(p) for p in properties)
    )


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    action: Action | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Devices:
    """Which device labels play which role, so a ``SetProperty`` is vetted as what it is.

    ``focus`` is the configured Z stage, else the core's focus device; ``mirrors`` every
    device with mirror properties (the configured mirror included); ``lights`` the devices
    that emit light but are not declared in ``microscope.lasers`` (writes to them are refused).
    """

    camera: str = ""
    focus: str | None = None
    mirror: str | None = None
    mirror_property: str = "Z{j}"
    mirrors: frozenset[str] = field(default_factory=frozenset)
    lights: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, microscope: MicroscopeConfig, camera: str = "") -> Devices:
        return cls(
            camera=camera or (microscope.camera or ""),
            focus=microscope.focus,
            mirror=microscope.mirror,
            mirror_property=microscope.mirror_property,
        )

    def is_mirror(self, device: str) -> bool:
        return device == self.mirror or device in self.mirrors

    def mirror_mode(self, prop: str) -> int | None:
        """The Noll index a mirror property sets (``Z5`` -> 5), if it is a mode property."""
        pattern = "^" + re.escape(self.mirror_property).replace(re.escape("{j}"), r"(\d+)") + "$"
        m = re.match(pattern, prop)
        return int(m.group(1)) if m else None


def _number(value: Any) -> float | None:
    """A property value as a number, if it is one (``"5"`` and ``5`` alike)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


@dataclass(slots=True)
class _Quantity:
    """A rate-limited quantity (a laser's power, the exposure): what the hardware has and
    since when, and the values vetted and queued but not applied yet, in order."""

    applied: float
    applied_s: float
    pending: deque[float] = field(default_factory=deque)

    @property
    def scheduled(self) -> float:
        return self.pending[-1] if self.pending else self.applied

    def since(self, now: float) -> float:
        """Seconds the scheduled value has been in force: 0 while it is only queued."""
        return 0.0 if self.pending else max(now - self.applied_s, 0.0)


def _limit_rises(powers: Sequence[float], step_mw: float) -> tuple[float, ...]:
    """The highest schedule at or below ``powers`` whose every step (the last back to the
    first included: it repeats) rises at most ``step_mw``. From its lowest step forward,
    each step is capped at the one before plus ``step_mw``."""
    n = len(powers)
    start = min(range(n), key=powers.__getitem__)
    out = list(powers)
    for k in range(1, n):
        i = (start + k) % n
        out[i] = min(out[i], out[(i - 1) % n] + step_mw)
    return tuple(out)


class SafetyGate:
    """Vets every action against the limits (see the module doc). Thread-safe."""

    def __init__(
        self,
        limits: LimitsConfig,
        lasers: Mapping[str, LaserConfig],
        devices: Devices | None = None,
        clock: Callable[[], float] = now_s,
    ) -> None:
        self.limits = limits
        self.lasers = dict(lasers)
        self.devices = devices or Devices()
        self._clock = clock
        self._lock = threading.RLock()
        # each rate-limited quantity: applied value and time, and what is queued behind it
        self._q: dict[str, _Quantity] = {}
        self._power_props = {(cfg.device, cfg.power_property): name for name, cfg in self.lasers.items()}

    def bind(self, devices: Devices) -> None:
        """Learn the device roles (the driver knows the camera's label once it is loaded)."""
        with self._lock:
            self.devices = devices

    def ceiling_mw(self, laser: str) -> float:
        cfg = self.lasers[laser]
        return min(cfg.max_power_mw, self.limits.laser_max_mw.get(laser, math.inf))

    def over_ceiling(self, powers: Mapping[str, float]) -> list[str]:
        """Declared lasers whose power, as read back from the hardware, is above their
        ceiling (or not a finite number), one line each naming the device."""
        problems = []
        for name, mw in powers.items():
            cfg = self.lasers.get(name)
            if cfg is None:
                continue
            ceiling = self.ceiling_mw(name)
            if not math.isfinite(mw) or mw > ceiling:
                problems.append(
                    f"microscope.lasers.{name}: {cfg.device}.{cfg.power_property} reads {mw:g} mW, "
                    f"above its ceiling {ceiling:g} mW"
                )
        return problems

    # --------------------------------------------------------------- state

    def observe_state(self, state: DriverState) -> None:
        """Seed the values from the hardware's actual ones (once, at start)."""
        with self._lock:
            t = self._clock()
            if math.isfinite(state.exposure_ms):
                self._q["exposure"] = _Quantity(state.exposure_ms, t)
            for name, p in state.lasers.items():
                self._q[f"laser:{name}"] = _Quantity(float(p), t)

    def observe_safe_state(self) -> None:
        """Every laser was switched off (and nothing queued will be applied): light comes
        back only at the rate limit."""
        with self._lock:
            t = self._clock()
            for name in self.lasers:
                self._q[f"laser:{name}"] = _Quantity(0.0, t)

    def observe_applied(self, actions: Sequence[Action], errors: Sequence[str | None]) -> None:
        """The driver applied these vetted actions, in order, just now (``errors[i]`` is
        why action ``i`` did not reach the hardware): rates count from now."""
        with self._lock:
            t = self._clock()
            for action, err in zip(actions, errors, strict=True):
                for key, value in self._values(action):
                    q = self._q.setdefault(key, _Quantity(value, t))
                    if q.pending:
                        q.pending.popleft()
                    if err is None:
                        q.applied, q.applied_s = value, t

    def scheduled(self, quantity: str) -> float | None:
        """The value ``exposure`` or ``laser:<name>`` will have once all vetted actions apply."""
        q = self._q.get(quantity)
        return None if q is None else q.scheduled

    # ------------------------------------------------------------- vetting

    def vet(self, request: ActionRequest, then: Callable[[Decision], None] | None = None) -> Decision:
        """Judge a request; the accepted value becomes the scheduled one. ``then`` runs
        inside the same locked step (e.g. queueing the action for the driver)."""
        with self._lock:
            decision = self._judge(request.action, rate=True)
            if decision.action is not None:
                self._schedule(decision.action)
            if then is not None:
                then(decision)
            return decision

    def check_setting(self, device: str, prop: str, value: Any) -> str | None:
        """Why a write made before the run (start-up, preset, safe-state extra) is refused,
        or ``None``: the same limits as any action, without the rate limit, never clamped."""
        with self._lock:
            action = SetProperty(device=device, property=prop, value=value)
            decision = self._judge(action, rate=False)
            if decision.verdict == "applied":
                return None
            where = f"{device}.{prop}"
            return decision.note if decision.note.startswith(where) else f"{where}={value!r}: {decision.note}"

    def _values(self, action: Action) -> Iterator[tuple[str, float]]:
        """The rate-limited quantities an action sets, with their values."""
        if isinstance(action, SetExposure):
            yield "exposure", action.exposure_ms
        elif isinstance(action, SetLaserPower):
            yield f"laser:{action.laser}", action.power_mw
        elif isinstance(action, SetLaserSequence):  # the highest power it will reach
            yield f"laser:{action.laser}", max(action.powers_mw)
        elif isinstance(action, SetProperty):
            kind = self._property_kind(action)
            value = _number(action.value)
            if value is None:
                return
            if kind == "laser":
                yield f"laser:{self._power_props[(action.device, action.property)]}", value
            elif kind == "exposure":
                yield "exposure", value

    def _schedule(self, action: Action) -> None:
        t = self._clock()
        for key, value in self._values(action):
            q = self._q.get(key)
            if q is None:  # never observed: the first value counts as applied now
                self._q[key] = q = _Quantity(value, t)
            q.pending.append(value)

    def _judge(self, action: Action, rate: bool) -> Decision:
        """The gate fails closed: an action kind no rule vets (``assert_never`` at run time:
        one built around validation) or a rule that breaks its own assertion is refused."""
        try:
            return self._vet_action(action, rate)
        except AssertionError:
            return Decision("refused", None, f"{type(action).__name__}: no safety rule vets this action")

    def _vet_action(self, action: Action, rate: bool) -> Decision:
        match action:
            case SetProperty():
                return self._vet_property(action, rate)
            case SetExposure():
                return self._vet_exposure(action, rate)
            case SetLaserPower():
                return self._vet_laser(action, rate)
            case SetLaserSequence():
                return self._vet_laser_sequence(action, rate)
            case SetInterval() | StartBurst():
                if isinstance(action, StartBurst) and (action.n_frames or 0) > self.limits.max_burst_frames:
                    return Decision(
                        "refused",
                        None,
                        f"a burst of {action.n_frames} frames is more than limits.max_burst_frames "
                        f"{self.limits.max_burst_frames}",
                    )
                return self._vet_interval(action, action.interval_ms)
            case SetPositionInterval():
                return self._vet_interval(action, action.interval_ms)
            case SetMirror():
                return self._vet_mirror(action)
            case SetZ():
                return self._vet_z(action)
            case AcquireAt():
                return self._vet_acquire_at(action)
            case SetROI() | ClearROI() | StopBurst() | SkipPosition():
                return self._unvetted(action)
            case _:  # a kind added to Action and not here fails type checking
                assert_never(action)

    @staticmethod
    def _unvetted(action: Action) -> Decision:
        """A kind listed in :data:`UNVETTED` (with its reason) passes as it is."""
        if type(action) not in UNVETTED:  # the match and the table disagree: closed
            return Decision("refused", None, f"{type(action).__name__} is not vetted by the gate")
        return Decision("applied", action)

    def _vet_interval(self, action: Action, interval_ms: float | None) -> Decision:
        if interval_ms is not None and interval_ms < self.limits.interval_ms_min:
            return self._bounded(
                action.model_copy(update={"interval_ms": self.limits.interval_ms_min}),
                f"interval {interval_ms} ms below minimum {self.limits.interval_ms_min} ms",
            )
        return Decision("applied", action)

    def check_stage_target(
        self, xy_um: tuple[float | None, float | None] | None, z_um: float | None
    ) -> str | None:
        """Why a place is refused (outside ``limits.xy_um`` / ``limits.z_um``), or ``None``.

        Targets are refused, never clamped: a clamped target is another place. Used for
        plan actions here and, once it knows the plan's coordinates, by the MDA driver."""
        lim = self.limits
        if xy_um is not None and lim.xy_um is not None:
            (xlo, xhi), (ylo, yhi) = lim.xy_um
            x, y = xy_um
            if (x is not None and not xlo <= x <= xhi) or (y is not None and not ylo <= y <= yhi):
                return (
                    f"stage position ({x}, {y}) µm outside limits.xy_um "
                    f"x {xlo:g}..{xhi:g}, y {ylo:g}..{yhi:g}"
                )
        if z_um is not None and lim.z_um is not None:
            lo, hi = lim.z_um
            if not lo <= z_um <= hi:
                return f"z {z_um:g} µm outside limits.z_um {lo:g}..{hi:g}"
        return None

    def burst_problem(self, frames: int, planes: int, channels: int) -> str | None:
        """Why an ``AcquireAt`` of this many frames x planes x channels is too large, or None."""
        n = frames * planes * max(channels, 1)
        if n > self.limits.max_burst_frames:
            return (
                f"AcquireAt of {frames} frames x {planes} planes x {max(channels, 1)} channels = {n} "
                f"images is more than limits.max_burst_frames {self.limits.max_burst_frames}"
            )
        return None

    def _vet_acquire_at(self, action: AcquireAt) -> Decision:
        too_big = self.burst_problem(action.n_frames, len(action.z_offsets_um), len(action.channels))
        if too_big:
            return Decision("refused", None, too_big)
        why = self.check_stage_target(action.xy_um, None)
        if why is None and action.z_um is not None:
            for dz in action.z_offsets_um:
                why = self.check_stage_target(None, action.z_um + dz)
                if why:
                    break
        if why:
            return Decision("refused", None, why)
        if action.n_frames > 1 and action.interval_ms < self.limits.interval_ms_min:
            return self._bounded(
                action.model_copy(update={"interval_ms": self.limits.interval_ms_min}),
                f"interval {action.interval_ms} ms below minimum {self.limits.interval_ms_min} ms",
            )
        return Decision("applied", action)

    def _bounded(self, clamped: Action, why: str) -> Decision:
        if self.limits.on_violation == "refuse":
            return Decision("refused", None, why)
        return Decision("clamped", clamped, why)

    # a SetProperty that sets a limited quantity is vetted as that quantity
    def _property_kind(self, action: SetProperty) -> str:
        d = self.devices
        if (action.device, action.property) in self._power_props:
            return "laser"
        if action.device in d.lights:
            return "undeclared_light"
        if d.camera and action.device == d.camera and action.property == "Exposure":
            return "exposure"
        if d.focus and action.device == d.focus and action.property in FOCUS_POSITION_PROPERTIES:
            return "z"
        if d.is_mirror(action.device):
            if action.property == MIRROR_VECTOR_PROPERTY:
                return "mirror_vector"
            if d.mirror_mode(action.property) is not None:
                return "mirror_mode"
        return "other"

    def _vet_property(self, action: SetProperty, rate: bool) -> Decision:
        where = f"{action.device}.{action.property}"
        kind = self._property_kind(action)
        if kind == "undeclared_light":
            return Decision(
                "refused",
                None,
                f"{where}: {action.device} is a light source not declared in microscope.lasers",
            )
        numeric = isinstance(action.value, float | int) and not isinstance(action.value, bool)
        if numeric and not math.isfinite(float(action.value)):
            return Decision("refused", None, f"{where}={action.value!r} is not a finite number")
        if kind == "other":
            allowed = self.limits.allowed_values.get(where)
            if allowed is not None and str(action.value) not in allowed:
                return Decision("refused", None, f"{where}={action.value!r} not in allowed {allowed}")
            return Decision("applied", action)
        if kind == "mirror_vector":
            try:
                amps = tuple(float(v) for v in str(action.value).split(",") if v.strip())
                vector = self._vet_mirror(SetMirror(zernike_rad=amps))
            except ValueError:
                return Decision("refused", None, f"{where}={action.value!r} is not a list of finite numbers")
            if vector.action is None:
                return vector
            assert isinstance(vector.action, SetMirror)
            text = ",".join(f"{v:.9g}" for v in vector.action.zernike_rad)
            return Decision(vector.verdict, action.model_copy(update={"value": text}), vector.note)
        value = _number(action.value)
        if value is None or not math.isfinite(value):
            return Decision("refused", None, f"{where}={action.value!r} is not a finite number")
        inner: Decision
        try:
            if kind == "laser":
                laser = self._power_props[(action.device, action.property)]
                inner = self._vet_laser(SetLaserPower(laser=laser, power_mw=value), rate)
            elif kind == "exposure":
                inner = self._vet_exposure(SetExposure(exposure_ms=value), rate)
            elif kind == "z":
                inner = self._vet_z(SetZ(z_um=value))
            else:  # one mirror mode
                j = self.devices.mirror_mode(action.property) or 1
                inner = self._vet_mirror(SetMirror(zernike_rad=(0.0,) * (j - 1) + (value,)))
        except ValueError:  # a negative power, a zero exposure: not a valid action at all
            return Decision(
                "refused", None, f"{where}={action.value!r} is not a valid {kind.replace('_', ' ')} value"
            )
        if inner.action is None:
            return Decision(inner.verdict, None, f"{where}: {inner.note}")
        new = _value_of(inner.action)
        return Decision(inner.verdict, action.model_copy(update={"value": new}), inner.note)

    def _vet_exposure(self, action: SetExposure, rate: bool) -> Decision:
        lo, hi = self.limits.exposure_ms
        want = action.exposure_ms
        notes = []
        target = min(hi, max(lo, want))
        if target != want:
            notes.append(f"exposure {want:g} ms outside limits {lo:g}..{hi:g} ms")
        ratio = self.limits.max_exposure_ratio_per_s
        q = self._q.get("exposure")
        if rate and ratio is not None and q is not None:
            last, dt = q.scheduled, q.since(self._clock())
            allowed = ratio ** min(dt, 1.0) if dt > 0 else 1.0
            allowed = max(allowed, 1.0 + 1e-9)
            bounded = min(last * allowed, max(last / allowed, target))
            if not math.isclose(bounded, target, rel_tol=1e-9):
                notes.append(
                    f"exposure change {last:g}->{target:g} ms exceeds {ratio:g}x per s "
                    f"(allowed x{allowed:.3g} after {dt:.3f} s)"
                )
                target = bounded
        if notes:
            return self._bounded(SetExposure(exposure_ms=target), "; ".join(notes))
        return Decision("applied", action)

    def _vet_laser(self, action: SetLaserPower, rate: bool) -> Decision:
        if action.laser not in self.lasers:
            return Decision("refused", None, f"unknown laser {action.laser!r}; have {sorted(self.lasers)}")
        ceiling = self.ceiling_mw(action.laser)
        want = action.power_mw
        target = min(want, ceiling)
        notes = []
        if target != want:
            notes.append(f"laser {action.laser} {want:g} mW above ceiling {ceiling:g} mW")
        step_limit = self.limits.max_power_change_mw_per_s
        q = self._q.get(f"laser:{action.laser}")
        if rate and step_limit is not None and q is not None:
            last, dt = q.scheduled, q.since(self._clock())
            step = step_limit * min(dt, 1.0)
            if target > last + step:  # only increases are rate limited
                notes.append(
                    f"laser {action.laser} rise {last:g}->{target:g} mW exceeds "
                    f"{step_limit:g} mW/s (allowed +{step:.3g} mW after {dt:.3f} s)"
                )
                target = last + step
        if notes:
            return self._bounded(SetLaserPower(laser=action.laser, power_mw=target), "; ".join(notes))
        return Decision("applied", action)

    def _vet_laser_sequence(self, action: SetLaserSequence, rate: bool) -> Decision:
        """Every step of the schedule is vetted as a power: its peak against the ceiling and
        against the rate limit from the power scheduled now (the schedule may jump to its
        peak on the first frame); steps above what is allowed are clamped to it. Then step
        to step: the hardware steps once per camera frame (at least the scheduled exposure
        apart), so each step, the last back to the first included, rises at most the rate
        times one exposure."""
        peak = self._vet_laser(SetLaserPower(laser=action.laser, power_mw=max(action.powers_mw)), rate)
        if peak.action is None:
            return peak
        assert isinstance(peak.action, SetLaserPower)
        allowed = peak.action.power_mw
        powers = tuple(min(p, allowed) for p in action.powers_mw)
        notes = [peak.note] if powers != action.powers_mw else []
        step_limit = self.limits.max_power_change_mw_per_s
        exposure_ms = self.scheduled("exposure")
        if rate and step_limit is not None and exposure_ms is not None:
            per_frame = step_limit * exposure_ms / 1e3
            limited = _limit_rises(powers, per_frame)
            if limited != powers:
                rise = max(b - a for a, b in zip(powers, (*powers[1:], powers[0]), strict=True))
                notes.append(
                    f"laser {action.laser} schedule steps rise up to {rise:g} mW per frame; "
                    f"{step_limit:g} mW/s allows {per_frame:.3g} mW per {exposure_ms:g} ms frame"
                )
                powers = limited
        if not notes:
            return Decision("applied", action)
        return self._bounded(SetLaserSequence(laser=action.laser, powers_mw=powers), "; ".join(notes))

    def _vet_mirror(self, action: SetMirror) -> Decision:
        cap = self.limits.mirror_max_rad
        clipped = tuple(max(-cap, min(cap, a)) for a in action.zernike_rad)
        if clipped != action.zernike_rad:
            return self._bounded(
                SetMirror(zernike_rad=clipped), f"mirror amplitudes beyond ±{cap} rad stroke limit"
            )
        return Decision("applied", action)

    def _vet_z(self, action: SetZ) -> Decision:
        if self.limits.z_um is None:
            return Decision("applied", action)
        lo, hi = self.limits.z_um
        if not lo <= action.z_um <= hi:
            return self._bounded(
                SetZ(z_um=min(hi, max(lo, action.z_um))), f"z {action.z_um} µm outside {lo}..{hi} µm"
            )
        return Decision("applied", action)


def _value_of(action: Action) -> float | str:
    """The property value a vetted typed action stands for (a SetProperty's new value)."""
    if isinstance(action, SetLaserPower):
        return action.power_mw
    if isinstance(action, SetExposure):
        return action.exposure_ms
    if isinstance(action, SetZ):
        return action.z_um
    if isinstance(action, SetMirror):
        return action.zernike_rad[-1]
    raise TypeError(f"no property value for {type(action).__name__}")
