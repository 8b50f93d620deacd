"""Safety: every action passes here before it can reach hardware.

``SafetyGate.vet`` clamps (or refuses, with ``limits.on_violation: refuse``) what falls
outside the configured limits and applies rate limits against the last value that was
actually sent. A laser-power write disguised as ``SetProperty`` on a laser's power
property is vetted as the laser action it is. Lowering a laser is never rate limited:
less light is always safe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartscope.actions import (
    Action,
    ActionRequest,
    SetExposure,
    SetInterval,
    SetLaserPower,
    SetMirror,
    SetProperty,
    SetZ,
    StartBurst,
    Verdict,
)
from smartscope.config import LaserConfig, LimitsConfig
from smartscope.frame import now_s
from smartscope.state import DriverState


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    action: Action | None
    note: str = ""


class SafetyGate:
    def __init__(self, limits: LimitsConfig, lasers: Mapping[str, LaserConfig], clock: Any = now_s) -> None:
        self.limits = limits
        self.lasers = dict(lasers)
        self._clock = clock
        # last value sent and when, per quantity; seeded from the driver's state
        self._last: dict[str, tuple[float, float]] = {}
        self._power_props = {(cfg.device, cfg.power_property): name for name, cfg in self.lasers.items()}

    def observe_state(self, state: DriverState) -> None:
        """Seed rate limits from the hardware's actual values (call once at start)."""
        t = self._clock()
        if math.isfinite(state.exposure_ms):
            self._last["exposure"] = (state.exposure_ms, t)
        for name, p in state.lasers.items():
            self._last[f"laser:{name}"] = (float(p), t)

    def commit(self, action: Action) -> None:
        """Record a value that was sent to hardware (for the next rate-limit check)."""
        t = self._clock()
        if isinstance(action, SetExposure):
            self._last["exposure"] = (action.exposure_ms, t)
        elif isinstance(action, SetLaserPower):
            self._last[f"laser:{action.laser}"] = (action.power_mw, t)

    # ------------------------------------------------------------------ vetting

    def vet(self, request: ActionRequest) -> Decision:
        action = request.action
        if isinstance(action, SetProperty):
            laser = self._power_props.get((action.device, action.property))
            if laser is not None:
                try:
                    power = float(action.value)
                except (TypeError, ValueError):
                    return Decision("refused", None, f"laser power {action.value!r} is not a number")
                inner = self._vet_laser(SetLaserPower(laser=laser, power_mw=power))
                if inner.action is None:
                    return inner
                assert isinstance(inner.action, SetLaserPower)
                return Decision(
                    inner.verdict,
                    action.model_copy(update={"value": inner.action.power_mw}),
                    inner.note,
                )
            return self._vet_property(action)
        if isinstance(action, SetExposure):
            return self._vet_exposure(action)
        if isinstance(action, SetLaserPower):
            return self._vet_laser(action)
        if isinstance(action, SetInterval | StartBurst):
            if action.interval_ms < self.limits.interval_ms_min:
                return self._bounded(
                    action,
                    action.model_copy(update={"interval_ms": self.limits.interval_ms_min}),
                    f"interval {action.interval_ms} ms below minimum {self.limits.interval_ms_min} ms",
                )
            return Decision("applied", action)
        if isinstance(action, SetMirror):
            cap = self.limits.mirror_max_rad
            clipped = tuple(max(-cap, min(cap, a)) for a in action.zernike_rad)
            if clipped != action.zernike_rad:
                return self._bounded(
                    action,
                    SetMirror(zernike_rad=clipped),
                    f"mirror amplitudes beyond ±{cap} rad stroke limit",
                )
            return Decision("applied", action)
        if isinstance(action, SetZ) and self.limits.z_um is not None:
            lo, hi = self.limits.z_um
            if not lo <= action.z_um <= hi:
                return self._bounded(
                    action,
                    SetZ(z_um=min(hi, max(lo, action.z_um))),
                    f"z {action.z_um} µm outside {lo}..{hi} µm",
                )
        return Decision("applied", action)

    def _bounded(self, original: Action, clamped: Action, why: str) -> Decision:
        if self.limits.on_violation == "refuse":
            return Decision("refused", None, why)
        return Decision("clamped", clamped, why)

    def _vet_property(self, action: SetProperty) -> Decision:
        allowed = self.limits.allowed_values.get(f"{action.device}.{action.property}")
        if allowed is not None and str(action.value) not in allowed:
            return Decision(
                "refused",
                None,
                f"{action.device}.{action.property}={action.value!r} not in allowed {allowed}",
            )
        return Decision("applied", action)

    def _vet_exposure(self, action: SetExposure) -> Decision:
        lo, hi = self.limits.exposure_ms
        want = action.exposure_ms
        notes = []
        target = min(hi, max(lo, want))
        if target != want:
            notes.append(f"exposure {want:g} ms outside limits {lo:g}..{hi:g} ms")
        ratio = self.limits.max_exposure_ratio_per_s
        if ratio is not None and "exposure" in self._last:
            last, t_last = self._last["exposure"]
            dt = max(self._clock() - t_last, 0.0)
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
            return self._bounded(action, SetExposure(exposure_ms=target), "; ".join(notes))
        return Decision("applied", action)

    def _vet_laser(self, action: SetLaserPower) -> Decision:
        cfg = self.lasers.get(action.laser)
        if cfg is None:
            return Decision("refused", None, f"unknown laser {action.laser!r}; have {sorted(self.lasers)}")
        ceiling = min(cfg.max_power_mw, self.limits.laser_max_mw.get(action.laser, math.inf))
        want = action.power_mw
        target = min(want, ceiling)
        notes = []
        if target != want:
            notes.append(f"laser {action.laser} {want:g} mW above ceiling {ceiling:g} mW")
        rate = self.limits.max_power_change_mw_per_s
        last_entry = self._last.get(f"laser:{action.laser}")
        if rate is not None and last_entry is not None:
            last, t_last = last_entry
            dt = max(self._clock() - t_last, 0.0)
            step = rate * min(dt, 1.0)
            if target > last + step:  # only increases are rate limited
                notes.append(
                    f"laser {action.laser} rise {last:g}->{target:g} mW exceeds "
                    f"{rate:g} mW/s (allowed +{step:.3g} mW after {dt:.3f} s)"
                )
                target = last + step
        if notes:
            return self._bounded(action, SetLaserPower(laser=action.laser, power_mw=target), "; ".join(notes))
        return Decision("applied", action)
