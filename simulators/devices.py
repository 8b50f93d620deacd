"""Micro-Manager devices of the virtual microscope (pymmcore-plus ``UniMMCore`` Python devices).

Load them all with ``virtual_microscope.cfg`` (see :func:`smartscope.simulators.virtual_config_path`)::

    from pymmcore_plus.experimental.unicore import UniMMCore
    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))

Every device of one core talks to the same :class:`VirtualMicroscope`, which
:func:`get_virtual_microscope` returns (for ground truth by frame number). Frame metadata
(:data:`FRAME_METADATA_KEYS`): ``SimFrame`` (the simulator's frame number), ``SimTime_s``,
``ExposureStart_s``/``ExposureEnd_s`` (wall-clock epoch seconds), ``SimPowerMean_mW_<source>``
(mean power at the sample over the exposure), the stage position and more.

Devices: ``VirtualCamera`` (sequence acquisition into the core's buffer, with a sequence
start/stop cost; properties Scenario, Seed, SensorSize, CameraMode, Pacing, …),
``Laser405``/``Laser488``/``Laser561``/``Laser640`` and ``TransmittedLamp`` (property
``Power`` in mW, hardware-sequenceable), ``VirtualShutter`` (in front of every light
source), ``VirtualXYStage`` (µm, over a sample plane larger than one field),
``VirtualZStage`` (µm, hardware-sequenceable), ``VirtualAutofocus`` (a focus lock on the
drift model), ``VirtualDeformableMirror`` (properties ``Z1``…``Z21``: Noll Zernike
amplitudes in rad RMS, plus ``ZernikeVectorRad``). The objective turret is a C++ state
device (``virtual_microscope.cfg`` loads DemoCamera's ``DObjective`` as ``Objective``)
because pixel-size calibrations are resolved by the C++ core; the microscope follows its
``Label`` through the core's ``propertyChanged`` signal.

Micro-Manager's device contract (``simulators/README.md``): a property set through the core
emits ``propertyChanged`` once, device-level moves and exposure their own signals; the
advertised limits and allowed values are what a device takes (beyond them it refuses,
never clamps); the camera builds its sample when it initialises and is busy until a change
is rebuilt.

Invariants: in ``Pacing=RealTime`` the camera exposes in wall-clock time — frame k's
exposure is the real interval ``[ExposureStart_s, ExposureEnd_s]`` of ``Exposure`` ms, frames
start every ``max(exposure, readout, Interval_ms)``, a sequence acquisition's first exposure
begins ``SequenceStartCost_ms`` after the call, and ``stopSequenceAcquisition`` returns
``SequenceStopCost_ms`` after the frame in progress. ``Pacing=AsFastAsPossible`` never waits on the
wall clock: no costs, and each exposure window collapses to its rendering moment. Running
property/stage sequences step once per frame of a sequence acquisition, at its exposure
start (``snapImage`` steps nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from pymmcore_plus import FocusDirection
from pymmcore_plus.experimental.unicore import (
    CameraDevice,
    GenericDevice,
    ShutterDevice,
    StageDevice,
    XYStageDevice,
    pymm_property,
)
from pymmcore_plus.experimental.unicore.devices._device_base import Device
from pymmcore_plus.experimental.unicore.devices._properties import PropertyController

from smartscope.core_signals import connect_direct, disconnect_quietly, signal_group_of
from smartscope.exceptions import InvalidValue

from .autofocus import AutoFocusDevice
from .camera import EMCCD_REFERENCE, SCMOS_REFERENCE
from .microscope import (
    BINNINGS,
    EXPOSURE_LIMITS_MS,
    LAMP,
    LIGHT_SOURCES,
    SCENARIOS,
    Z_TARGET,
    FrameTruth,
    VirtualMicroscope,
)
from .optics import OBJECTIVES

__all__ = [
    "FRAME_METADATA_KEYS",
    "SEQUENCE_MAX_LENGTH",
    "Laser405",
    "Laser488",
    "Laser561",
    "Laser640",
    "TransmittedLamp",
    "VirtualAutofocus",
    "VirtualCamera",
    "VirtualDeformableMirror",
    "VirtualShutter",
    "VirtualXYStage",
    "VirtualZStage",
    "frame_metadata",
    "get_virtual_microscope",
]

log = logging.getLogger(__name__)

N_MIRROR_MODES = 21
MIRROR_LIMIT_RAD = 5.0  # per-mode stroke the mirror accepts (and advertises)
SENSOR_SIZES = ("64", "128", "256", "512", "1024", "2048")
SEQUENCE_MAX_LENGTH = 1024  # steps a triggered light source or focus stage can hold
# sequence start/stop of a real sCMOS: arming the sensor and allocating/pinning the host ring
# buffer take tens to hundreds of ms (an assumption in that range; see simulators/README.md)
MAX_LAG_S = 0.25  # RealTime: how far rendering may trail the camera's schedule
DEFAULT_START_COST_MS = 100.0
DEFAULT_STOP_COST_MS = 20.0

FRAME_METADATA_KEYS: tuple[str, ...] = (
    "SimFrame",
    "SimTime_s",
    "SimScenario",
    "Exposure-ms",
    "ExposureStart_s",
    "ExposureEnd_s",
    "SimDefocus_um",
    "SimZ_um",
    "SimStageX_um",
    "SimStageY_um",
    "SimPixelSize_um",
    "SimShutterOpen",
    "SimPowerConstant",
    *(f"SimPowerMean_mW_{s}" for s in LIGHT_SOURCES),
)


def frame_metadata(truth: FrameTruth) -> dict[str, str]:
    """The camera's metadata for one frame (:data:`FRAME_METADATA_KEYS`, all strings)."""
    md = {
        "SimFrame": str(truth.frame),
        "SimTime_s": f"{truth.t_s:.6f}",
        "SimScenario": truth.scenario,
        "Exposure-ms": f"{truth.exposure_ms:.4f}",
        "ExposureStart_s": f"{truth.exposure_start_s:.6f}",
        "ExposureEnd_s": f"{truth.exposure_end_s:.6f}",
        "SimDefocus_um": f"{truth.defocus_um:.4f}",
        "SimZ_um": f"{truth.z_um:.4f}",
        "SimStageX_um": f"{truth.stage_x_um:.4f}",
        "SimStageY_um": f"{truth.stage_y_um:.4f}",
        "SimPixelSize_um": f"{truth.pixel_size_um:.6g}",
        "SimShutterOpen": "1" if truth.shutter_open else "0",
        "SimPowerConstant": "1" if all(truth.power_constant.values()) else "0",
    }
    for src, v in truth.power_mean_mw.items():
        md[f"SimPowerMean_mW_{src}"] = f"{v:.6g}"
    return md


class _CoreFollower:
    """Keeps a microscope in step with core settings its Python devices cannot read: the
    objective turret's label and the core's AutoShutter flag (public core signals).

    ``signals`` is the core's signal group, or under pymmcore-plus's Qt back-end, where a
    device only reaches the signals its proxy lists, an object with ``propertyChanged``
    alone (the objective is followed; the AutoShutter flag only as the ``Core`` property).
    """

    def __init__(self, signals: Any, vm: VirtualMicroscope) -> None:
        self.signals = signals
        self.vm = vm
        self.objective_device = "Objective"
        self.focus_label = ""  # the virtual Z stage's label (the autofocus reports its moves)
        self._labels = {o.label for o in OBJECTIVES}
        connect_direct(signals.propertyChanged, self.on_property)
        if hasattr(signals, "autoShutterSet"):
            connect_direct(signals.autoShutterSet, self.on_auto_shutter)

    def on_property(self, device: str, prop: str, value: object) -> None:
        if device == self.objective_device and prop == "Label":
            if str(value) in self._labels:
                self.vm.set_objective(str(value))
            else:
                log.warning(
                    "objective %r is not one the virtual microscope knows (%s); it keeps imaging with %r",
                    value,
                    ", ".join(sorted(self._labels)),
                    self.vm.objective.label,
                )
        elif device == "Core" and prop == "AutoShutter":
            self.vm.set_auto_shutter(str(value) in ("1", "True", "true"))

    def on_auto_shutter(self, on: bool) -> None:
        self.vm.set_auto_shutter(bool(on))

    def close(self) -> None:
        disconnect_quietly(self.signals.propertyChanged, self.on_property)
        if hasattr(self.signals, "autoShutterSet"):
            disconnect_quietly(self.signals.autoShutterSet, self.on_auto_shutter)


class _PropertyChangedOnly:
    """What a device's core proxy gives of the core's signals under the Qt back-end."""

    def __init__(self, property_changed: Any) -> None:
        self.propertyChanged = property_changed


# One VirtualMicroscope per core. Python devices only see a restricted proxy of their core;
# the core's ``events.propertyChanged`` signal identifies the core (the token). Under
# psygnal it is one object whose ``instance`` is the core's signal group; under Qt every
# access makes a new bound signal, equal to the others and hashing alike, so the registry
# is keyed by the token's equality, never by ``id``. The entry keeps the token (and so
# its core's signals) alive while a device of that core is loaded.
_REGISTRY: dict[object, tuple[VirtualMicroscope, set[int], _CoreFollower]] = {}


def _core_token(core: Any) -> object:
    return core.events.propertyChanged


def _attach(token: object, owner: int) -> VirtualMicroscope:
    entry = _REGISTRY.get(token)
    if entry is None:
        vm = VirtualMicroscope(lazy=True)
        signals = signal_group_of(token)
        if signals is None:
            signals = _PropertyChangedOnly(token)
        entry = (vm, set(), _CoreFollower(signals, vm))
        _REGISTRY[token] = entry
    entry[1].add(owner)
    return entry[0]


def _detach(token: object, owner: int) -> None:
    entry = _REGISTRY.get(token)
    if entry is not None:
        entry[1].discard(owner)
        if not entry[1]:
            entry[2].close()
            del _REGISTRY[token]


def _follower(token: object) -> _CoreFollower | None:
    entry = _REGISTRY.get(token) if token is not None else None
    return entry[2] if entry is not None else None


def get_virtual_microscope(core: Any) -> VirtualMicroscope:
    """The :class:`VirtualMicroscope` behind a core that loaded the virtual devices."""
    entry = _REGISTRY.get(_core_token(core))
    if entry is None:
        raise LookupError("this core has no virtual-microscope devices loaded")
    return entry[0]


class _VirtualDevice(Device):
    """Base of every virtual device: lazy access to the shared microscope of this device's
    core, and change signals as pymmcore-plus expects Python devices to emit them.

    A property set through the core (``setProperty``) emits ``propertyChanged(label, name,
    value)`` once, with the value read back; the device-level calls the core makes directly
    (``setExposure``, ``setPosition``, ``setShutterOpen``, …) emit their own signals
    (:meth:`_changed`). Values set as text are matched to a property's allowed values by
    their text, as Micro-Manager compares them ("2" selects binning 2).
    """

    _vm_: VirtualMicroscope | None = None
    _token_: object | None = None
    _quiet: int = 0  # > 0 while a property set is in progress: it emits once, at the end

    @property
    def vm(self) -> VirtualMicroscope:
        if self._vm_ is None:
            self._token_ = _core_token(self.core)
            self._vm_ = _attach(self._token_, id(self))
        return self._vm_

    def _release(self) -> None:
        if self._token_ is not None:
            _detach(self._token_, id(self))
        self._vm_ = None
        self._token_ = None

    def set_property_value(self, prop_name: str, value: Any) -> None:
        allowed = self.get_property_info(prop_name).allowed_values
        if allowed and value not in allowed:
            value = next((a for a in allowed if str(a) == str(value)), value)
        before = self._text(prop_name)
        self._quiet += 1
        try:
            super().set_property_value(prop_name, value)
        finally:
            self._quiet -= 1
        self._changed(prop_name, before)

    def _text(self, prop_name: str) -> str | None:
        try:
            return _text(self.get_property_value(prop_name))
        except Exception:  # a property that cannot be read before the device is initialised
            return None

    def _changed(self, prop_name: str, before: str | None = None) -> None:
        """Tell the core's listeners that ``prop_name`` changed, as text, like a C++ device
        (not while a set is in progress, and not when the value stayed the same)."""
        if self._quiet or self._core_proxy_ is None:
            return
        now = self._text(prop_name)
        if now is not None and now != before:
            self.core.events.propertyChanged.emit(self.get_label(), prop_name, now)


def _text(value: Any) -> str:
    """A property value as Micro-Manager's signals carry it: text."""
    if isinstance(value, bool):
        return str(int(value))
    return str(getattr(value, "value", value))


def _with_limits(dev: Device, name: str, limits: tuple[float, float]) -> None:
    """Give this device its own copy of a class-level property with ``limits`` (the class's
    controller is shared by every device of the class)."""
    ctrl = dev._prop_controllers_[name]
    info = replace(ctrl.property, limits=limits)
    dev._prop_controllers_[name] = PropertyController(
        info, ctrl.fget, ctrl.fset, ctrl.fseq_load, ctrl.fseq_start, ctrl.fseq_stop, ctrl.doc
    )


def _sleep_until(t_s: float) -> None:
    wait = t_s - time.time()
    if wait > 0:
        time.sleep(wait)


# ============================================================================ camera


class VirtualCamera(_VirtualDevice, CameraDevice):
    """Simulated sCMOS/EMCCD camera imaging the virtual sample (uint16 frames).

    ``Scenario``, ``Seed`` and ``SensorSize`` are pre-initialisation properties: the sample
    is built when the camera initialises, so the first frame comes at steady-state speed.
    A later change rebuilds it; until then the camera is busy, and waiting for it
    (``waitForDevice`` / ``waitForSystem``) builds it, so an acquisition that waits for its
    devices before it starts keeps its timing from the first frame.
    """

    def __init__(self) -> None:
        super().__init__()
        _with_limits(self, "Exposure", EXPOSURE_LIMITS_MS)
        _with_limits(self, "EMGain", (1.0, 2000.0))
        self.set_property_allowed_values("Binning", list(BINNINGS))
        self._pacing = "RealTime"
        self._start_cost_ms = DEFAULT_START_COST_MS
        self._stop_cost_ms = DEFAULT_STOP_COST_MS
        self._running = False  # a sequence acquisition is producing frames
        self._ready_at = 0.0  # wall time the camera can arm again after its last stop
        self._signals: Any = None

    def initialize(self) -> None:
        self.vm.prepare()  # the sample of the pre-initialisation settings, built now
        self._signals = signal_group_of(self._token_)
        if self._signals is not None:
            connect_direct(self._signals.sequenceAcquisitionStopped, self._on_sequence_stopped)

    def busy(self) -> bool:
        """Busy while the sample must be rebuilt; asking waits for that (see the class doc)."""
        if self._vm_ is not None and self._vm_.needs_prepare:
            self._vm_.prepare()
        return False

    def shutdown(self) -> None:
        if self._signals is not None:
            disconnect_quietly(self._signals.sequenceAcquisitionStopped, self._on_sequence_stopped)
            self._signals = None
        self._release()

    def _on_sequence_stopped(self, camera_label: str) -> None:
        """The core stopped a sequence (after joining the acquisition thread): spend the stop
        cost here, so ``stopSequenceAcquisition`` returns that much later."""
        if camera_label not in ("", self.get_label()) or not self._running:
            return
        self._running = False
        if self._pacing == "RealTime":
            time.sleep(self._stop_cost_ms * 1e-3)
        self._ready_at = time.time()

    # mandatory -----------------------------------------------------------------
    def get_exposure(self) -> float:
        return self.vm.exposure_ms

    def set_exposure(self, exposure: float) -> None:
        before = _text(self.vm.exposure_ms)
        self.vm.set_exposure_ms(float(exposure))
        if not self._quiet and self._core_proxy_ is not None:
            self.core.events.exposureChanged.emit(self.get_label(), self.vm.exposure_ms)
        self._changed("Exposure", before)

    def shape(self) -> tuple[int, int]:
        return self.vm.frame_shape()

    def dtype(self) -> Any:
        return np.uint16

    def start_sequence(
        self, n: int | None, get_buffer: Callable[[Sequence[int], Any], np.ndarray]
    ) -> Iterator[Mapping]:
        # UniMMCore consumes a sequence acquisition on its own thread and a snap on the
        # caller's: the generator tells them apart by where its first frame is asked for
        return self._frames(n, get_buffer, threading.get_ident())

    def _frames(
        self, n: int | None, get_buffer: Callable[[Sequence[int], Any], np.ndarray], caller: int
    ) -> Iterator[Mapping]:
        vm = self.vm
        sequence = threading.get_ident() != caller
        realtime = self._pacing == "RealTime"
        limit = n if n is not None else 2**62
        if sequence:
            self._running = True
        next_start = time.time()
        if sequence and realtime:  # arming the sensor: the first exposure begins after the cost
            armed = max(next_start, self._ready_at) + self._start_cost_ms * 1e-3
            vm.prepare()  # the simulator's own set-up hides in the cost where it fits
            next_start = max(armed, time.time())
        for k in range(limit):
            if realtime:
                start = next_start
                _sleep_until(start)
                if sequence:
                    vm.trigger(start)
                exp_s = vm.exposure_ms * 1e-3
                end = start + exp_s
                _sleep_until(end)
                frame, truth = vm.render_frame((start, end))
                interval_s = vm.frame_interval_ms() * 1e-3
                next_start = start + interval_s
                now = time.time()
                # the camera keeps its schedule through a host stall (frames come late, as from
                # a frame grabber's buffer) up to MAX_LAG_S behind; a host slower than that
                # for good shifts the schedule instead (a gap in ExposureStart_s, no burst)
                if now > next_start + exp_s + max(MAX_LAG_S, 2 * interval_s):
                    next_start = now - exp_s
            else:
                t = time.time()
                if sequence:
                    vm.trigger(t)
                frame, truth = vm.render_frame((t, t))
            buf = get_buffer(frame.shape, np.uint16)
            buf[:] = frame
            if sequence and k == limit - 1:  # a counted sequence ends by itself
                self._running = False
                self._ready_at = time.time() + (self._stop_cost_ms * 1e-3 if realtime else 0.0)
            yield frame_metadata(truth)

    # ROI --------------------------------------------------------------------------
    def get_roi(self) -> tuple[int, int, int, int]:
        vm = self.vm
        if vm.roi is None:
            return (0, 0, vm.binned_px, vm.binned_px)
        return vm.roi

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        self.vm.set_roi(x, y, width, height)

    def clear_roi(self) -> None:
        self.vm.clear_roi()

    # standard properties ----------------------------------------------------------
    def get_em_gain(self) -> float:
        return self.vm.camera.em_gain

    def set_em_gain(self, value: float) -> None:
        self.vm.set_camera(em_gain=float(value))

    def get_binning(self) -> int:
        return self.vm.binning

    def set_binning(self, value: int) -> None:
        """On-chip binning 1, 2 or 4: frame shape and pixel size follow; the ROI is cleared."""
        self.vm.set_binning(int(value))

    def get_camera_name(self) -> str:
        return "smartscope virtual camera"

    # simulator properties -------------------------------------------------------
    @pymm_property(allowed_values=list(SCENARIOS), name="Scenario", is_pre_init=True)
    def scenario(self) -> str:
        """Sample scenario (rebuilds the sample and resets the simulated clock)."""
        return self.vm.scenario

    @scenario.setter
    def _set_scenario(self, value: str) -> None:
        self.vm.configure(scenario=str(value))
        if self._signals is not None:  # the scenario's own light settings: the lights changed too
            self._signals.propertiesChanged.emit()

    @pymm_property(limits=(0, 2**31 - 1), name="Seed", is_pre_init=True)
    def seed(self) -> int:
        """Seed of the sample, photophysics and noise (rebuilds the sample)."""
        return self.vm.seed

    @seed.setter
    def _set_seed(self, value: int) -> None:
        self.vm.configure(seed=int(float(value)))

    @pymm_property(allowed_values=list(SENSOR_SIZES), name="SensorSize", is_pre_init=True)
    def sensor_size(self) -> str:
        """Square sensor edge in pixels (rebuilds the sample)."""
        return str(self.vm.sensor_px)

    @sensor_size.setter
    def _set_sensor_size(self, value: str) -> None:
        self.vm.configure(sensor_px=int(float(value)))

    @pymm_property(allowed_values=["sCMOS", "EMCCD"], name="CameraMode")
    def camera_mode(self) -> str:
        """Noise model; switching loads that sensor's reference parameters."""
        return "EMCCD" if self.vm.camera.kind == "emccd" else "sCMOS"

    @camera_mode.setter
    def _set_camera_mode(self, value: str) -> None:
        ref = EMCCD_REFERENCE if value == "EMCCD" else SCMOS_REFERENCE
        self.vm.set_camera(**ref.model_dump(exclude={"exposure_ms"}))

    @pymm_property(allowed_values=["RealTime", "AsFastAsPossible"], name="Pacing")
    def pacing(self) -> str:
        """RealTime: a camera in wall-clock time (real exposure windows, frame rate, start and
        stop costs); AsFastAsPossible: frames as fast as rendered, no wall-clock waits."""
        return self._pacing

    @pacing.setter
    def _set_pacing(self, value: str) -> None:
        self._pacing = str(value)

    @pymm_property(limits=(0.0, 1900.0), name="SequenceStartCost_ms")
    def sequence_start_cost_ms(self) -> float:
        """RealTime: wall time from startSequenceAcquisition to the first exposure start
        (below UniMMCore's 2 s wait for the camera thread on a stop)."""
        return self._start_cost_ms

    @sequence_start_cost_ms.setter
    def _set_sequence_start_cost_ms(self, value: float) -> None:
        self._start_cost_ms = float(value)

    @pymm_property(limits=(0.0, 10_000.0), name="SequenceStopCost_ms")
    def sequence_stop_cost_ms(self) -> float:
        """RealTime: extra wall time stopSequenceAcquisition takes (and a counted sequence
        needs after its last frame before the camera can be armed again)."""
        return self._stop_cost_ms

    @sequence_stop_cost_ms.setter
    def _set_sequence_stop_cost_ms(self, value: float) -> None:
        self._stop_cost_ms = float(value)

    @pymm_property(name="ObjectiveDevice")
    def objective_device(self) -> str:
        """Label of the objective turret whose ``Label`` the microscope follows."""
        f = _follower(self._token_)
        return f.objective_device if f is not None else ""

    @objective_device.setter
    def _set_objective_device(self, value: str) -> None:
        _ = self.vm
        f = _follower(self._token_)
        if f is not None:
            f.objective_device = str(value)

    @pymm_property(limits=(0.0, 100.0), name="ReadNoise_e")
    def read_noise_e(self) -> float:
        return self.vm.camera.read_noise_e

    @read_noise_e.setter
    def _set_read_noise_e(self, value: float) -> None:
        self.vm.set_camera(read_noise_e=float(value))

    @pymm_property(limits=(0.001, 100.0), name="ConversionGain_ADU_per_e")
    def conversion_gain(self) -> float:
        return self.vm.camera.gain_adu_per_e

    @conversion_gain.setter
    def _set_conversion_gain(self, value: float) -> None:
        self.vm.set_camera(gain_adu_per_e=float(value))

    @pymm_property(limits=(0.0, 10_000.0), name="Offset_ADU")
    def offset_adu(self) -> float:
        return self.vm.camera.offset_adu

    @offset_adu.setter
    def _set_offset_adu(self, value: float) -> None:
        self.vm.set_camera(offset_adu=float(value))

    @pymm_property(limits=(0.0, 10_000.0), name="Interval_ms")
    def interval_ms(self) -> float:
        """Minimum simulated frame interval (0: exposure/readout-limited)."""
        return self.vm.interval_ms

    @interval_ms.setter
    def _set_interval_ms(self, value: float) -> None:
        self.vm.interval_ms = float(value)

    @pymm_property(is_read_only=True, name="SimFrame")
    def sim_frame(self) -> int:
        """Number the next simulated frame will carry."""
        return self.vm.frame


# ============================================================================ lights


class _Light(_VirtualDevice, GenericDevice):
    """A light source; ``Power`` advertises 0…``max_power_mw`` and refuses more, as a laser
    controller does (a sequence with a value beyond it is refused whole)."""

    source: ClassVar[str] = ""
    max_power_mw: ClassVar[float] = 200.0
    emits_light: ClassVar[bool] = True  # shown as the EmitsLight property: smartscope's safety
    # refuses a run that leaves a device saying so undeclared

    def __init__(self) -> None:
        super().__init__()
        _with_limits(self, "Power", (0.0, self.max_power_mw))

    def initialize(self) -> None:
        _ = self.vm

    def shutdown(self) -> None:
        self._release()

    @pymm_property(limits=(0.0, 200.0), name="Power", sequence_max_length=SEQUENCE_MAX_LENGTH)
    def power(self) -> float:
        """Power at the sample, mW (0 = off). Sequenceable: a loaded and started sequence
        steps once per camera frame of a sequence acquisition, at its exposure start."""
        return self.vm.power_mw[self.source]

    @power.setter
    def _set_power(self, value: float) -> None:
        self.vm.set_power(self.source, float(value))

    @power.sequence_loader
    def _load_power_sequence(self, sequence: Sequence[float]) -> None:
        self.vm.load_sequence(self.source, [float(v) for v in sequence])

    @power.sequence_starter
    def _start_power_sequence(self) -> None:
        self.vm.start_sequence(self.source)

    @power.sequence_stopper
    def _stop_power_sequence(self) -> None:
        self.vm.stop_sequence(self.source)

    @pymm_property(is_read_only=True, name="EmitsLight")
    def emits(self) -> str:
        """This device puts light on the sample ("1")."""
        return "1" if self.emits_light else "0"

    @pymm_property(is_read_only=True, name="Wavelength_nm")
    def wavelength_nm(self) -> int:
        return int(self.source) if self.source.isdigit() else 550


class Laser405(_Light):
    """405 nm activation laser (raises the SMLM dye's off→on rate)."""

    source = "405"
    max_power_mw = 50.0


class Laser488(_Light):
    """488 nm laser (cells: nuclei channel)."""

    source = "488"


class Laser561(_Light):
    """561 nm laser (cells: mitochondria channel)."""

    source = "561"


class Laser640(_Light):
    """640 nm laser (cells: membrane channel; SMLM excitation)."""

    source = "640"


class TransmittedLamp(_Light):
    """Transmitted-light lamp: label-free (phase contrast) image of the same cells."""

    source = LAMP
    max_power_mw = 100.0


# ============================================================================ shutter


class VirtualShutter(_VirtualDevice, ShutterDevice):
    """Illumination shutter in front of every light source (laser combiner and lamp).

    Closed (the state at start-up), no light reaches the sample: dark frames, no
    excitation, no bleaching, no dose. The microscope follows the core's AutoShutter flag
    (on by default): while it is on, this shutter opens for every exposure, as Micro-Manager
    opens the core shutter around each acquisition.
    """

    def initialize(self) -> None:
        _ = self.vm

    def shutdown(self) -> None:
        self._release()

    def get_open(self) -> bool:
        return self.vm.shutter_open

    def set_open(self, open: bool) -> None:
        # the core's setShutterOpen emits propertyChanged(label, "State", …) itself
        if not isinstance(open, bool | int):  # as the C++ core: a shutter is opened by a flag
            raise TypeError(f"{self.get_label()}: open must be a bool, got {open!r}")
        self.vm.set_shutter(bool(open))

    @pymm_property(allowed_values=[0, 1], name="State")
    def state(self) -> int:
        """1: open, 0: closed (Micro-Manager's shutter property; same as setShutterOpen)."""
        return int(self.vm.shutter_open)

    @state.setter
    def _set_state(self, value: int) -> None:
        self.set_open(bool(int(value)))


# ============================================================================ stages


class VirtualXYStage(_VirtualDevice, XYStageDevice):
    """Motorised XY stage (µm, ±50 mm) over a sample plane larger than one field.

    The position is the world coordinate of the sensor's top-left corner (image axes =
    stage axes); every position shows its own cells, events or emitters, built from the
    seed and the position. ``set_origin`` shifts the reported coordinates only.
    """

    def __init__(self) -> None:
        super().__init__()
        self._origin_um = (0.0, 0.0)

    def initialize(self) -> None:
        _ = self.vm

    def shutdown(self) -> None:
        self._release()

    def set_position_um(self, x: float, y: float) -> None:
        self.vm.set_stage_xy_um(float(x) + self._origin_um[0], float(y) + self._origin_um[1])
        self._moved()

    def _moved(self) -> None:
        if self._core_proxy_ is not None:
            self.core.events.XYStagePositionChanged.emit(self.get_label(), *self.get_position_um())

    def get_position_um(self) -> tuple[float, float]:
        x, y = self.vm.stage_xy_um
        return (x - self._origin_um[0], y - self._origin_um[1])

    def set_origin_x(self) -> None:
        self._origin_um = (self.vm.stage_xy_um[0], self._origin_um[1])
        self._moved()

    def set_origin_y(self) -> None:
        self._origin_um = (self._origin_um[0], self.vm.stage_xy_um[1])
        self._moved()

    def home(self) -> None:
        self._origin_um = (0.0, 0.0)
        self.vm.set_stage_xy_um(0.0, 0.0)
        self._moved()

    def stop(self) -> None:
        pass


class VirtualZStage(_VirtualDevice, StageDevice):
    """Objective focus (µm). Defocus = sample drift − Z; the PSF follows exactly.

    Focus direction: towards the sample (a larger Z brings the objective closer), settable as
    Micro-Manager's ``FocusDirection`` so a saved configuration loads again.

    Sequenceable: a loaded and started position sequence steps once per camera frame of a
    sequence acquisition, at its exposure start (a piezo driven by the camera trigger).
    """

    def __init__(self) -> None:
        super().__init__()
        self._direction = FocusDirection.TowardSample

    def initialize(self) -> None:
        _ = self.vm
        f = _follower(self._token_)
        if f is not None:
            f.focus_label = self.get_label()

    def shutdown(self) -> None:
        self._release()

    def get_focus_direction(self) -> FocusDirection:
        return self._direction

    def set_focus_direction(self, sign: int) -> None:
        """Any positive sign: towards the sample, negative: away, 0: unknown (as Micro-Manager)."""
        sign = int(sign)
        self._direction = FocusDirection((sign > 0) - (sign < 0))

    def set_position_um(self, val: float) -> None:
        self.vm.set_z_um(float(val))
        self._moved()

    def _moved(self) -> None:
        if self._core_proxy_ is not None:
            self.core.events.stagePositionChanged.emit(self.get_label(), self.vm.z_um)

    def get_position_um(self) -> float:
        return self.vm.z_um

    def home(self) -> None:
        self.vm.set_z_um(0.0)
        self._moved()

    def stop(self) -> None:
        pass

    def set_origin(self) -> None:
        self.vm.set_z_um(0.0)
        self._moved()

    def get_sequence_max_length(self) -> int:
        return SEQUENCE_MAX_LENGTH

    def send_sequence(self, sequence: tuple[float, ...]) -> None:
        self.vm.load_sequence(Z_TARGET, sequence)

    def start_sequence(self) -> None:
        self.vm.start_sequence(Z_TARGET)

    def stop_sequence(self) -> None:
        self.vm.stop_sequence(Z_TARGET)

    @pymm_property(limits=(-1.0, 1.0), name="FocusDriftRate_um_per_s")
    def drift_rate(self) -> float:
        """Sample focus creep (µm/s) — slow drift that an autofocus must follow."""
        return self.vm.drift.rate_um_per_s

    @drift_rate.setter
    def _set_drift_rate(self, value: float) -> None:
        self.vm.set_drift(rate_um_per_s=float(value))

    @pymm_property(limits=(0.0, 5.0), name="FocusWander_um")
    def drift_wander(self) -> float:
        """RMS of the slow random focus wander (µm, correlation time 30 s)."""
        return self.vm.drift.wander_um

    @drift_wander.setter
    def _set_drift_wander(self, value: float) -> None:
        self.vm.set_drift(wander_um=float(value))


# ============================================================================ autofocus


class VirtualAutofocus(_VirtualDevice, AutoFocusDevice):
    """Hardware autofocus on the focus-drift model: a focus lock (like a reflection-based
    one) that knows where the sample is in focus now — the simulated drift at the
    simulated time — and moves the ``Z`` stage there plus its offset.

    ``fullFocus``: Z = in-focus Z + offset (refused when Z is further from it than
    ``CaptureRange_um``); ``incrementalFocus``: one step towards it, at most
    ``IncrementalStep_um``; continuous focus (``enableContinuousFocus``) holds Z there
    before every frame while enabled, locked within ``LockTolerance_um``. The focus score is
    exp(−e²/2) for a lock error e in µm (1: exactly at the target).
    """

    def __init__(self) -> None:
        super().__init__()
        self._offset_um = 0.0
        self._continuous = False
        self._capture_um = 50.0
        self._step_um = 1.0
        self._tolerance_um = 0.05
        self._last_score = 0.0

    def initialize(self) -> None:
        _ = self.vm

    def shutdown(self) -> None:
        self.vm.set_focus_lock(None)
        self._release()

    def _target_um(self) -> float:
        return self.vm.in_focus_z_um() + self._offset_um

    def _error_um(self) -> float:
        return self.vm.z_um - self._target_um()

    def _move_to(self, z_um: float) -> None:
        self.vm.set_z_um(z_um)
        f = _follower(self._token_)
        if f is not None and f.focus_label and self._core_proxy_ is not None:
            self.core.events.stagePositionChanged.emit(f.focus_label, self.vm.z_um)

    def full_focus(self) -> None:
        error = self._error_um()
        if abs(error) > self._capture_um:
            raise RuntimeError(
                f"autofocus: the focus is {error:+.1f} µm from the lock target, beyond the "
                f"capture range ({self._capture_um:g} µm)"
            )
        self._move_to(self._target_um())
        self._last_score = self.get_current_focus_score()

    def incremental_focus(self) -> None:
        error = self._error_um()
        if abs(error) > self._capture_um:
            raise RuntimeError(f"autofocus: the focus is {error:+.1f} µm from the lock target, out of range")
        step = max(-self._step_um, min(self._step_um, -error))
        self._move_to(self.vm.z_um + step)
        self._last_score = self.get_current_focus_score()

    def get_offset(self) -> float:
        return self._offset_um

    def set_offset(self, offset: float) -> None:
        self._offset_um = float(offset)
        if self._continuous:
            self.vm.set_focus_lock(self._offset_um)

    def set_continuous_focusing(self, on: bool) -> None:
        if on and not self._continuous:
            self.full_focus()  # a lock first brings the focus to its target
        self._continuous = bool(on)
        self.vm.set_focus_lock(self._offset_um if self._continuous else None)

    def get_continuous_focusing(self) -> bool:
        return self._continuous

    def is_continuous_focus_locked(self) -> bool:
        if not self._continuous:
            return False
        if abs(self._error_um()) <= self._capture_um:  # the lock follows the drift at all times
            self._move_to(self._target_um())
        return abs(self._error_um()) <= self._tolerance_um

    def get_last_focus_score(self) -> float:
        return self._last_score

    def get_current_focus_score(self) -> float:
        return float(np.exp(-0.5 * self._error_um() ** 2))

    @pymm_property(limits=(-100.0, 100.0), name="Offset_um")
    def offset_um(self) -> float:
        """Where focus is held, µm above the in-focus Z (same as setAutoFocusOffset)."""
        return self._offset_um

    @offset_um.setter
    def _set_offset_um(self, value: float) -> None:
        self.set_offset(float(value))

    @pymm_property(limits=(0.1, 1000.0), name="CaptureRange_um")
    def capture_range_um(self) -> float:
        """How far from its target the lock can still find focus (µm)."""
        return self._capture_um

    @capture_range_um.setter
    def _set_capture_range_um(self, value: float) -> None:
        self._capture_um = float(value)

    @pymm_property(limits=(0.001, 100.0), name="IncrementalStep_um")
    def incremental_step_um(self) -> float:
        """Largest move of one incrementalFocus (µm)."""
        return self._step_um

    @incremental_step_um.setter
    def _set_incremental_step_um(self, value: float) -> None:
        self._step_um = float(value)

    @pymm_property(limits=(0.001, 10.0), name="LockTolerance_um")
    def lock_tolerance_um(self) -> float:
        """Lock error within which continuous focus reports itself locked (µm)."""
        return self._tolerance_um

    @lock_tolerance_um.setter
    def _set_lock_tolerance_um(self, value: float) -> None:
        self._tolerance_um = float(value)


# ============================================================================ mirror


def _mode_getter(j: int) -> Callable[[VirtualDeformableMirror], float]:
    def get(dev: VirtualDeformableMirror) -> float:
        return dev._get_mode(j)

    return get


def _mode_setter(j: int) -> Callable[[VirtualDeformableMirror, float], None]:
    def set_(dev: VirtualDeformableMirror, value: float) -> None:
        dev._set_mode(j, value)

    return set_


class VirtualDeformableMirror(_VirtualDevice, GenericDevice):
    """Deformable mirror in the pupil: Noll Zernike amplitudes (rad RMS) add to the
    wavefront of every channel, so the next frame carries that aberration."""

    def __init__(self) -> None:
        super().__init__()
        for j in range(1, N_MIRROR_MODES + 1):
            self.register_property(
                f"Z{j}",
                default_value=0.0,
                getter=_mode_getter(j),
                setter=_mode_setter(j),
                limits=(-MIRROR_LIMIT_RAD, MIRROR_LIMIT_RAD),
                property_type=float,
            )

    def initialize(self) -> None:
        _ = self.vm

    def shutdown(self) -> None:
        self._release()

    def _get_mode(self, j: int) -> float:
        z = self.vm.zernike_rad
        return z[j - 1] if j <= len(z) else 0.0

    def _set_mode(self, j: int, value: float) -> None:
        z = list(self.vm.zernike_rad) + [0.0] * max(0, j - len(self.vm.zernike_rad))
        z[j - 1] = float(value)
        self.vm.set_mirror(z)

    @pymm_property(name="ZernikeVectorRad")
    def zernike_vector(self) -> str:
        """All amplitudes at once, comma-separated, Noll j = 1, 2, … (rad RMS)."""
        return ",".join(f"{v:.6g}" for v in self.vm.zernike_rad)

    @zernike_vector.setter
    def _set_zernike_vector(self, value: str) -> None:
        text = str(value).strip()
        try:
            vals = [float(v) for v in text.split(",")] if text else []
        except ValueError as exc:
            raise InvalidValue(f"ZernikeVectorRad: {value!r} is not a comma-separated list") from exc
        if len(vals) > N_MIRROR_MODES:
            raise InvalidValue(f"ZernikeVectorRad: at most {N_MIRROR_MODES} modes, got {len(vals)}")
        if any(not abs(v) <= MIRROR_LIMIT_RAD for v in vals):
            raise InvalidValue(f"ZernikeVectorRad: every amplitude must be within ±{MIRROR_LIMIT_RAD:g} rad")
        self.vm.set_mirror(vals)
