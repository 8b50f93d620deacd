"""An MDA plan (useq-schema ``MDASequence``) through pymmcore-plus's runner and engine.

``acquisition.mda`` / ``acquisition.mda_file`` turns the pymmcore-plus driver into
:class:`MDADriver`. The plan runs through pymmcore-plus's own ``MDARunner`` and
``MDAEngine`` (``core.mda.run``) on a thread of its own, fed by an event iterator this
driver controls: a :class:`~smartscope.drivers.mda_schedule.Schedule` decides what comes
next and when (the plan's events in ``list(sequence)`` order, plus what controllers
asked for), so the runner never waits on a ``min_start_time`` itself. A queue-fed runner
bypasses the engine's hardware sequencing; each job (one position's grid tiles, channels
and z planes at one timepoint, or one ``AcquireAt``) therefore goes through pymmcore-plus's
``iter_sequenced_events``, which makes hardware-sequenced events of whatever the devices
can sequence (``core.mda.engine.use_hardware_sequencing`` switches it off).

Threads and invariants:

* the **runner thread** runs the engine and this iterator. Between events (never inside
  one) it applies the batches of actions the loop handed to :meth:`apply`, so every frame
  taken after a batch carries its ``DriverState.revision``. Its ``frameReady`` handler only
  queues the frame (DESIGN pitfall: never work there).
* the loop's **acquisition thread** calls :meth:`next_frame` (which builds each frame's
  ``axes``, ``series``, ``channel`` and ``state`` from the engine's metadata) and
  :meth:`apply`, which returns once the runner thread applied the batch, with
  ``first_frame_index=None``: frames resolve it, as in live streaming.
* :meth:`safe_state` (any thread) switches light off, stops the runner and is final: a
  batch or an event in flight is followed by the safe state again on the runner thread.
  While the runner runs, the core's own write methods refuse once the safe state is on
  (the latch of :mod:`smartscope.drivers.mmcore`), so nothing pymmcore-plus's engine does
  in an event already under way (its channel preset after a stage that hung, its property
  sequences, its snap, its restoring of the start state) can switch light back on.
* the plan's size is checked (``limits.max_plan_events``, from its axes) before it is
  expanded; an ``AcquireAt`` is bounded in frames x planes x channels
  (``limits.max_burst_frames``) before its events are made.
* every frame the engine delivered reaches :meth:`next_frame`, also after a stop, a cap
  (``n_frames``) or a fault; an event that delivered fewer frames than it should (the
  engine logs a failed snap and goes on) is a driver error.

Hardware actions keep their meaning between events (``SetExposure``, ``SetLaserPower``,
``SetProperty``, ``SetZ``, ROI, mirror), but the plan's next event sets what it names: its
channel preset, its exposure, its position. ``SetInterval`` re-times every position;
``StartBurst``/``StopBurst`` are refused (``AcquireAt`` is the burst of a plan).

Frames: ``axes`` is the event's useq index (``t, p, g, c, z``); ``series`` is ``p<p>`` for
the plan's frames (one image series per stage position, ``p<p>-g<g>`` per grid tile, as
Micro-Manager stores a grid's tiles as positions; a plan without positions is ``p0``) and
``p<p>-burst<n>`` (``at<n>`` for an ``xy_um`` target) for the n-th ``AcquireAt`` there,
whose own ``t, c, z`` count from 0. ``state`` has the XY/Z position
(the engine's read-back for snapped frames, the commanded value for hardware-sequenced
ones), exposure, pixel size, the lasers the channel preset sets, and ``interval_ms``: the
time-lapse interval in force at that position (``burst``: an ``AcquireAt`` frame). The
live :meth:`state` reports as ``interval_ms`` the longest gap it plans before its next
frame (the watchdog's allowance while it waits for a timepoint).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import useq

from smartscope.actions import (
    AcquireAt,
    Action,
    SetInterval,
    SetPositionInterval,
    SkipPosition,
    StartBurst,
    StopBurst,
)
from smartscope.config import AcquisitionConfig, MicroscopeConfig, SafeStateConfig
from smartscope.config.mda import (
    declared_autofocus,
    declared_channels,
    event_index,
    extent_problems,
    image_events,
    plan_events,
    plan_problems,
    size_problem,
)
from smartscope.core_signals import connect_direct, disconnect_quietly
from smartscope.drivers.base import ActionNotSupported, ApplyResult, DriverError
from smartscope.drivers.mda_schedule import Job, Schedule
from smartscope.drivers.mmcore import PymmcorePlusDriver, _camera_time
from smartscope.frame import Frame, now_s
from smartscope.safety import SafetyGate
from smartscope.state import DriverState

__all__ = ["MDADriver", "series_of", "series_sizes"]

log = logging.getLogger(__name__)

FIELD = "acquisition.mda"
SERIES_KEY = "smartscope_series"  # MDAEvent.metadata key of an extra job's image series
_END = object()  # queued by the runner thread after its last frame
_WAIT_SLICE_S = 0.05
# what starting a camera sequence is assumed to cost when a burst is cut to fit before the
# plan's next job (DemoCamera measured 70-100 ms here; the virtual camera's default is 100 ms)
SEQUENCE_START_S = 0.1
# the core's write methods pymmcore-plus's engine calls; while the runner runs they refuse
# once the safe state is on (the first group can switch light on: they hold the light lock)
CORE_LIGHT_WRITES = (
    "setConfig",
    "setProperty",
    "setShutterOpen",
    "setAutoShutter",
    "loadPropertySequence",
    "startPropertySequence",
)
CORE_WRITES = (
    *CORE_LIGHT_WRITES,
    "setExposure",
    "snapImage",
    "startSequenceAcquisition",
    "startContinuousSequenceAcquisition",
    "setXYPosition",
    "setPosition",
    "setZPosition",
    "setRelativeXYPosition",
    "setRelativePosition",
    "startStageSequence",
    "startXYStageSequence",
    "startExposureSequence",
    "setROI",
    "setSLMImage",
    "fullFocus",
    "incrementalFocus",
    "enableContinuousFocus",
)


def series_of(event: useq.MDAEvent) -> str:
    """The image series an event's frame is stored in: ``p<p>`` per stage position of the
    plan, ``p<p>-g<g>`` per grid tile (as Micro-Manager stores tiles); an extra job (a
    burst) names its own in the event's metadata."""
    axes = event_index(event)
    series = f"p{axes.get('p', 0)}" + (f"-g{axes['g']}" if "g" in axes else "")
    return str((event.metadata or {}).get(SERIES_KEY) or series)


def series_sizes(events: Sequence[useq.MDAEvent], axis_order: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per image series, its number of channels and z planes (the largest index + 1), keys
    in ``axis_order`` (outer to inner): a position whose sub-sequence has fewer planes, or a
    burst with its own channels, gets its own shape."""
    order = [str(getattr(a, "value", a)) for a in axis_order if str(getattr(a, "value", a)) in ("c", "z")]
    order += [a for a in ("c", "z") if a not in order]
    sizes: dict[str, dict[str, int]] = {}
    for e in image_events(events):
        axes = event_index(e)
        mine = sizes.setdefault(series_of(e), dict.fromkeys(order, 1))
        for a in order:
            mine[a] = max(mine[a], axes.get(a, 0) + 1)
    return sizes


@dataclass(slots=True)
class _Batch:
    """Actions handed from the acquisition thread to the runner thread."""

    actions: list[Action]
    done: threading.Event = field(default_factory=threading.Event)
    errors: list[str | None] = field(default_factory=list)
    revision: int = 0


@dataclass(frozen=True, slots=True)
class _Context:
    """What a frame inherits from the moment its event was handed to the runner."""

    state: DriverState
    interval_ms: float
    burst: bool


class MDADriver(PymmcorePlusDriver):
    """Runs ``acquisition.mda`` through pymmcore-plus's MDA runner (see the module doc)."""

    name = "pymmcore-plus-mda"
    _run_plan = True
    stop_timeout_s = 10.0  # how long stop() waits for the event in flight (a hung device: gives up)

    def __init__(
        self,
        microscope: MicroscopeConfig,
        acquisition: AcquisitionConfig,
        safe: SafeStateConfig,
        core: Any | None = None,
        gate: SafetyGate | None = None,
    ) -> None:
        seq = acquisition.sequence
        if seq is None:
            raise DriverError("acquisition.mda: the MDA driver needs a plan (mda or mda_file)")
        self.sequence: useq.MDASequence = seq
        self.events: list[useq.MDAEvent] = []  # list(sequence), set once the core is known
        self._events_fov: tuple[float, float] | None = None
        self._preset_lasers: dict[tuple[str, str], dict[str, float]] = {}
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batches: deque[_Batch] = deque()
        self._batch_lock = threading.Lock()
        self._wake = threading.Event()
        self._halt = False  # no further events: stop, cap reached, safe state
        self._safed = False
        self._ended = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._n_received = 0
        self._last_frame_wall = 0.0
        self._bursts: dict[str, int] = {}
        self._series_sizes: dict[str, dict[str, int]] = {}  # channels and planes per image series
        self._ctx: _Context | None = None
        self._xy: tuple[float, float] | None = None
        self._z: float | None = None
        self._autoshutter = True
        self.schedule: Schedule | None = None
        super().__init__(microscope, acquisition, safe, core=core, gate=gate)

    # ------------------------------------------------------------ vetting

    def _fov_um(self) -> tuple[float, float] | None:
        px = self._pixel_size()
        if px is None:
            return None
        roi = self.acq.roi
        w = roi.width if roi is not None else int(self.core.getImageWidth())
        h = roi.height if roi is not None else int(self.core.getImageHeight())
        return (w * px, h * px)

    def _write_problems(self) -> list[str]:
        """The base checks plus the plan's, against this core, before anything is set."""
        problems = super()._write_problems()
        core, seq = self.core, self.sequence
        fov = self._fov_um()
        too_big = size_problem(seq, self.gate.limits, fov)  # counted, never expanded
        if too_big:
            return [*problems, too_big]
        problems += extent_problems(seq, self.gate.limits, fov)
        self.events = plan_events(seq, fov)
        self._events_fov = fov
        problems += plan_problems(seq, self.events, self.gate.limits)
        if fov is None and _has_grid(seq):
            problems.append(
                f"{FIELD}.grid_plan: the core has no pixel-size calibration, so a grid's field "
                "of view is unknown"
            )
        groups = [str(g) for g in core.getAvailableConfigGroups()]
        for where, ch in declared_channels(seq):
            problems += self._channel_problems(where, ch.group, ch.config, groups)
            if ch.camera is not None and ch.camera != self._do_camera_label():
                problems.append(
                    f"{where}.camera: {ch.camera!r} is not the camera in use "
                    f"({self._do_camera_label()!r}); one camera per run"
                )
        for where, af in declared_autofocus(seq):
            if not core.getAutoFocusDevice():
                problems.append(f"{where}: the configuration has no autofocus device")
            name = getattr(af, "autofocus_device_name", None)
            if name and name not in [str(d) for d in core.getLoadedDevices()]:
                problems.append(f"{where}.autofocus_device_name: no device {name!r} is loaded")
        if (
            any(e.x_pos is not None or e.y_pos is not None for e in self.events)
            and not core.getXYStageDevice()
        ):
            problems.append(f"{FIELD}.stage_positions: x/y given but the configuration has no XY stage")
        if any(e.z_pos is not None for e in self.events) and not core.getFocusDevice():
            problems.append(f"{FIELD}: z positions given but the configuration has no focus (Z) stage")
        if isinstance(seq.stage_positions, tuple):
            for j, pos in enumerate(seq.stage_positions):
                for dev, prop, value in pos.properties or ():
                    problems += self._property_problems(
                        f"{FIELD}.stage_positions[{j}].properties", dev, prop, value
                    )
        if seq.setup is not None:
            for dev, prop, value in seq.setup.properties or ():
                problems += self._property_problems(f"{FIELD}.setup.properties", dev, prop, value)
            setup_ch = seq.setup.channel
            if setup_ch is not None:
                where = f"{FIELD}.setup.channel"
                problems += self._channel_problems(where, setup_ch.group, setup_ch.config, groups)
        if not image_events(self.events):
            problems.append(f"{FIELD}: the plan takes no image")
        return problems

    def _configure(self) -> None:
        """The base configuration; then the grids' field of view as the camera now is (the
        start-up properties and the ROI may have changed it) and their positions' limits."""
        super()._configure()
        fov = self._fov_um()
        if fov != self._events_fov:
            too_big = size_problem(self.sequence, self.gate.limits, fov)
            if too_big:
                raise DriverError(f"refused before any stage moved: {too_big}")
            self.events = plan_events(self.sequence, fov)
            self._events_fov = fov
        problems = [p for p in plan_problems(self.sequence, self.events, self.gate.limits) if "xy_um" in p]
        if problems:
            raise DriverError("refused before any stage moved: " + "; ".join(problems))

    def _channel_problems(self, where: str, group: str, preset: str, groups: list[str]) -> list[str]:
        """An unknown group or preset, or a preset that sets something beyond the limits."""
        if group not in groups:
            return [f"{where}.group: no config group {group!r} in the configuration (have {groups})"]
        presets = [str(p) for p in self.core.getAvailableConfigs(group)]
        if preset not in presets:
            return [f"{where}.config: no preset {preset!r} in group {group!r} (have {presets})"]
        problems = []
        lasers: dict[str, float] = {}
        for device, prop, value in self._do_preset_settings(group, preset):
            if device in self.devices.lights:
                continue  # refused once, by name, with every undeclared light source
            reason = self.gate.check_setting(device, prop, value)
            if reason:
                problems.append(f"{where} ({group}/{preset}) sets {reason}")
            for name, laser in self.mcfg.lasers.items():
                if (laser.device, laser.power_property) == (device, prop):
                    with contextlib.suppress(ValueError):
                        lasers[name] = float(value)
        self._preset_lasers[(group, preset)] = lasers
        return problems

    def _property_problems(self, where: str, device: str, prop: str, value: Any) -> list[str]:
        if not self.core.hasProperty(device, prop):
            return [f"{where}: no property {device}.{prop}"]
        reason = self.gate.check_setting(device, prop, value)
        return [f"{where}: {reason}"] if reason else []

    # ------------------------------------------------------------ lifecycle

    def start(self, n_frames: int | None) -> None:
        if self._running:
            raise DriverError("driver already started")
        core = self.core
        self._target = n_frames
        self._running = True
        self._stopping = False
        self.schedule = Schedule(self.events)
        self._series_sizes = series_sizes(self.events, self.sequence.axis_order)
        with contextlib.suppress(Exception):
            x, y = core.getXYPosition()
            self._xy = (float(x), float(y))
        with contextlib.suppress(Exception):
            self._z = float(core.getZPosition())
        self._autoshutter = bool(core.getAutoShutter())
        self._state = self._base = self._state.replace(xy_um=self._xy, z_um=self._z)
        connect_direct(core.mda.events.frameReady, self._on_frame)  # on the runner thread, Qt or not
        self._thread = threading.Thread(target=self._run_mda, name="smartscope-mda-runner", daemon=True)
        self._thread.start()

    def _run_mda(self) -> None:
        """The runner thread: pymmcore-plus's MDA runner over this driver's event iterator."""
        unguard = self._guard_core()
        try:
            self.core.mda.run(self._iter_events())
        except BaseException as exc:  # reported by next_frame after the frames before it
            self._error = exc
        finally:
            unguard()
            disconnect_quietly(self.core.mda.events.frameReady, self._on_frame)
            if self._safed:  # an event that was in flight may have switched light back on
                self._safe_hardware()
            elif self._autoshutter:  # an event that kept the shutter open hands it back
                with contextlib.suppress(Exception):
                    self.core.setAutoShutter(True)
            self._q.put(_END)

    def _guard_core(self) -> Any:
        """Latch the core's write methods (:data:`CORE_WRITES`) for the run; returns what
        puts them back."""
        core = self.core
        before: dict[str, Any] = {}  # what the instance had (a test's own wrapper), else the class's
        for name in CORE_WRITES:
            method = getattr(core, name, None)
            if method is not None:
                before[name] = core.__dict__.get(name)
                setattr(core, name, self._latched_hook(name, method, name in CORE_LIGHT_WRITES))

        def unguard() -> None:
            for name, own in before.items():
                if own is None:
                    core.__dict__.pop(name, None)
                else:
                    setattr(core, name, own)

        return unguard

    def _on_frame(self, img: np.ndarray, event: useq.MDAEvent, meta: Any) -> None:
        """frameReady, on the runner thread: queue the frame, nothing else."""
        self._last_frame_wall = t = now_s()
        self._n_received += 1
        self._q.put((img, event, meta, self._ctx, t))

    def stop(self) -> None:
        self._stopping = True
        self._halt_runner()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(self.stop_timeout_s)
            if thread.is_alive():
                log.error("the MDA runner did not stop within %g s (a device hangs?)", self.stop_timeout_s)
        self._running = False

    def _halted(self) -> bool:
        """No further events (read across threads: a call, so no stale narrowing)."""
        return self._halt

    def _is_safed(self) -> bool:
        return self._safed

    def _halt_runner(self) -> None:
        """No further events; the one in flight finishes and its frames are delivered."""
        self._halt = True
        self._wake.set()
        with contextlib.suppress(Exception):
            self.core.mda.cancel()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._do_release()

    def safe_state(self) -> None:
        self._latched = True  # first: nothing the runner is doing from now on reaches hardware
        self._safed = True
        self._halt_runner()
        self._safe_hardware()

    def _safe_hardware(self) -> None:
        """Lasers off, shutter closed, safe-state extras (the base driver's safe state)."""
        super().safe_state()

    # ------------------------------------------------------------ events

    def _iter_events(self) -> Any:
        """The runner's event iterator (a generator on the runner thread)."""
        sched = self.schedule
        assert sched is not None
        engine = self.core.mda.engine
        if self.sequence.setup is not None and engine is not None:
            engine.setup_single_event(self.sequence.setup)
        n_cams = max(1, int(self.core.getNumberOfCameraChannels()))
        while True:
            self._boundary()
            if self._halted():
                return
            now = time.perf_counter()
            pick = sched.next(now)
            if pick is None:
                return
            job, due = pick
            if due > now:
                self._allow_gap(due - now)
                self._wait(due - now)
                continue  # a batch may have changed the plan meanwhile
            for ev in self._hardware_events(sched.take(job, now)):
                if self._halted():
                    return
                self._ctx = ctx = self._context(job)
                # the watchdog's allowance while this event runs: its frames' exposures
                block_ms = _frames_of(ev) * max(ctx.state.exposure_ms, 0.0)
                self._state = self._state.replace(interval_ms=block_ms)
                before = self._n_received
                yield ev
                if self._halted():
                    return
                expected = _frames_of(ev) * n_cams
                got = self._n_received - before
                if got < expected and n_cams == 1 and getattr(ev, "events", None):
                    got += self._recover(ev, got)
                if got < expected:
                    raise DriverError(
                        f"MDA event {event_index(ev)}: {expected} frame(s) expected, {got} delivered "
                        "(the engine logged why: camera or device error)"
                    )
                self._boundary()

    def _recover(self, event: useq.MDAEvent, got: int) -> int:
        """Frames of a hardware sequence the engine left in the circular buffer.

        pymmcore-plus 0.18's engine stops reading when the buffer is empty and the camera
        no longer runs; a frame inserted between those two checks stays in the buffer
        (seen on DemoCamera z-stacks with other threads busy). They are delivered here, in
        order, as the sub-events they belong to."""
        core, subs = self.core, list(getattr(event, "events", ()))
        deadline = time.perf_counter() + 1.0
        k = got
        while k < len(subs) and time.perf_counter() < deadline:
            if core.getRemainingImageCount() > 0:
                img, md = core.popNextImageAndMD()
                meta = {
                    "camera_metadata": dict(md),
                    "hardware_triggered": True,
                    "exposure_ms": core.getExposure(),
                    "pixel_size_um": core.getPixelSizeUm(True),
                }
                self._on_frame(img, subs[k], meta)
                k += 1
            else:
                time.sleep(0.001)
        if k > got:
            log.warning("recovered %d frame(s) pymmcore-plus left in the circular buffer", k - got)
        return k - got

    def _hardware_events(self, events: list[useq.MDAEvent]) -> list[useq.MDAEvent]:
        """A job's events, hardware-sequenced where the devices allow (pymmcore-plus's own
        ``iter_sequenced_events``); timing is this driver's, so ``min_start_time`` goes."""
        from pymmcore_plus.core._sequencing import iter_sequenced_events

        untimed = {"min_start_time": None, "reset_event_timer": False}
        events = [e.model_copy(update=untimed) for e in events]
        engine = self.core.mda.engine
        if len(events) > 1 and getattr(engine, "use_hardware_sequencing", True):
            return list(iter_sequenced_events(self.core, events))
        return events

    def _context(self, job: Job) -> _Context:
        sched = self.schedule
        assert sched is not None
        interval_s = job.interval_s
        if not job.extra:
            override = sched.interval_s(job.position)
            interval_s = override if override is not None else interval_s
        return _Context(self._state, interval_s * 1e3, job.extra)

    def _allow_gap(self, wait_s: float) -> None:
        """The live state's interval covers the wait for the next timepoint (the watchdog)."""
        since_last = max(0.0, now_s() - self._last_frame_wall) if self._last_frame_wall else 0.0
        self._state = self._state.replace(interval_ms=(wait_s + since_last) * 1e3)

    def _wait(self, seconds: float) -> None:
        """Sleep until due, waking early for a batch of actions or a stop."""
        deadline = time.perf_counter() + seconds
        while not self._halted():
            left = deadline - time.perf_counter()
            if left <= 0 or self._batches:
                return
            self._wake.wait(min(left, _WAIT_SLICE_S))
            self._wake.clear()

    # ------------------------------------------------------------ frames

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._ended:
            return self._end()
        if self._target is not None and self._delivered >= self._target and not self._halted():
            self._halt_runner()  # the cap: frames already taken are still delivered
        try:
            item = self._q.get(timeout=timeout_s) if timeout_s > 0 else self._q.get_nowait()
        except queue.Empty:
            return None
        if item is _END:
            self._ended = True
            return self._end()
        return self._frame(*item)

    def _end(self) -> Frame | None:
        err = self._error
        if err is not None:
            if not self._stopping:
                raise DriverError(f"MDA runner: {type(err).__name__}: {err}") from err
            log.warning("MDA runner, while stopping: %s: %s", type(err).__name__, err)
        raise StopIteration

    def _frame(
        self, img: np.ndarray, event: useq.MDAEvent, meta: Any, ctx: _Context | None, t_recv: float
    ) -> Frame:
        meta = meta if isinstance(meta, dict) else {}
        if ctx is None:  # a frame outside every event (cannot happen with pymmcore-plus 0.18)
            ctx = _Context(self._state, 0.0, False)
        axes = event_index(event)
        series = series_of(event)
        pos = meta.get("position") or {}
        x = pos.get("x", event.x_pos)
        y = pos.get("y", event.y_pos)
        if x is not None and y is not None:
            self._xy = (float(x), float(y))
        z = pos.get("z", event.z_pos)
        if z is not None:
            self._z = float(z)
        exposure = event.exposure if event.exposure is not None else meta.get("exposure_ms")
        lasers = dict(ctx.state.lasers)
        channel = ""
        if event.channel is not None:
            channel = event.channel.config
            lasers.update(self._preset_lasers.get((event.channel.group, event.channel.config), {}))
        px = meta.get("pixel_size_um")
        state = ctx.state.replace(
            xy_um=self._xy,
            z_um=self._z,
            exposure_ms=float(exposure) if exposure is not None else ctx.state.exposure_ms,
            pixel_size_um=float(px) if px else ctx.state.pixel_size_um,
            lasers=lasers,
            interval_ms=ctx.interval_ms,
            burst=ctx.burst,
        )
        cam_md = dict(meta.get("camera_metadata") or {})
        frame = Frame(
            index=self._delivered,
            image=img,
            camera_time_s=_camera_time(cam_md) if cam_md else t_recv,
            channel=channel,
            state=state,
            axes=axes,
            series=series,
            series_sizes=self._series_sizes.get(series, {}),
            metadata={
                "mm": cam_md,
                "mda": {
                    "runner_time_ms": meta.get("runner_time_ms"),
                    "hardware_triggered": bool(meta.get("hardware_triggered", False)),
                    "pos_name": event.pos_name,
                },
            },
        )
        frame.times["camera"] = frame.camera_time_s
        self._delivered += 1
        return frame

    # ------------------------------------------------------------ actions

    def apply(self, actions: Sequence[Action]) -> ApplyResult:
        """Hand the batch to the runner thread and wait until it is applied between events."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            # no run in progress: nothing to attribute, apply here (hardware actions only)
            state, errors = self._apply_all(actions, self._state)
            self._state = self._base = state
            return ApplyResult(None, errors, state.revision, False)
        batch = _Batch(list(actions))
        with self._batch_lock:
            self._batches.append(batch)
        self._wake.set()
        while not batch.done.wait(_WAIT_SLICE_S):
            if self._safed or not thread.is_alive():
                with self._batch_lock:
                    if batch in self._batches:  # never taken: it will not be
                        self._batches.remove(batch)
                        why = (
                            "not applied: the microscope is in its safe state"
                            if self._safed
                            else ("not applied: the MDA run ended")
                        )
                        batch.errors = [why] * len(batch.actions)
                        batch.revision = self._state.revision
                        break
        return ApplyResult(None, batch.errors, batch.revision, False)

    def _boundary(self) -> None:
        """On the runner thread, between events: apply every batch handed over."""
        while True:
            with self._batch_lock:
                batch = self._batches.popleft() if self._batches else None
            if batch is None:
                return
            if self._safed:
                batch.errors = ["not applied: the microscope is in its safe state"] * len(batch.actions)
                batch.revision = self._state.revision
            else:
                state, errors = self._apply_all(batch.actions, self._state)
                self._state = self._base = state
                batch.errors, batch.revision = errors, state.revision
                if self._is_safed():  # the safe state came while this batch was applied
                    self._safe_hardware()
            batch.done.set()

    def _apply_one(self, action: Action, state: DriverState) -> DriverState:
        sched = self.schedule
        if isinstance(action, StartBurst | StopBurst):
            raise ActionNotSupported(f"{type(action).__name__} in an MDA run: use AcquireAt")
        if sched is None:
            return super()._apply_one(action, state)
        now = time.perf_counter()
        if isinstance(action, AcquireAt):
            self._acquire_at(action, now)
            return state
        if isinstance(action, SkipPosition):
            sched.skip(self._position(action.position), action.skip, now)
            return state
        if isinstance(action, SetPositionInterval):
            s = None if action.interval_ms is None else action.interval_ms / 1e3
            sched.set_interval(self._position(action.position), s, now)
            return state
        if isinstance(action, SetInterval):  # every position of the plan
            for p in sched.positions:
                sched.set_interval(p, action.interval_ms / 1e3, now)
            return state
        return super()._apply_one(action, state)

    def _position(self, p: int) -> int:
        sched = self.schedule
        assert sched is not None
        if p not in sched.positions:
            raise DriverError(f"no stage position {p} in the plan (have {sched.positions})")
        return p

    def _acquire_at(self, action: AcquireAt, now: float) -> None:
        """Schedule an ``AcquireAt`` (see :class:`smartscope.actions.AcquireAt`)."""
        sched = self.schedule
        assert sched is not None
        x: float | None = None
        y: float | None = None
        z0: float | None = None
        if action.position is not None:
            x, y, z0 = self._place(self._position(action.position))
        if action.xy_um is not None:
            x, y = action.xy_um
        if action.z_um is not None:
            z0 = action.z_um
        if z0 is None and action.z_offsets_um != (0.0,):
            z0 = float(self.core.getZPosition())  # a stack around the focus in place
        planes = [z0 + dz for dz in action.z_offsets_um] if z0 is not None else []
        targets: list[float | None] = [*planes] if planes else [None]
        for z in targets:
            why = self.gate.check_stage_target((x, y), z)
            if why:
                raise DriverError(f"refused: {why}")
        channels = self._burst_channels(action)
        too_big = self.gate.burst_problem(action.n_frames, len(action.z_offsets_um), len(channels))
        if too_big:
            raise DriverError(f"refused: {too_big}")
        mini = useq.MDASequence(
            stage_positions=(useq.Position(x=x, y=y),) if x is not None or y is not None else (),
            z_plan=useq.ZAbsolutePositions(absolute=planes) if len(planes) > 1 else None,
            channels=tuple(channels),
            time_plan=(
                useq.TIntervalLoops(
                    interval=timedelta(milliseconds=action.interval_ms), loops=action.n_frames
                )
                if action.n_frames > 1
                else None
            ),
            axis_order=tuple("tpcz"),
        )
        if action.position is not None:
            key = f"p{action.position}"
            self._bursts[key] = n = self._bursts.get(key, 0) + 1
            series = f"{key}-burst{n}"
        else:
            self._bursts["at"] = n = self._bursts.get("at", 0) + 1
            series = f"at{n}"
        by_t: dict[int, list[useq.MDAEvent]] = {}
        events = list(mini) or [useq.MDAEvent.model_validate({"index": {"t": 0}})]  # no axis: one frame
        for e in events:
            index = {k: v for k, v in event_index(e).items() if k != "p"}
            if action.position is not None:
                index["p"] = action.position
            update: dict[str, Any] = {"index": index, "metadata": {**e.metadata, SERIES_KEY: series}}
            if len(planes) == 1:
                update["z_pos"] = planes[0]
            by_t.setdefault(index.get("t", 0), []).append(e.model_copy(update=update))
        timepoints = [by_t[t] for t in sorted(by_t)]
        self._series_sizes.update(series_sizes([e for tp in timepoints for e in tp], mini.axis_order))
        exposure_ms = max(
            (c.exposure or self._state.exposure_ms for c in channels), default=self._state.exposure_ms
        )
        sched.add(
            timepoints,
            now,
            action.position,
            series,
            action.interval_ms / 1e3,
            timepoint_s=len(timepoints[0]) * (exposure_ms + 1.0) / 1e3,
            start_cost_s=SEQUENCE_START_S,
        )
        self._wake.set()

    def _place(self, p: int) -> tuple[float | None, float | None, float | None]:
        """Where the plan images position ``p``: its x, y (a grid's first tile, a well's
        centre) and z (the position's, else the middle of its z planes)."""
        seq = self.sequence
        if isinstance(seq.stage_positions, tuple) and p < len(seq.stage_positions):
            pos = seq.stage_positions[p]
            has_z = pos.z is not None or not any(e.z_pos is not None for e in self.events)
            if (pos.x is not None or pos.y is not None) and has_z:
                return pos.x, pos.y, pos.z
        mine = [e for e in self.events if int(e.index.get("p", 0)) == p]
        zs = sorted(e.z_pos for e in mine if e.z_pos is not None)
        z = (zs[0] + zs[-1]) / 2 if zs else None
        first = mine[0] if mine else None
        return (first.x_pos, first.y_pos, z) if first is not None else (None, None, z)

    def _burst_channels(self, action: AcquireAt) -> list[useq.Channel]:
        """The channels of an ``AcquireAt``: named presets, or the plan's."""
        declared = [ch for _, ch in declared_channels(self.sequence)]
        if not action.channels:
            seen: dict[tuple[str, str], useq.Channel] = {}
            for ch in declared:
                seen.setdefault((ch.group, ch.config), ch)
            return [useq.Channel(config=c.config, group=c.group, exposure=c.exposure) for c in seen.values()]
        group = action.channel_group or (declared[0].group if declared else str(self.core.getChannelGroup()))
        groups = [str(g) for g in self.core.getAvailableConfigGroups()]
        out = []
        for i, name in enumerate(action.channels):
            problems = self._channel_problems(f"AcquireAt.channels[{i}]", group, name, groups)
            if problems:
                raise DriverError("refused: " + "; ".join(problems))
            exposure = next((c.exposure for c in declared if (c.group, c.config) == (group, name)), None)
            out.append(useq.Channel(config=name, group=group, exposure=exposure))
        return out


def _frames_of(event: useq.MDAEvent) -> int:
    """Frames an event delivers per camera: a sequenced event one per sub-event; an
    autofocus or custom action none."""
    inner = getattr(event, "events", None)
    if inner is not None:
        return len(inner)
    return 1 if isinstance(event.action, useq.AcquireImage | type(None)) else 0


def _has_grid(seq: useq.MDASequence) -> bool:
    if seq.grid_plan is not None:
        return True
    positions = seq.stage_positions if isinstance(seq.stage_positions, tuple) else ()
    return any(p.sequence is not None and p.sequence.grid_plan is not None for p in positions)
