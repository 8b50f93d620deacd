"""Micro-Manager drivers: pymmcore-plus in process, and pycromanager.

Both speak to a Micro-Manager core, so the acquisition logic lives once, in
:class:`MMCoreDriver`; the two flavours differ only in how a core call is spelled
(pymmcore-plus: ``core.setExposure``; pycromanager: ``core.set_exposure``), which the
``_do_*`` hooks hide.

Streaming (``interval_ms == 0``, one channel) uses sequence acquisition. Two ways to
apply a batch of actions (``acquisition.apply_mode``):

* **exact**: the sequence is stopped, every frame already in the circular buffer is
  drained (taken with the old settings, delivered as such), the settings change, and the
  sequence restarts: "frame N is the first with this action in force" is exact on any
  camera. A camera change (exposure, ROI, interval, a camera property) always goes this way.
* **live** (the default for everything else: lasers, shutters, Z, mirror, other device
  properties): the settings change while the camera streams. Which frames had them comes
  from timestamps. With the camera's own exposure times (``ExposureStart_s`` /
  ``ExposureEnd_s`` metadata, as the virtual camera reports them): a frame whose exposure
  began after the batch completed has it in force, one whose exposure ended before the
  batch began has the old state, and one whose exposure straddled it is marked
  ``transition``. With only ``TimeReceivedByCore``: frames received before the batch began
  have the old state; after it completed, the first ``camera_pipeline_frames`` frames
  received (they may have been exposing or queued in the camera) are transitions and the
  rest have it in force.

Time-lapse (``interval_ms > 0`` or several channels) snaps each frame at its due time;
actions land between snaps.

The safe state is a latch. From the moment :meth:`MMCoreDriver.safe_state` begins, every
hook that writes to hardware (:data:`LATCHED_WRITES`: properties, presets, shutters,
property sequences, exposure, ROI, focus, snaps, camera starts) refuses, whatever thread
calls it: a batch being applied, a camera restart, the next channel preset, a re-armed
power schedule. Only the safe state's own writes (lights to 0, shutter closed, its extras)
go through; what was refused is logged and listed in :attr:`MMCoreDriver.skipped_writes`.
Writes that can raise light hold a lock, and the safe state writes its zeros again once a
light write that was in flight when it began has landed.

Before anything is written the driver reads every declared laser back (a ``.cfg`` may set
one above its ceiling: it is switched off and the run refused), and looks at every loaded
device: one that looks like a light source (:func:`smartscope.safety.looks_like_light`)
must be declared in ``microscope.lasers`` or listed in ``microscope.not_light``. The gate
learns the core's own focus device and every device with mirror properties, so their
limits hold whether or not the configuration names them.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from smartscope.actions import (
    AcquireAt,
    Action,
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
from smartscope.config import AcquisitionConfig, LimitsConfig, MicroscopeConfig, SafeStateConfig
from smartscope.drivers.base import ActionNotSupported, ApplyResult, DriverError
from smartscope.drivers.installation import open_pycromanager_headless, open_pymmcore_plus
from smartscope.frame import Frame, now_s
from smartscope.safety import MIRROR_VECTOR_PROPERTY, Devices, SafetyGate, looks_like_light
from smartscope.state import DriverState

log = logging.getLogger(__name__)

_POLL_S = 0.0002
# Hooks that write to hardware: after the safe state only the safe state itself calls them.
# The first group can raise light (they hold the light-write lock); the second cannot.
LIGHT_WRITES = (
    "_do_set_property",
    "_do_set_config",
    "_do_set_shutter_open",
    "_do_load_property_sequence",
    "_do_start_property_sequence",
)
LATCHED_WRITES = (
    *LIGHT_WRITES,
    "_do_set_exposure",
    "_do_start_sequence",
    "_do_snap",
    "_do_set_roi",
    "_do_clear_roi",
    "_do_set_z",
)
# how long the safe state waits for a light write in flight (a slow serial line) to land
# before it writes its zeros a second time; it writes them once at once regardless
LIGHT_WRITE_WAIT_S = 2.0
MAX_SKIPPED_LISTED = 1000


class SafeStateLatched(DriverError):
    """A hardware write refused because the safe state is on (see the module doc)."""


def mm_value(value: Any) -> float | str:
    """A property value as Micro-Manager expects it: floats as numbers, the rest as text.

    Allowed values are compared as strings ("256", not 256), so ints and bools go as text.
    """
    return value if isinstance(value, float) else str(value)


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _camera_time(md: Mapping[str, Any]) -> float:
    """Micro-Manager's 'TimeReceivedByCore' (local wall time) as epoch seconds."""
    stamp = md.get("TimeReceivedByCore")
    if isinstance(stamp, str):
        # 'YYYY-MM-DD HH:MM:SS.ffffff' is ISO 8601 with a space: fromisoformat parses it in C
        # (0.5 µs against strptime's 9 µs, on the acquisition thread for every frame)
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp).timestamp()
        with contextlib.suppress(ValueError):
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return now_s()


def _call(obj: Any, snake: str, camel: str, *args: Any) -> Any:
    """``obj.snake(*args)``, or ``obj.camel(*args)`` where only that spelling exists."""
    method = getattr(obj, snake, None) or getattr(obj, camel)
    return method(*args)


def _strings(values: Any) -> list[str]:
    """A core's list of strings: a tuple in Python, a StrVector over the Java bridge."""
    if hasattr(values, "size") and hasattr(values, "get"):
        return [str(values.get(i)) for i in range(int(values.size()))]
    return [str(v) for v in values]


@dataclass(slots=True)
class _LiveChange:
    """A batch applied while the camera streamed: when it began and completed, what it made."""

    began_s: float
    done_s: float
    after: DriverState
    received_after: int = 0  # frames received since it completed (frames without exposure times)


class MMCoreDriver:
    """Sequence acquisition with frame-boundary actions over a Micro-Manager core."""

    name = "mmcore"

    def __init__(
        self,
        microscope: MicroscopeConfig,
        acquisition: AcquisitionConfig,
        safe: SafeStateConfig,
        gate: SafetyGate | None = None,
    ) -> None:
        self.mcfg = microscope
        self.acq = acquisition
        self.safe = safe
        # every write before the run (start-up, presets, safe-state extras) is vetted here
        self.gate = gate or SafetyGate(LimitsConfig(), microscope.lasers, Devices.from_config(microscope))
        self._pending: deque[tuple[np.ndarray, dict[str, Any], DriverState]] = deque()
        self._delivered = 0
        self._target: int | None = None
        self._streaming = False
        self._running = False
        self._stopping = False
        self._next_due = 0.0
        self._channel_i = 0
        self._burst_left: int | None = None
        self._saved_interval_ms = 0.0
        self._state = DriverState(exposure_ms=acquisition.exposure_ms)
        # live changes not yet in force on every frame to come, oldest first, and the state
        # before the oldest of them
        self._base = self._state
        self._timeline: deque[_LiveChange] = deque()
        self._camera = ""
        # hardware-sequenced laser powers: the schedules loaded now, and per laser the frame
        # index from which each schedule (None: none) ran, re-armed at every camera start
        self._armed: dict[str, tuple[float, ...]] = {}
        self._segments: dict[str, list[tuple[int, tuple[float, ...] | None]]] = {}
        self.devices = Devices.from_config(microscope)
        self.camera_started_s: float | None = None
        # the safe state's latch (module doc)
        self._latched = False
        self._light_lock = threading.RLock()
        self._safe_thread = threading.local()
        self.skipped_writes: list[str] = []
        self._n_skipped = 0
        self._quiet_safe_state = False  # start-up failed: failures of the safe state are expected
        for name in LATCHED_WRITES:
            setattr(self, name, self._latched_hook(name, getattr(self, name), name in LIGHT_WRITES))

    # ---------------------------------------------------------------- latch

    def _latched_hook(self, name: str, hook: Callable[..., Any], light: bool) -> Callable[..., Any]:
        what = name.removeprefix("_do_")

        @functools.wraps(hook)
        def guarded(*args: Any) -> Any:
            if getattr(self._safe_thread, "on", False):
                return hook(*args)
            if not light:
                self._refuse_if_latched(what, args)
                return hook(*args)
            with self._light_lock:
                self._refuse_if_latched(what, args)
                return hook(*args)

        return guarded

    def _refuse_if_latched(self, what: str, args: Sequence[Any]) -> None:
        if self._latched:
            self._skipped(f"{what}({', '.join(repr(a) for a in args)})")
            raise SafeStateLatched(f"{what} not written: the microscope is in its safe state")

    def _skipped(self, what: str) -> None:
        """A write the latch refused: logged, and listed for the run's events."""
        self._n_skipped += 1
        if len(self.skipped_writes) < MAX_SKIPPED_LISTED:
            self.skipped_writes.append(f"{what}: not written, the safe state is on")
            log.warning("safe state latched: %s not written", what)

    @property
    def latched(self) -> bool:
        """The safe state is on: nothing but the safe state writes to hardware any more."""
        return self._latched

    # ---------------------------------------------------------------- hooks
    # Each flavour spells these core calls its own way.

    def _do_set_exposure(self, ms: float) -> None:
        raise NotImplementedError

    def _do_get_exposure(self) -> float:
        raise NotImplementedError

    def _do_set_property(self, device: str, prop: str, value: Any) -> None:
        raise NotImplementedError

    def _do_get_property(self, device: str, prop: str) -> str:
        raise NotImplementedError

    def _do_start_sequence(self, n: int | None) -> None:
        raise NotImplementedError

    def _do_stop_sequence(self) -> None:
        raise NotImplementedError

    def _do_is_sequence_running(self) -> bool:
        raise NotImplementedError

    def _do_remaining(self) -> int:
        raise NotImplementedError

    def _do_pop(self) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def _do_snap(self) -> np.ndarray:
        raise NotImplementedError

    def _do_set_roi(self, x: int, y: int, w: int, h: int) -> None:
        raise NotImplementedError

    def _do_clear_roi(self) -> None:
        raise NotImplementedError

    def _do_get_roi(self) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def _do_set_shutter_open(self, label: str, is_open: bool) -> None:
        raise NotImplementedError

    def _do_default_shutter(self) -> str:
        raise NotImplementedError

    def _do_set_z(self, label: str, z_um: float) -> None:
        raise NotImplementedError

    def _do_set_config(self, group: str, preset: str) -> None:
        raise NotImplementedError

    def _do_release(self) -> None:
        raise NotImplementedError

    def _do_sequence_max_length(self, device: str, prop: str) -> int:
        """Steps a property sequence of ``device.prop`` may hold; 0: not sequenceable."""
        raise NotImplementedError

    def _do_load_property_sequence(self, device: str, prop: str, values: Sequence[str]) -> None:
        raise NotImplementedError

    def _do_start_property_sequence(self, device: str, prop: str) -> None:
        raise NotImplementedError

    def _do_stop_property_sequence(self, device: str, prop: str) -> None:
        raise NotImplementedError

    def _do_camera_label(self) -> str:
        raise NotImplementedError

    def _do_preset_settings(self, group: str, preset: str) -> list[tuple[str, str, str]]:
        raise NotImplementedError

    def _do_pixel_size_um(self) -> float:
        raise NotImplementedError

    def _pixel_size(self) -> float | None:
        """The core's pixel-size calibration for the current objective and binning, if any."""
        try:
            size = float(self._do_pixel_size_um())
        except Exception:
            return None
        return size if size > 0 else None

    def _do_property_upper_limit(self, device: str, prop: str) -> float | None:
        raise NotImplementedError

    def _do_loaded_devices(self) -> list[str]:
        """Labels of every loaded device but the core."""
        raise NotImplementedError

    def _do_device_properties(self, device: str) -> list[str]:
        raise NotImplementedError

    def _do_is_camera(self, device: str) -> bool:
        raise NotImplementedError

    def _do_focus_device(self) -> str:
        """The core's focus (Z) device; "" without one."""
        raise NotImplementedError

    def _do_xy_stage_device(self) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------ lifecycle

    def _vet_writes(self) -> None:
        """Before anything is written: read every declared laser back (one above its ceiling
        is switched off, with every other light, and refuses the run), learn the devices, and
        refuse what the start-up properties, the channel presets or the safe-state extras would
        set beyond the limits, and light sources nobody declared (named, all at once)."""
        self.devices = self._find_devices()
        self.gate.bind(self.devices)
        over = self.gate.over_ceiling(self._read_lasers())
        problems = over + self._write_problems()
        if over:
            self.safe_state()  # the .cfg switched a light on beyond its ceiling: off first
            raise DriverError(
                "refused before the run, every declared light switched off: " + "; ".join(problems)
            )
        if problems:
            raise DriverError("refused before the run, nothing was set: " + "; ".join(problems))

    def _find_devices(self) -> Devices:
        """The device roles the gate vets by: the configured ones, the core's own focus
        device, every device with mirror properties, and light sources nobody declared."""
        m = self.mcfg
        base = Devices.from_config(m, camera=self._do_camera_label())
        declared = {laser.device for laser in m.lasers.values()}
        lights: set[str] = set()
        mirrors: set[str] = set()
        for label in self._do_loaded_devices():
            if label == "Core" or self._do_is_camera(label):
                continue
            props = self._do_device_properties(label)
            if MIRROR_VECTOR_PROPERTY in props or any(base.mirror_mode(p) is not None for p in props):
                mirrors.add(label)
            if label not in declared and label not in m.not_light and looks_like_light(label, props):
                lights.add(label)
        return Devices(
            camera=base.camera,
            focus=m.focus or self._do_focus_device() or None,
            mirror=m.mirror,
            mirror_property=m.mirror_property,
            mirrors=frozenset(mirrors),
            lights=frozenset(lights),
        )

    def _read_lasers(self) -> dict[str, float]:
        """Every declared laser's power as the hardware reports it."""
        lasers = {}
        for name, laser in self.mcfg.lasers.items():
            try:
                lasers[name] = float(self._do_get_property(laser.device, laser.power_property))
            except Exception as exc:
                raise DriverError(
                    f"microscope.lasers.{name}: cannot read {laser.device}.{laser.power_property} ({exc})"
                ) from exc
        return lasers

    def _write_problems(self) -> list[str]:
        """What :meth:`_vet_writes` refuses, one line per field (subclasses add theirs)."""
        gate = self.gate
        problems = []
        devices = self.devices
        if devices.lights:
            names = ", ".join(sorted(devices.lights))
            what = "looks like a light source" if len(devices.lights) == 1 else "look like light sources"
            problems.append(
                f"microscope.lasers: {names} {what} (a power, intensity or laser property) not "
                "declared: declare each in microscope.lasers (vetted, switched off by the safe state) "
                "or list it in microscope.not_light"
            )
        loaded = self._do_loaded_devices()
        for name in self.mcfg.not_light:
            if name not in loaded:
                problems.append(f"microscope.not_light: no device {name!r} is loaded")
        problems += self._limit_device_problems()
        for name, laser in self.mcfg.lasers.items():
            upper = self._do_property_upper_limit(laser.device, laser.power_property)
            if upper is not None and laser.max_power_mw > upper:
                problems.append(
                    f"microscope.lasers.{name}.max_power_mw: {laser.max_power_mw:g} is above "
                    f"{laser.device}.{laser.power_property}'s own upper limit {upper:g}"
                )
        for i, prop in enumerate(self.mcfg.startup):
            reason = gate.check_setting(prop.device, prop.property, prop.value)
            if reason:
                problems.append(f"microscope.startup[{i}]: {reason}")
        for i, ch in enumerate(self.acq.channels):
            try:
                settings = self._do_preset_settings(ch.group, ch.preset)
            except Exception as exc:
                problems.append(
                    f"acquisition.channels[{i}]: no preset {ch.preset!r} in group {ch.group!r} ({exc})"
                )
                continue
            for device, name, value in settings:
                if device in devices.lights:
                    continue  # named once above
                reason = gate.check_setting(device, name, value)
                if reason:
                    problems.append(f"acquisition.channels[{i}] ({ch.group}/{ch.preset}) sets {reason}")
        for i, prop in enumerate(self.safe.properties):
            reason = gate.check_setting(prop.device, prop.property, prop.value)
            lights = any(
                (prop.device, prop.property) == (lz.device, lz.power_property)
                for lz in self.mcfg.lasers.values()
            )
            if lights and (_as_float(prop.value) or 0.0) > 0:
                reason = (
                    f"{prop.device}.{prop.property}={prop.value!r}: a safe state cannot switch a laser on"
                )
            if reason:
                problems.append(f"safe_state.properties[{i}]: {reason}")
        return problems

    def _limit_device_problems(self) -> list[str]:
        """A limit with no device to apply it to is a mistake in the configuration."""
        lim, d = self.gate.limits, self.devices
        problems = []
        if lim.z_um is not None and not d.focus:
            problems.append(
                "limits.z_um: no focus device to apply it to (microscope.focus is unset and the "
                "configuration has no focus stage)"
            )
        if lim.xy_um is not None and not self._do_xy_stage_device():
            problems.append("limits.xy_um: no XY stage to apply it to in the configuration")
        default_stroke = type(lim).model_fields["mirror_max_rad"].default
        if lim.mirror_max_rad != default_stroke and not (d.mirror or d.mirrors):
            problems.append(
                "limits.mirror_max_rad: no deformable mirror to apply it to (microscope.mirror is "
                "unset and no device has mirror properties)"
            )
        return problems

    def _configure(self) -> None:
        """Apply the configured acquisition settings; called by subclasses once connected."""
        self._vet_writes()
        for prop in self.mcfg.startup:
            try:
                self._do_set_property(prop.device, prop.property, prop.value)
            except Exception as exc:
                raise DriverError(
                    f"microscope.startup: cannot set {prop.device}.{prop.property}={prop.value!r} ({exc})"
                ) from exc
        self._do_set_exposure(self.acq.exposure_ms)
        for name, mw in self.acq.lasers_mw.items():
            laser = self.mcfg.lasers[name]
            self._do_set_property(laser.device, laser.power_property, mw)
        if self.acq.roi is not None:
            r = self.acq.roi
            self._do_set_roi(r.x, r.y, r.width, r.height)
        lasers = self._read_lasers()
        over = self.gate.over_ceiling(lasers)  # a device the start-up changed (a scene, a mode)
        if over:
            self.safe_state()
            raise DriverError("refused before the run, every declared light switched off: " + "; ".join(over))
        self._state = DriverState(
            exposure_ms=float(self._do_get_exposure()),
            interval_ms=float(self.acq.interval_ms),
            lasers=lasers,
            roi=self._do_get_roi(),
            mirror_rad=() if self.mcfg.mirror is not None else None,
            pixel_size_um=self._pixel_size(),
        )
        self._base = self._state
        self._camera = self._do_camera_label()

    def _is_streaming_mode(self) -> bool:
        return self._state.interval_ms == 0 and len(self.acq.channels) <= 1

    def start(self, n_frames: int | None) -> None:
        if self._running:
            raise DriverError("driver already started")
        if self._latched:
            raise SafeStateLatched("not started: the microscope is in its safe state")
        self._target = n_frames
        self._running = True
        self._stopping = False
        if len(self.acq.channels) == 1:
            ch = self.acq.channels[0]
            self._do_set_config(ch.group, ch.preset)
            if ch.exposure_ms is not None:
                self._do_set_exposure(ch.exposure_ms)
                self._state = self._state.replace(exposure_ms=ch.exposure_ms)
        self._begin()

    def _begin(self) -> None:
        """(Re)start frame production in the mode the current state calls for (never once
        the safe state is on: a restart would re-arm power schedules and open the shutter)."""
        if self._latched:
            self._skipped("camera restart")
            return
        self._streaming = self._is_streaming_mode()
        if self._streaming:
            left = None if self._target is None else self._target - self._delivered - len(self._pending)
            if self._state.burst and self._burst_left is not None:
                # a counted burst: the camera takes exactly that many, then we switch back
                left = self._burst_left if left is None else min(left, self._burst_left)
            if left is not None and left <= 0:
                return
            self.camera_started_s = time.perf_counter()  # the watchdog allows its start-up time
            self._arm_sequences()
            self._do_start_sequence(left)
        else:
            self._next_due = time.perf_counter()

    def _arm_sequences(self) -> None:
        """Start every loaded laser schedule at its first step with the camera's next frame
        (and note where a schedule that was replaced ends), so each frame's power is known."""
        first = self._delivered + len(self._pending)
        for name in sorted(set(self._armed) | set(self._segments)):
            laser = self.mcfg.lasers[name]
            powers = self._armed.get(name)
            if powers is not None:
                self._do_stop_property_sequence(laser.device, laser.power_property)
                self._do_start_property_sequence(laser.device, laser.power_property)
            segs = self._segments.setdefault(name, [])
            if segs and segs[-1][0] == first:
                segs[-1] = (first, powers)
            elif powers is not None or (segs and segs[-1][1] is not None):
                segs.append((first, powers))
            while len(segs) > 1 and segs[1][0] <= self._delivered:
                segs.pop(0)  # every frame still to come is past it

    def _sequenced_power(self, name: str, index: int) -> float | None:
        """The power a hardware schedule gave frame ``index``, or None (no schedule ran)."""
        for first, powers in reversed(self._segments.get(name, ())):
            if first <= index:
                return None if powers is None else powers[(index - first) % len(powers)]
        return None

    def _stop_sequence_of(self, name: str) -> None:
        laser = self.mcfg.lasers[name]
        if self._armed.pop(name, None) is not None:
            self._do_stop_property_sequence(laser.device, laser.power_property)

    def _halt_and_drain(self) -> bool:
        """Stop the sequence and keep every frame already acquired, with its state.

        Returns whether a running sequence was stopped."""
        if not (self._streaming and self._do_is_sequence_running()):
            return False
        self._do_stop_sequence()
        while self._do_remaining() > 0:
            img, md = self._do_pop()
            self._pending.append((img, md, self._attribute(md)))
        return True

    def stop(self) -> None:
        self._stopping = True
        if self._streaming and self._running:
            with contextlib.suppress(Exception):
                self._halt_and_drain()
        self._running = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._do_release()

    def _abandon_core(self, core: Any) -> None:
        """A core whose ``.cfg`` failed to load, or whose loading a stop signal ended: its
        lights go off (what the start-up lines switched on), then it goes."""
        self.core = core
        self._abandon()

    def _abandon(self) -> None:
        """Start-up failed, was refused or interrupted: the safe state (whatever the .cfg or
        the start-up switched on goes off; a device that is not there is skipped without a
        word, the error that ended the start-up says what is wrong), then the core goes."""
        try:
            self._quiet_safe_state = True
            MMCoreDriver.safe_state(self)
        except Exception as exc:  # pragma: no cover - safe_state logs and goes on
            log.debug("safe state during start-up: %s", exc)
        finally:
            self._quiet_safe_state = False
        self._do_release()

    # --------------------------------------------------------------- frames

    def _attribute(self, md: dict[str, Any]) -> DriverState:
        """The state a streamed frame was taken in; marks ``md["_transition"]`` when its
        exposure may have straddled a live change (see the module doc). Frames arrive in
        order, so a change every later frame will see whole is folded into the base state."""
        if not self._timeline:
            return self._state
        start, end = md.get("ExposureStart_s"), md.get("ExposureEnd_s")
        if start is not None and end is not None:
            with contextlib.suppress(TypeError, ValueError):
                return self._attribute_window(md, float(start), float(end))
        return self._attribute_received(md, _camera_time(md))

    def _attribute_window(self, md: dict[str, Any], begin: float, end: float) -> DriverState:
        """The camera says when it exposed: changes complete before ``begin`` are in force,
        a change that began before ``end`` and was not complete by ``begin`` straddles."""
        while self._timeline and self._timeline[0].done_s <= begin:
            self._base = self._timeline.popleft().after
        if self._timeline and self._timeline[0].began_s < end:
            md["_transition"] = True
        return self._base

    def _attribute_received(self, md: dict[str, Any], received: float) -> DriverState:
        """Only the time the core received the frame is known. A frame received before a
        change began was exposed before it; the frames received after it completed are in
        force from the ``camera_pipeline_frames`` + 1-th on (earlier ones may have been
        exposing, or waiting in the camera, while it happened)."""
        depth = self.acq.camera_pipeline_frames
        for change in self._timeline:
            if received < change.began_s:
                break  # this and every later change came after the frame
            if received >= change.done_s:
                change.received_after += 1
        while self._timeline and self._timeline[0].received_after > depth:
            self._base = self._timeline.popleft().after
        if self._timeline and received >= self._timeline[0].began_s:
            md["_transition"] = True
        return self._base

    def _make_frame(
        self, img: np.ndarray, md: dict[str, Any], state: DriverState, channel: str = ""
    ) -> Frame:
        for name in self._segments:
            power = self._sequenced_power(name, self._delivered)
            if power is not None:
                state = state.with_laser(name, power)
        frame = Frame(
            index=self._delivered,
            image=img,
            camera_time_s=_camera_time(md),
            channel=channel,
            state=state,
            metadata={"mm": md},
        )
        frame.times["camera"] = frame.camera_time_s
        self._delivered += 1
        if self._burst_left is not None and state.burst:
            self._burst_left -= 1
            if self._burst_left <= 0:
                self._end_burst()
        return frame

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._pending:
            img, md, st = self._pending.popleft()
            frame = self._make_frame(img, md, st)
            frame.transition = bool(md.get("_transition"))
            md.pop("_transition", None)
            return frame
        if self._target is not None and self._delivered >= self._target:
            raise StopIteration
        if not self._running:
            raise StopIteration
        if self._streaming:
            return self._next_streamed(timeout_s)
        try:
            return self._next_timed(timeout_s)
        except SafeStateLatched:  # the safe state came while this frame was being set up
            raise StopIteration from None

    def _next_streamed(self, timeout_s: float) -> Frame | None:
        deadline = time.perf_counter() + timeout_s
        while True:
            if self._do_remaining() > 0:
                img, md = self._do_pop()
                state = self._attribute(md)
                frame = self._make_frame(img, md, state)
                frame.transition = bool(md.pop("_transition", False))
                return frame
            if not self._do_is_sequence_running():
                if self._do_remaining() > 0:
                    continue
                if self._stopping or (self._target is not None and self._delivered >= self._target):
                    raise StopIteration
                raise DriverError(
                    f"camera sequence ended unexpectedly after {self._delivered} frames "
                    "(circular buffer overflow or camera error)"
                )
            if time.perf_counter() >= deadline:
                return None
            time.sleep(_POLL_S)

    def _next_timed(self, timeout_s: float) -> Frame | None:
        wait = self._next_due - time.perf_counter()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        if self._latched:  # no next channel, no next snap: the safe state is final
            self._skipped("the next time-lapse frame (channel preset and snap)")
            raise StopIteration
        channel = ""
        state = self._state
        if self.acq.channels:
            ch = self.acq.channels[self._channel_i % len(self.acq.channels)]
            if len(self.acq.channels) > 1:
                self._do_set_config(ch.group, ch.preset)
                exp = ch.exposure_ms or self._state.exposure_ms
                self._do_set_exposure(exp)
                # a channel's own exposure takes precedence; the frame records what was used
                state = self._state.replace(exposure_ms=exp)
            channel = ch.preset
            self._channel_i += 1
        img = self._do_snap()
        md = {"TimeReceivedByCore": datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")}
        last_channel = not self.acq.channels or self._channel_i % len(self.acq.channels) == 0
        if last_channel:
            self._next_due += self._state.interval_ms / 1e3
            # if we fell behind, do not try to catch up with a burst of frames
            self._next_due = max(self._next_due, time.perf_counter())
        return self._make_frame(img, md, state, channel)

    # -------------------------------------------------------------- actions

    def _reconfigures_camera(self, action: Action) -> bool:
        """Actions that change what the camera does (so its sequence must restart)."""
        if isinstance(action, SetExposure | SetROI | ClearROI | SetInterval | StartBurst | StopBurst):
            return True
        # arming or ending a hardware schedule restarts the camera once: frame k of the
        # schedule is then exactly the k-th frame after the restart
        if isinstance(action, SetLaserSequence):
            return True
        if isinstance(action, SetLaserPower) and action.laser in self._armed:
            return True
        if isinstance(action, SetProperty):
            if action.device == self._camera:
                return True
            lasers = [self.mcfg.lasers[n] for n in self._armed]
            return any((la.device, la.power_property) == (action.device, action.property) for la in lasers)
        return False

    def apply(self, actions: Sequence[Action]) -> ApplyResult:
        live = (
            self.acq.apply_mode == "live"
            and self._streaming
            and self._running
            and not self._stopping
            and not any(self._reconfigures_camera(a) for a in actions)
        )
        if live:
            return self._apply_live(actions)
        if self._streaming and self._running:
            self.camera_started_s = time.perf_counter()  # a restart: stop, drain, start
        restarted = self._halt_and_drain()
        state, errors = self._apply_all(actions, self._state)
        self._state = self._base = state
        self._timeline.clear()  # the camera is stopped: every earlier change is behind us
        first = self._delivered + len(self._pending)
        if self._running and not self._stopping:
            with contextlib.suppress(SafeStateLatched):  # listed in skipped_writes
                self._begin()
        return ApplyResult(first, errors, state.revision, restarted and self._streaming)

    def _apply_live(self, actions: Sequence[Action]) -> ApplyResult:
        t_begin = now_s()
        state, errors = self._apply_all(actions, self._state)
        t_done = now_s()
        self._timeline.append(_LiveChange(t_begin, t_done, state))
        self._state = state
        return ApplyResult(None, errors, state.revision, False)

    def _apply_all(
        self, actions: Sequence[Action], state: DriverState
    ) -> tuple[DriverState, list[str | None]]:
        errors: list[str | None] = []
        for action in actions:
            if self._latched:  # the safe state came before (or while) this batch was applied
                self._skipped(f"{action.kind} action {action.model_dump(exclude={'kind'})}")
                errors.append("not applied: the microscope is in its safe state")
                continue
            try:
                state = self._apply_one(action, state)
                errors.append(None)
            except SafeStateLatched as exc:
                errors.append(f"not applied: {exc}")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        # an objective, binning or ROI change may change the sample pixel size
        return state.replace(revision=state.revision + 1, pixel_size_um=self._pixel_size()), errors

    def _apply_one(self, action: Action, state: DriverState) -> DriverState:
        """Carry out one action; return the state with it in force."""
        if isinstance(action, SetExposure):
            self._do_set_exposure(action.exposure_ms)
            return state.replace(exposure_ms=float(self._do_get_exposure()))
        if isinstance(action, SetLaserPower):
            laser = self.mcfg.lasers.get(action.laser)
            if laser is None:
                raise DriverError(f"unknown laser {action.laser!r}")
            self._stop_sequence_of(action.laser)
            self._do_set_property(laser.device, laser.power_property, action.power_mw)
            return state.with_laser(action.laser, action.power_mw)
        if isinstance(action, SetLaserSequence):
            return self._load_laser_sequence(action, state)
        if isinstance(action, SetProperty):
            for name, laser in self.mcfg.lasers.items():
                if (laser.device, laser.power_property) == (action.device, action.property):
                    self._stop_sequence_of(name)
            self._do_set_property(action.device, action.property, action.value)
            for name, laser in self.mcfg.lasers.items():
                if (laser.device, laser.power_property) == (action.device, action.property):
                    state = state.with_laser(name, float(action.value))
            return state
        if isinstance(action, SetROI):
            self._do_set_roi(action.x, action.y, action.width, action.height)
            return state.replace(roi=self._do_get_roi())
        if isinstance(action, ClearROI):
            self._do_clear_roi()
            return state.replace(roi=self._do_get_roi())
        if isinstance(action, SetInterval):
            self._next_due = time.perf_counter()
            return state.replace(interval_ms=action.interval_ms)
        if isinstance(action, StartBurst):
            if not state.burst:
                self._saved_interval_ms = state.interval_ms
            self._burst_left = action.n_frames
            self._next_due = time.perf_counter()
            return state.replace(interval_ms=action.interval_ms, burst=True)
        if isinstance(action, StopBurst):
            if not state.burst:
                return state
            self._burst_left = None
            return state.replace(interval_ms=self._saved_interval_ms, burst=False)
        if isinstance(action, SetZ):
            if self.mcfg.focus is None:
                raise ActionNotSupported("SetZ needs microscope.focus (a Z stage label)")
            self._do_set_z(self.mcfg.focus, action.z_um)
            return state.replace(z_um=action.z_um)
        if isinstance(action, SetMirror):
            if self.mcfg.mirror is None:
                raise ActionNotSupported("SetMirror needs microscope.mirror (a device label)")
            for j, amp in enumerate(action.zernike_rad, start=1):
                self._do_set_property(self.mcfg.mirror, self.mcfg.mirror_property.format(j=j), amp)
            return state.replace(mirror_rad=tuple(action.zernike_rad))
        if isinstance(action, AcquireAt | SkipPosition | SetPositionInterval):
            raise ActionNotSupported(f"{type(action).__name__} needs an MDA plan (acquisition.mda)")
        raise ActionNotSupported(f"{type(action).__name__} is not supported")  # pragma: no cover

    def _load_laser_sequence(self, action: SetLaserSequence, state: DriverState) -> DriverState:
        """Load the schedule into the device; it starts with the camera's next start."""
        laser = self.mcfg.lasers.get(action.laser)
        if laser is None:
            raise DriverError(f"unknown laser {action.laser!r}")
        if not (state.interval_ms == 0 and len(self.acq.channels) <= 1):
            raise ActionNotSupported(
                "SetLaserSequence steps with the camera's frames: it needs a streaming camera "
                "(interval_ms 0, at most one channel)"
            )
        where = f"{laser.device}.{laser.power_property}"
        max_len = self._do_sequence_max_length(laser.device, laser.power_property)
        if max_len <= 0:
            raise ActionNotSupported(
                f"{where} is not sequenceable in Micro-Manager: a frame-locked schedule needs "
                "a hardware-triggered laser"
            )
        if len(action.powers_mw) > max_len:
            raise ActionNotSupported(f"{where} holds at most {max_len} steps, got {len(action.powers_mw)}")
        self._stop_sequence_of(action.laser)
        self._do_load_property_sequence(
            laser.device, laser.power_property, [str(mm_value(p)) for p in action.powers_mw]
        )
        self._armed[action.laser] = tuple(action.powers_mw)
        return state.with_laser(action.laser, action.powers_mw[0])

    def _end_burst(self) -> None:
        """A counted burst is over: back to the saved interval at this frame boundary."""
        self.camera_started_s = time.perf_counter()
        self._halt_and_drain()
        self._state = self._base = self._state.replace(interval_ms=self._saved_interval_ms, burst=False)
        self._timeline.clear()
        self._burst_left = None
        if self._running and not self._stopping:
            self._begin()

    def state(self) -> DriverState:
        return self._state

    @property
    def camera_label(self) -> str:
        return self._camera

    def safe_state(self) -> None:
        """Latch, then lights off, shutter closed, safe-state extras (see the module doc).
        Any thread; never waits on the acquisition thread (at most ``LIGHT_WRITE_WAIT_S`` for
        a light write in flight, and only after writing its zeros once already)."""
        self._latched = True
        outer = getattr(self._safe_thread, "on", False)
        self._safe_thread.on = True
        in_flight = not self._light_lock.acquire(blocking=False)
        try:
            self._lights_off()
            if in_flight:  # a light write began before the latch: once it lands, off again
                if self._light_lock.acquire(timeout=LIGHT_WRITE_WAIT_S):
                    in_flight = False
                    self._lights_off()
                else:
                    log.error(
                        "safe state: a light write still in flight after %g s; it is refused "
                        "afterwards only if it reaches the latch",
                        LIGHT_WRITE_WAIT_S,
                    )
        finally:
            if not in_flight:
                self._light_lock.release()
            self._safe_thread.on = outer

    def _lights_off(self) -> None:
        """The safe state's writes: every power schedule stopped, every declared light to 0,
        the shutter closed, the configured extras. Each failure is logged and the rest go on."""
        report = log.debug if self._quiet_safe_state else log.error
        present: set[str] | None = None  # start-up cut short: only the devices that got loaded
        if self._quiet_safe_state:
            with contextlib.suppress(Exception):
                present = set(self._do_loaded_devices())
        for name in list(self._armed):  # a running schedule would turn the light back on
            try:
                self._stop_sequence_of(name)
            except Exception as exc:
                report("safe state: could not stop the power sequence of laser %s: %s", name, exc)
        for name, laser in self.mcfg.lasers.items():
            if present is not None and laser.device not in present:
                continue
            try:
                self._do_set_property(laser.device, laser.power_property, 0)
            except Exception as exc:  # keep going: every other laser must still go off
                report("safe state: could not turn laser %s off: %s", name, exc)
        if self.safe.close_shutter:
            try:
                label = self.mcfg.shutter or self._do_default_shutter()
                if label:
                    self._do_set_shutter_open(label, False)
            except Exception as exc:
                report("safe state: could not close shutter: %s", exc)
        for prop in self.safe.properties:
            if present is not None and prop.device not in present:
                continue
            try:
                self._do_set_property(prop.device, prop.property, prop.value)
            except Exception as exc:
                report("safe state: %s.%s: %s", prop.device, prop.property, exc)


class PymmcorePlusDriver(MMCoreDriver):
    """An in-process MMCore through pymmcore-plus (``UniMMCore``: C++ and Python devices)."""

    name = "pymmcore-plus"
    _run_plan = False  # an MDA plan (acquisition.mda) needs the subclass that runs it

    def __init__(
        self,
        microscope: MicroscopeConfig,
        acquisition: AcquisitionConfig,
        safe: SafeStateConfig,
        core: Any | None = None,
        gate: SafetyGate | None = None,
    ) -> None:
        super().__init__(microscope, acquisition, safe, gate)
        if acquisition.sequence is not None and type(self)._run_plan is False:
            raise DriverError(
                "acquisition.mda: a plan runs through the MDA driver (drivers.open_driver picks it)"
            )
        self._owns_core = core is None
        if core is None:
            core = open_pymmcore_plus(microscope, abandon=self._abandon_core)
        self.core = core
        try:
            self._open_camera(core)
            self._configure()
            core.waitForSystem()  # devices still busy with the settings (a camera rebuilding) finish first
        except BaseException:
            # a refusal, an error or a stop signal during start-up: whatever the .cfg or the
            # start-up switched on goes off before a core this driver loaded is unloaded
            self._abandon()
            raise

    def _open_camera(self, core: Any) -> None:
        m = self.mcfg
        try:
            core.setCircularBufferMemoryFootprint(m.buffer_size_mb)
        except Exception as exc:
            raise DriverError(
                f"microscope.buffer_size_mb: Micro-Manager cannot allocate {m.buffer_size_mb} MB ({exc})"
            ) from None
        if m.camera is not None:
            cameras = [str(d) for d in core.getLoadedDevicesOfType(2)]  # DeviceType.Camera
            if m.camera not in cameras:
                raise DriverError(
                    f"microscope.camera: no camera {m.camera!r} in the configuration; have {cameras}"
                )
            core.setCameraDevice(m.camera)
        if not core.getCameraDevice():
            raise DriverError("the Micro-Manager configuration has no camera device")

    def _do_set_exposure(self, ms: float) -> None:
        self.core.setExposure(ms)

    def _do_get_exposure(self) -> float:
        return float(self.core.getExposure())

    def _do_set_property(self, device: str, prop: str, value: Any) -> None:
        self.core.setProperty(device, prop, mm_value(value))

    def _do_get_property(self, device: str, prop: str) -> str:
        return str(self.core.getProperty(device, prop))

    def _do_start_sequence(self, n: int | None) -> None:
        if n is None:
            self.core.startContinuousSequenceAcquisition(0)
        else:
            self.core.startSequenceAcquisition(n, 0, True)

    def _do_stop_sequence(self) -> None:
        self.core.stopSequenceAcquisition()

    def _do_is_sequence_running(self) -> bool:
        return bool(self.core.isSequenceRunning())

    def _do_remaining(self) -> int:
        return int(self.core.getRemainingImageCount())

    def _do_pop(self) -> tuple[np.ndarray, dict[str, Any]]:
        img, md = self.core.popNextImageAndMD()
        return img, dict(md)

    def _do_snap(self) -> np.ndarray:
        self.core.snapImage()
        return np.asarray(self.core.getImage())

    def _do_set_roi(self, x: int, y: int, w: int, h: int) -> None:
        self.core.setROI(x, y, w, h)

    def _do_clear_roi(self) -> None:
        self.core.clearROI()

    def _do_get_roi(self) -> tuple[int, int, int, int]:
        x, y, w, h = self.core.getROI()
        return int(x), int(y), int(w), int(h)

    def _do_set_shutter_open(self, label: str, is_open: bool) -> None:
        self.core.setShutterOpen(label, is_open)

    def _do_default_shutter(self) -> str:
        return str(self.core.getShutterDevice())

    def _do_set_z(self, label: str, z_um: float) -> None:
        self.core.setPosition(label, z_um)

    def _do_set_config(self, group: str, preset: str) -> None:
        self.core.setConfig(group, preset)
        self.core.waitForConfig(group, preset)

    def _do_camera_label(self) -> str:
        return str(self.core.getCameraDevice())

    def _do_pixel_size_um(self) -> float:
        return float(self.core.getPixelSizeUm())

    def _do_preset_settings(self, group: str, preset: str) -> list[tuple[str, str, str]]:
        return [(str(d), str(p), str(v)) for d, p, v in self.core.getConfigData(group, preset)]

    def _do_property_upper_limit(self, device: str, prop: str) -> float | None:
        if not self.core.hasPropertyLimits(device, prop):
            return None
        return float(self.core.getPropertyUpperLimit(device, prop))

    def _do_loaded_devices(self) -> list[str]:
        return [str(d) for d in self.core.getLoadedDevices() if str(d) != "Core"]

    def _do_device_properties(self, device: str) -> list[str]:
        return [str(p) for p in self.core.getDevicePropertyNames(device)]

    def _do_is_camera(self, device: str) -> bool:
        return int(self.core.getDeviceType(device)) == 2  # DeviceType.CameraDevice

    def _do_focus_device(self) -> str:
        return str(self.core.getFocusDevice())

    def _do_xy_stage_device(self) -> str:
        return str(self.core.getXYStageDevice())

    def _do_sequence_max_length(self, device: str, prop: str) -> int:
        if not self.core.isPropertySequenceable(device, prop):
            return 0
        return int(self.core.getPropertySequenceMaxLength(device, prop))

    def _do_load_property_sequence(self, device: str, prop: str, values: Sequence[str]) -> None:
        self.core.loadPropertySequence(device, prop, list(values))

    def _do_start_property_sequence(self, device: str, prop: str) -> None:
        self.core.startPropertySequence(device, prop)

    def _do_stop_property_sequence(self, device: str, prop: str) -> None:
        self.core.stopPropertySequence(device, prop)

    def _do_release(self) -> None:
        if self._owns_core:
            with contextlib.suppress(Exception):
                self.core.unloadAllDevices()
            self.__dict__.pop("core", None)
            gc.collect()  # a live demo core at interpreter exit can abort it ('exception not rethrown')


class PycromanagerDriver(MMCoreDriver):
    """A Micro-Manager core reached through pycromanager.

    ``headless``: pycromanager's in-process Python-backend core (pymmcore); ``bridge``:
    the core of a running Micro-Manager application over its ZMQ bridge. Both expose
    the snake_case core API used here.
    """

    name = "pycromanager"

    def __init__(
        self,
        microscope: MicroscopeConfig,
        acquisition: AcquisitionConfig,
        safe: SafeStateConfig,
        core: Any | None = None,
        gate: SafetyGate | None = None,
    ) -> None:
        super().__init__(microscope, acquisition, safe, gate)
        if acquisition.sequence is not None:
            raise DriverError(
                "acquisition.mda: the pycromanager driver cannot run an MDA plan; use pymmcore-plus"
            )
        self._headless = False
        if core is None:
            try:
                from pycromanager import Core
            except ImportError as exc:
                raise DriverError(
                    "microscope.driver 'pycromanager' needs the pycromanager package "
                    "(pip install 'smartscope[pycromanager]')"
                ) from exc
            if microscope.pycromanager_mode == "headless":
                if microscope.config_file == "virtual":
                    raise DriverError(
                        "microscope.config_file 'virtual' needs pymmcore-plus (Python devices);"
                        " pycromanager's headless core is plain pymmcore"
                    )
                self._headless = True  # from here on, released (after the safe state) on failure
                core = open_pycromanager_headless(microscope, abandon=self._abandon_core)
            else:
                core = Core(port=microscope.bridge_port)
        self.core = core
        try:
            if microscope.camera is not None:
                core.set_camera_device(microscope.camera)
            self._configure()
            core.wait_for_system()  # devices still busy with the settings finish before any frame
        except BaseException:
            self._abandon()
            raise

    def _do_set_exposure(self, ms: float) -> None:
        self.core.set_exposure(float(ms))

    def _do_get_exposure(self) -> float:
        return float(self.core.get_exposure())

    def _do_set_property(self, device: str, prop: str, value: Any) -> None:
        self.core.set_property(device, prop, mm_value(value))

    def _do_get_property(self, device: str, prop: str) -> str:
        return str(self.core.get_property(device, prop))

    def _do_start_sequence(self, n: int | None) -> None:
        if n is None:
            self.core.start_continuous_sequence_acquisition(0.0)
        else:
            self.core.start_sequence_acquisition(n, 0.0, True)

    def _do_stop_sequence(self) -> None:
        self.core.stop_sequence_acquisition()

    def _do_is_sequence_running(self) -> bool:
        return bool(self.core.is_sequence_running())

    def _do_remaining(self) -> int:
        return int(self.core.get_remaining_image_count())

    def _do_pop(self) -> tuple[np.ndarray, dict[str, Any]]:
        tagged = self.core.pop_next_tagged_image()
        tags = dict(tagged.tags)
        pix = np.asarray(tagged.pix)
        if pix.ndim == 1:
            pix = pix.reshape(int(tags["Height"]), int(tags["Width"]))
        return pix, tags

    def _do_snap(self) -> np.ndarray:
        self.core.snap_image()
        pix = np.asarray(self.core.get_image())
        if pix.ndim == 1:
            pix = pix.reshape(int(self.core.get_image_height()), int(self.core.get_image_width()))
        return pix

    def _do_set_roi(self, x: int, y: int, w: int, h: int) -> None:
        self.core.set_roi(x, y, w, h)

    def _do_clear_roi(self) -> None:
        self.core.clear_roi()

    def _do_get_roi(self) -> tuple[int, int, int, int]:
        roi = self.core.get_roi()
        if hasattr(roi, "x"):  # java.awt.Rectangle over the bridge
            return int(roi.x), int(roi.y), int(roi.width), int(roi.height)
        x, y, w, h = roi
        return int(x), int(y), int(w), int(h)

    def _do_set_shutter_open(self, label: str, is_open: bool) -> None:
        self.core.set_shutter_open(label, is_open)

    def _do_default_shutter(self) -> str:
        return str(self.core.get_shutter_device())

    def _do_set_z(self, label: str, z_um: float) -> None:
        self.core.set_position(label, float(z_um))

    def _do_set_config(self, group: str, preset: str) -> None:
        self.core.set_config(group, preset)
        self.core.wait_for_config(group, preset)

    def _do_camera_label(self) -> str:
        return str(self.core.get_camera_device())

    def _do_pixel_size_um(self) -> float:
        return float(self.core.get_pixel_size_um())

    def _do_preset_settings(self, group: str, preset: str) -> list[tuple[str, str, str]]:
        data = self.core.get_config_data(group, preset)
        out = []
        for i in range(int(data.size())):
            # over the Java bridge the objects are snake_case; the headless core's are pymmcore's
            s = _call(data, "get_setting", "getSetting", i)
            out.append(
                (
                    str(_call(s, "get_device_label", "getDeviceLabel")),
                    str(_call(s, "get_property_name", "getPropertyName")),
                    str(_call(s, "get_property_value", "getPropertyValue")),
                )
            )
        return out

    def _do_property_upper_limit(self, device: str, prop: str) -> float | None:
        if not self.core.has_property_limits(device, prop):
            return None
        return float(self.core.get_property_upper_limit(device, prop))

    def _do_loaded_devices(self) -> list[str]:
        return [d for d in _strings(self.core.get_loaded_devices()) if d != "Core"]

    def _do_device_properties(self, device: str) -> list[str]:
        return _strings(self.core.get_device_property_names(device))

    def _do_is_camera(self, device: str) -> bool:
        kind = self.core.get_device_type(device)
        return int(getattr(kind, "swig_value", lambda: kind)()) == 2  # DeviceType.CameraDevice

    def _do_focus_device(self) -> str:
        return str(self.core.get_focus_device())

    def _do_xy_stage_device(self) -> str:
        return str(self.core.get_xy_stage_device())

    def _do_sequence_max_length(self, device: str, prop: str) -> int:
        if not self.core.is_property_sequenceable(device, prop):
            return 0
        return int(self.core.get_property_sequence_max_length(device, prop))

    def _do_load_property_sequence(self, device: str, prop: str, values: Sequence[str]) -> None:
        self.core.load_property_sequence(device, prop, list(values))

    def _do_start_property_sequence(self, device: str, prop: str) -> None:
        self.core.start_property_sequence(device, prop)

    def _do_stop_property_sequence(self, device: str, prop: str) -> None:
        self.core.stop_property_sequence(device, prop)

    def _do_release(self) -> None:
        if self._headless:
            from pycromanager import stop_headless

            with contextlib.suppress(Exception):
                stop_headless()
            self.__dict__.pop("core", None)
            gc.collect()
