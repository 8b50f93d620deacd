"""Commissioning a rig: what a run configuration names, checked against the hardware, and
what the camera, its buffer and the disk really do. No run is started.

:func:`check_rig` opens the microscope the way a run does (the same driver: adapter search,
``.cfg``, camera, buffer, start-up properties, exposure, ROI, and the driver's own refusal of
writes beyond the limits), except that no light is switched on: ``acquisition.lasers_mw``
and start-up writes of a laser's power are left out, the safe state is applied first and
last, and no channel preset is applied. It then

* lists the devices and the groups and presets the run uses;
* checks that every device and property named in ``microscope``, ``limits``, ``startup``,
  ``safe_state`` and the plan exists and takes the value given, and that every limit lies
  within the device's own limits;
* measures the camera: snap time, the first-frame delay of a sequence start (three starts),
  frames received per second at the configured ROI and exposure, the stop time, and the
  circular buffer in frames;
* measures the write rate into ``storage.root`` through the run writer (:mod:`.disk`);
* judges what will fail or fall behind.

Every finding is a :class:`Finding` (``ok`` / ``warn`` / ``fail``); a ``fail`` is something
the run would fail on (the driver refuses, the safe state cannot be applied, the watchdog
would fault at the first start, the writer queue runs out before the run ends).
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from smartscope.config import SmartscopeConfig
from smartscope.config.mda import declared_autofocus, declared_channels
from smartscope.drivers import Driver, DriverError, open_driver
from smartscope.drivers.installation import AdapterSearch, adapter_search, open_pymmcore_plus
from smartscope.safety import Devices, SafetyGate

from .disk import WriteRate, measure_write_rate

__all__ = ["CameraFigures", "CheckReport", "Finding", "Status", "check_rig"]

_WAIT_S = 10.0  # longest wait for a camera's first frame / for a sequence to end


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """One checked thing: ``subject`` names the config field or the measurement."""

    subject: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class DeviceRow:
    label: str
    type: str
    adapter: str
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class CameraFigures:
    """What the camera did at the configured ROI and exposure."""

    camera: str
    width: int
    height: int
    bytes_per_pixel: int
    exposure_ms: float
    snap_ms: float
    first_frame_ms: tuple[float, ...]  # per sequence start: call to the first frame in the buffer
    fps: float  # frames received per second in a continuous sequence
    frames_counted: int
    stop_ms: float
    buffer_frames: int
    all_zero: bool  # every measured frame was 0: a camera that does not deliver pixels

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * self.bytes_per_pixel

    @property
    def start_cost_ms(self) -> float:
        """Median first-frame delay beyond one exposure (what arming the camera costs)."""
        return max(0.0, statistics.median(self.first_frame_ms) - self.exposure_ms)


@dataclass
class CheckReport:
    config: str
    search: AdapterSearch | None = None
    devices: list[DeviceRow] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> presets the run uses
    findings: list[Finding] = field(default_factory=list)
    camera: CameraFigures | None = None
    disk: WriteRate | None = None
    stream_mb_per_s: float | None = None

    @property
    def ok(self) -> bool:
        return not any(f.status is Status.FAIL for f in self.findings)

    def add(self, subject: str, status: Status, detail: str) -> None:
        self.findings.append(Finding(subject, status, detail))

    def as_json(self) -> dict[str, Any]:
        cam = self.camera
        return {
            "config": self.config,
            "ok": self.ok,
            "adapter_paths": [] if self.search is None else [str(p) for p in self.search.paths],
            "adapter_sources": [] if self.search is None else list(self.search.sources),
            "devices": [asdict(d) for d in self.devices],
            "groups": self.groups,
            "findings": [
                {"subject": f.subject, "status": f.status.value, "detail": f.detail} for f in self.findings
            ],
            "camera": None
            if cam is None
            else {**asdict(cam), "frame_bytes": cam.frame_bytes, "start_cost_ms": cam.start_cost_ms},
            "disk": None if self.disk is None else asdict(self.disk),
            "stream_mb_per_s": self.stream_mb_per_s,
        }


# ------------------------------------------------------------------ the core, either flavour


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _strs(value: Any) -> list[str]:
    """A list of strings from a tuple or a Java StrVector (pycromanager's bridge)."""
    if hasattr(value, "size") and hasattr(value, "get") and not isinstance(value, str | bytes):
        return [str(value.get(i)) for i in range(int(value.size()))]
    return [str(v) for v in value]


class CoreView:
    """Micro-Manager core calls by their camelCase names, on a pymmcore-plus core or on
    pycromanager's (snake_case) one."""

    def __init__(self, core: Any, snake: bool = False) -> None:
        self.core = core
        self.snake = snake

    def __call__(self, name: str, *args: Any) -> Any:
        return getattr(self.core, _snake(name) if self.snake else name)(*args)

    def strs(self, name: str, *args: Any) -> list[str]:
        return _strs(self(name, *args))

    def devices(self) -> list[str]:
        return [d for d in self.strs("getLoadedDevices") if d != "Core"]

    def device_type(self, label: str) -> str:
        t = self("getDeviceType", label)
        name = getattr(t, "name", None)
        if name is None:
            from pymmcore_plus import DeviceType

            with contextlib.suppress(ValueError, TypeError):
                name = DeviceType(int(t)).name
        return str(name or t).removesuffix("Device") or "Unknown"

    def property_problem(self, device: str, prop: str, value: Any = None, write: bool = True) -> str | None:
        """Why ``device.prop`` (set to ``value``) cannot be used, or None."""
        devices = self.devices()
        if device not in devices:
            return f"no device {device!r} is loaded (have {_some(devices)})"
        props = self.strs("getDevicePropertyNames", device)
        if prop not in props:
            return f"{device} has no property {prop!r} (has {_some(props)})"
        if write and self("isPropertyReadOnly", device, prop):
            return f"{device}.{prop} is read-only"
        if value is None:
            return None
        allowed = self.strs("getAllowedPropertyValues", device, prop)
        if allowed and str(value) not in allowed and _num(value) not in {_num(a) for a in allowed} - {None}:
            return f"{device}.{prop}={value!r} is not one of its values ({', '.join(allowed)})"
        limits = self.limits(device, prop)
        v = _num(value)
        if limits is not None and v is not None and not limits[0] <= v <= limits[1]:
            return f"{device}.{prop}={value!r} is outside its limits {limits[0]:g}..{limits[1]:g}"
        return None

    def limits(self, device: str, prop: str) -> tuple[float, float] | None:
        if not self("hasPropertyLimits", device, prop):
            return None
        return float(self("getPropertyLowerLimit", device, prop)), float(
            self("getPropertyUpperLimit", device, prop)
        )


def _some(names: Sequence[str], n: int = 12) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        return None


# ------------------------------------------------------------------ opening the rig


def _dark(cfg: SmartscopeConfig) -> SmartscopeConfig:
    """The configuration as the check opens it: no light switched on (no starting laser
    powers, no start-up write of a laser's power)."""
    powers = {(lz.device, lz.power_property) for lz in cfg.microscope.lasers.values()}
    startup = [p for p in cfg.microscope.startup if (p.device, p.property) not in powers]
    return cfg.model_copy(
        update={
            "microscope": cfg.microscope.model_copy(update={"startup": startup}),
            "acquisition": cfg.acquisition.model_copy(update={"lasers_mw": {}}),
        }
    )


def _split_refusal(msg: str) -> list[str]:
    head = "refused before the run, nothing was set: "
    return msg[len(head) :].split("; ") if msg.startswith(head) else [msg]


@contextlib.contextmanager
def _opened(cfg: SmartscopeConfig, report: CheckReport) -> Iterator[tuple[CoreView | None, Driver | None]]:
    """The rig through the run's driver if it accepts the configuration, else the bare core
    (inspection only), else nothing (the ``.cfg`` does not load); safe state in and out."""
    m = cfg.microscope
    gate = SafetyGate(cfg.limits, m.lasers, Devices.from_config(m))
    driver: Driver | None = None
    bare: Any = None
    try:
        driver = open_driver(_dark(cfg), gate)
    except DriverError as exc:
        for problem in _split_refusal(str(exc)):
            report.add("driver", Status.FAIL, problem)
        if m.driver == "pymmcore-plus":
            with contextlib.suppress(DriverError):  # already reported
                bare = open_pymmcore_plus(m)
    try:
        if driver is not None:
            driver.safe_state()
            yield CoreView(driver.core, snake=m.driver == "pycromanager"), driver  # type: ignore[attr-defined]
        else:
            yield (None if bare is None else CoreView(bare)), None
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.safe_state()
            driver.close()
        elif bare is not None:
            with contextlib.suppress(Exception):
                bare.unloadAllDevices()


# ------------------------------------------------------------------ what the config names


def _check_names(cfg: SmartscopeConfig, core: CoreView, report: CheckReport) -> None:
    m, lim = cfg.microscope, cfg.limits
    devices = core.devices()
    for role in ("camera", "shutter", "focus", "mirror"):
        label = getattr(m, role)
        if label is not None:
            ok = label in devices
            report.add(
                f"microscope.{role}",
                Status.OK if ok else Status.FAIL,
                f"{label} loaded" if ok else f"no device {label!r} is loaded",
            )
    for name, laser in m.lasers.items():
        where = f"microscope.lasers.{name}"
        problem = core.property_problem(laser.device, laser.power_property)
        if problem:
            report.add(where, Status.FAIL, problem)
            continue
        limits = core.limits(laser.device, laser.power_property)
        prop = f"{laser.device}.{laser.power_property}"
        ceiling = min(laser.max_power_mw, lim.laser_max_mw.get(name, laser.max_power_mw))
        if limits is None:
            report.add(
                where, Status.WARN, f"{prop} reports no limits: the ceiling {ceiling:g} cannot be checked"
            )
        elif not limits[0] <= 0 <= limits[1]:
            report.add(where, Status.FAIL, f"{prop} cannot be set to 0 (limits {limits[0]:g}..{limits[1]:g})")
        elif laser.max_power_mw > limits[1]:
            report.add(
                where,
                Status.FAIL,
                f"max_power_mw {laser.max_power_mw:g} is above {prop}'s own upper limit {limits[1]:g}",
            )
        else:
            report.add(where, Status.OK, f"{prop}: ceiling {ceiling:g} within {limits[0]:g}..{limits[1]:g}")
    camera = str(core("getCameraDevice"))
    if camera:
        exp = (
            core.limits(camera, "Exposure")
            if "Exposure" in core.strs("getDevicePropertyNames", camera)
            else None
        )
        lo, hi = lim.exposure_ms
        if exp is not None and not exp[0] <= lo < hi <= exp[1]:
            report.add(
                "limits.exposure_ms",
                Status.WARN,
                f"{lo:g}..{hi:g} ms reaches beyond {camera}'s own {exp[0]:g}..{exp[1]:g} ms: an action "
                "the gate passes there is refused by the camera (a driver fault)",
            )
        exposures = [("acquisition.exposure_ms", cfg.acquisition.exposure_ms)]
        exposures += [
            (f"acquisition.channels[{i}].exposure_ms", ch.exposure_ms)
            for i, ch in enumerate(cfg.acquisition.channels)
            if ch.exposure_ms is not None
        ]
        for where, ms in exposures:
            if exp is not None and not exp[0] <= ms <= exp[1]:
                report.add(where, Status.FAIL, f"{ms:g} ms is outside {camera}'s {exp[0]:g}..{exp[1]:g} ms")
    focus = m.focus or str(core("getFocusDevice"))
    if lim.z_um is not None and focus and focus in devices:
        pos = (
            core.limits(focus, "Position")
            if "Position" in core.strs("getDevicePropertyNames", focus)
            else None
        )
        if pos is not None and not pos[0] <= lim.z_um[0] < lim.z_um[1] <= pos[1]:
            report.add("limits.z_um", Status.WARN, f"{lim.z_um} reaches beyond {focus}'s travel {pos}")
    if m.mirror is not None and m.mirror in devices:
        prop = m.mirror_property.format(j=4)
        problem = core.property_problem(m.mirror, prop)
        if problem:
            report.add(
                "microscope.mirror_property", Status.FAIL, f"{m.mirror_property!r} (Noll j = 4): {problem}"
            )
        rng = None if problem else core.limits(m.mirror, prop)
        if rng is not None and lim.mirror_max_rad > min(-rng[0], rng[1]):
            report.add(
                "limits.mirror_max_rad",
                Status.WARN,
                f"{lim.mirror_max_rad:g} rad is beyond {m.mirror}.{prop}'s own {rng[0]:g}..{rng[1]:g}",
            )
    for key, values in lim.allowed_values.items():
        where = f"limits.allowed_values[{key!r}]"
        device = next((d for d in sorted(devices, key=len, reverse=True) if key.startswith(d + ".")), None)
        if device is None:
            report.add(where, Status.FAIL, f"no loaded device matches {key!r} ('Device.Property')")
            continue
        prop = key[len(device) + 1 :]
        problems = [why for v in values if (why := core.property_problem(device, prop, v))]
        report.add(
            where, Status.FAIL if problems else Status.OK, "; ".join(problems) or f"{key} takes {values}"
        )
    for where, writes in (
        ("microscope.startup", m.startup),
        ("safe_state.properties", cfg.safe_state.properties),
    ):
        for i, p in enumerate(writes):
            problem = core.property_problem(p.device, p.property, p.value)
            report.add(
                f"{where}[{i}]",
                Status.FAIL if problem else Status.OK,
                problem or f"{p.device}.{p.property}={p.value!r}",
            )
    if cfg.safe_state.close_shutter:
        shutter = m.shutter or str(core("getShutterDevice"))
        if not shutter:
            report.add("safe_state.close_shutter", Status.WARN, "the configuration has no shutter to close")
    _check_plan(cfg, core, report)


def _check_plan(cfg: SmartscopeConfig, core: CoreView, report: CheckReport) -> None:
    """Channel groups and presets, the autofocus device and the properties the plan names."""
    groups = core.strs("getAvailableConfigGroups")
    used: list[tuple[str, str, str]] = [
        (f"acquisition.channels[{i}]", ch.group, ch.preset) for i, ch in enumerate(cfg.acquisition.channels)
    ]
    seq = cfg.acquisition.sequence
    if seq is not None:
        used += [(where, ch.group, ch.config) for where, ch in declared_channels(seq)]
        if seq.setup is not None and seq.setup.channel is not None:
            used.append(("acquisition.mda.setup.channel", seq.setup.channel.group, seq.setup.channel.config))
    for where, group, preset in used:
        if group not in groups:
            report.add(where, Status.FAIL, f"no config group {group!r} (have {', '.join(groups)})")
            continue
        presets = core.strs("getAvailableConfigs", group)
        report.groups.setdefault(group, [])
        if preset not in presets:
            report.add(
                where, Status.FAIL, f"no preset {preset!r} in group {group!r} (have {', '.join(presets)})"
            )
        elif preset not in report.groups[group]:
            report.groups[group].append(preset)
    if seq is None:
        return
    for where, af in declared_autofocus(seq):
        device = str(core("getAutoFocusDevice"))
        problem = None if device else "the configuration has no autofocus device"
        name = getattr(af, "autofocus_device_name", None)
        if problem is None and name and name not in core.devices():
            problem = f"autofocus_device_name: no device {name!r} is loaded"
        report.add(where, Status.FAIL if problem else Status.OK, problem or f"autofocus device {device}")
    props: list[tuple[str, str, str, Any]] = []
    if isinstance(seq.stage_positions, tuple):
        for j, pos in enumerate(seq.stage_positions):
            props += [
                (f"acquisition.mda.stage_positions[{j}].properties", d, p, v)
                for d, p, v in pos.properties or ()
            ]
    if seq.setup is not None:
        props += [("acquisition.mda.setup.properties", d, p, v) for d, p, v in seq.setup.properties or ()]
    for where, d, p, v in props:
        problem = core.property_problem(d, p, v)
        report.add(where, Status.FAIL if problem else Status.OK, problem or f"{d}.{p}={v!r}")


def _list_devices(core: CoreView, report: CheckReport) -> None:
    for label in core.devices():
        try:
            adapter, name = str(core("getDeviceLibrary", label)), str(core("getDeviceName", label))
            desc = str(core("getDeviceDescription", label))
        except Exception:  # a bridge that lacks one of them: the label and type still help
            adapter = name = desc = ""
        report.devices.append(DeviceRow(label, core.device_type(label), adapter, name, desc))


# ------------------------------------------------------------------ measuring the camera


def _wait(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.perf_counter() + timeout_s
    while not cond():
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.0005)
    return True


def _drain(core: CoreView) -> int:
    n = 0
    while int(core("getRemainingImageCount")) > 0:
        core("popNextImage")
        n += 1
    return n


def measure_camera(core: CoreView, seconds: float = 1.0, starts: int = 3) -> CameraFigures:
    """Snap time, first-frame delays, frames per second, stop time and buffer capacity of the
    current camera as it is configured now (light stays as it is: off, for the check)."""
    import numpy as np

    camera = str(core("getCameraDevice"))
    exposure_ms = float(core("getExposure"))
    t = time.perf_counter()
    core("snapImage")
    img = np.asarray(core("getImage"))
    snap_ms = (time.perf_counter() - t) * 1e3
    nonzero = bool(img.any())
    first: list[float] = []
    for _ in range(starts):
        t0 = time.perf_counter()
        core("startSequenceAcquisition", 1, 0.0, True)
        got = _wait(lambda: int(core("getRemainingImageCount")) > 0, _WAIT_S)
        first.append((time.perf_counter() - t0) * 1e3 if got else float("inf"))
        _wait(lambda: not core("isSequenceRunning"), _WAIT_S)
        if core("isSequenceRunning"):
            core("stopSequenceAcquisition")
        _drain(core)
        if not got:
            break
    arrivals: list[float] = []
    core("startContinuousSequenceAcquisition", 0.0)
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds + (first[0] if first else 0) / 1e3:
            if int(core("getRemainingImageCount")) > 0:
                last = np.asarray(core("popNextImage"))
                arrivals.append(time.perf_counter())
                nonzero = nonzero or bool(last.any())
            else:
                time.sleep(0.0002)
    finally:
        t_stop = time.perf_counter()
        core("stopSequenceAcquisition")
        stop_ms = (time.perf_counter() - t_stop) * 1e3
        _drain(core)
    fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 2 else 0.0
    return CameraFigures(
        camera=camera,
        width=int(core("getImageWidth")),
        height=int(core("getImageHeight")),
        bytes_per_pixel=int(core("getBytesPerPixel")),
        exposure_ms=exposure_ms,
        snap_ms=snap_ms,
        first_frame_ms=tuple(first),
        fps=fps,
        frames_counted=len(arrivals),
        stop_ms=stop_ms,
        buffer_frames=int(core("getBufferTotalCapacity")),
        all_zero=not nonzero,
    )


# ------------------------------------------------------------------ verdicts


def _judge_camera(cfg: SmartscopeConfig, cam: CameraFigures, report: CheckReport) -> None:
    wd, acq = cfg.watchdog, cfg.acquisition
    worst = max(cam.first_frame_ms)
    subject = "camera start"
    if worst == float("inf"):
        report.add(subject, Status.FAIL, f"no frame within {_WAIT_S:g} s of a sequence start")
    elif worst > wd.camera_start_s * 1e3:
        report.add(
            subject,
            Status.FAIL,
            f"first frame {worst:.0f} ms after a start, longer than watchdog.camera_start_s "
            f"({wd.camera_start_s:g} s): the watchdog would fault the run",
        )
    else:
        report.add(
            subject,
            Status.WARN if worst > 0.5e3 * wd.camera_start_s else Status.OK,
            f"first frame {statistics.median(cam.first_frame_ms):.0f} ms after a start (median of "
            f"{len(cam.first_frame_ms)}, worst {worst:.0f} ms; exposure {cam.exposure_ms:g} ms, so "
            f"arming ≈ {cam.start_cost_ms:.0f} ms); stop {cam.stop_ms:.0f} ms",
        )
    if cam.fps <= 0:
        report.add("camera rate", Status.FAIL, "the camera delivered no stream of frames")
        return
    period_s = 1 / cam.fps
    report.add(
        "camera rate",
        Status.FAIL if period_s > wd.camera_stall_s else Status.OK,
        f"{cam.fps:.1f} frames/s at {cam.width}×{cam.height}, {cam.exposure_ms:g} ms"
        + (
            f": slower than watchdog.camera_stall_s ({wd.camera_stall_s:g} s)"
            if period_s > wd.camera_stall_s
            else ""
        ),
    )
    report.add(
        "circular buffer",
        Status.OK if cam.buffer_frames / cam.fps >= 1.0 else Status.WARN,
        f"{cam.buffer_frames} frames = {cam.buffer_frames / cam.fps:.1f} s at {cam.fps:.0f} frames/s "
        f"(microscope.buffer_size_mb {cfg.microscope.buffer_size_mb})",
    )
    if cam.all_zero:
        report.add("camera pixels", Status.WARN, "every measured frame was all zeros")
    if acq.interval_ms > 0 or len(acq.channels) > 1:
        per_point = cam.snap_ms * max(1, len(acq.channels))
        behind = acq.interval_ms > 0 and per_point > acq.interval_ms
        report.add(
            "acquisition.interval_ms",
            Status.WARN if behind else Status.OK,
            f"a time point takes {per_point:.0f} ms "
            f"({max(1, len(acq.channels))} snap(s) of {cam.snap_ms:.0f} ms)"
            + (f": more than the interval {acq.interval_ms:g} ms, the run falls behind" if behind else ""),
        )


def _frame_rate(cfg: SmartscopeConfig, cam: CameraFigures) -> tuple[float, str]:
    """Frames per second the run will take, and how that is known."""
    acq = cfg.acquisition
    if acq.sequence is None and acq.interval_ms > 0:
        return max(1, len(acq.channels)) * 1e3 / acq.interval_ms, "the configured interval"
    if acq.sequence is None and len(acq.channels) > 1:
        return 1e3 / max(cam.snap_ms, 1e-3), "one snap after the other"
    if acq.sequence is not None:
        return cam.fps, "the camera's rate (an upper bound for a plan)"
    return cam.fps, "the camera's measured rate"


def _judge_disk(cfg: SmartscopeConfig, cam: CameraFigures, disk: WriteRate, report: CheckReport) -> None:
    st, acq = cfg.storage, cfg.acquisition
    fps, how = _frame_rate(cfg, cam)
    need = cam.frame_bytes * fps / 1e6
    report.stream_mb_per_s = need
    head = f"the disk takes {disk.mb_per_s:.0f} MB/s; this stream needs {need:.0f} MB/s ({how})"
    if need <= 0.8 * disk.mb_per_s:
        report.add("storage.root", Status.OK, head)
        return
    if need <= disk.mb_per_s:
        report.add("storage.root", Status.WARN, head + ": less than 20 % to spare")
        return
    lasts_s = st.queue_mb * 2**20 / ((need - disk.mb_per_s) * 1e6)
    run_s = None
    if acq.n_frames is not None:
        run_s = acq.n_frames / fps
    if acq.duration_s is not None:
        run_s = acq.duration_s if run_s is None else min(run_s, acq.duration_s)
    tail = f"; storage.queue_mb ({st.queue_mb}) lasts {lasts_s:.1f} s"
    if run_s is not None and run_s <= lasts_s:
        report.add("storage.root", Status.WARN, head + tail + f", the run ({run_s:.1f} s) fits in it")
        return
    then = (
        "the run then stops (storage.on_queue_full: stop)"
        if st.on_queue_full == "stop"
        else f"then the camera's buffer fills ({cam.buffer_frames / max(fps, 1e-9):.1f} s) and overflows"
    )
    length = "an open-ended run" if run_s is None else f"the run takes {run_s:.1f} s"
    report.add("storage.root", Status.FAIL, head + tail + f"; {length}: {then}")


# ------------------------------------------------------------------ the whole check


def check_rig(
    cfg: SmartscopeConfig,
    config_name: str = "",
    seconds: float = 1.0,
    write_mb: float = 256.0,
) -> CheckReport:
    """Commission the rig ``cfg`` names (see the module doc); nothing is acquired for a run."""
    m = cfg.microscope
    if m.driver == "replay":
        raise DriverError(
            "microscope.driver: smartscope check needs a microscope (pymmcore-plus or "
            "pycromanager), not replay"
        )
    report = CheckReport(config=config_name)
    if m.driver == "pymmcore-plus" or m.pycromanager_mode == "headless":
        report.search = adapter_search(m)
    shape: tuple[int, int] | None = None
    dtype: Any = None
    with _opened(cfg, report) as (core, driver):
        if core is not None:
            _list_devices(core, report)
            _check_names(cfg, core, report)
            shape = (int(core("getImageHeight")), int(core("getImageWidth")))
            dtype = _DTYPES.get(int(core("getBytesPerPixel")), "uint16")
        if driver is not None and core is not None:
            try:
                report.camera = measure_camera(core, seconds)
            except Exception as exc:
                report.add("camera", Status.FAIL, f"could not be measured: {exc}")
        else:
            report.add("camera", Status.WARN, "not measured: the microscope did not open (see above)")
    if shape is not None:
        try:
            report.disk = measure_write_rate(cfg.storage, shape, dtype, write_mb)
        except OSError as exc:
            report.add("storage.root", Status.FAIL, f"cannot write into {cfg.storage.root}: {exc}")
    if report.camera is not None:
        _judge_camera(cfg, report.camera, report)
        if report.disk is not None:
            _judge_disk(cfg, report.camera, report.disk, report)
    elif report.disk is not None:
        report.add("storage.root", Status.OK, f"the disk takes {report.disk.mb_per_s:.0f} MB/s")
    return report


_DTYPES = {1: "uint8", 2: "uint16", 4: "uint32"}


def write_json(report: CheckReport, path: Path) -> None:
    import json

    path.write_text(json.dumps(report.as_json(), indent=1, default=str) + "\n", encoding="utf-8")


def summary_lines(report: CheckReport) -> Sequence[str]:
    """The failures and warnings, one line each (for a terminal without tables)."""
    return [
        f"{f.status.value}: {f.subject}: {f.detail}" for f in report.findings if f.status is not Status.OK
    ]
