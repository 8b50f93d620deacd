"""Micro-Manager devices of the virtual microscope (pymmcore-plus ``UniMMCore`` Python devices).

Load them all with ``virtual_microscope.cfg`` (see :func:`smartscope.simulators.virtual_config_path`)::

    from pymmcore_plus.experimental.unicore import UniMMCore
    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))

Every device of one core talks to the same :class:`VirtualMicroscope`, which
:func:`get_virtual_microscope` returns (for ground truth by frame number). Frame
metadata carry ``SimFrame`` (the simulator's frame number), ``SimTime_s`` and
``SimScenario``.

Devices: ``VirtualCamera`` (sequence acquisition into the core's buffer; properties
Scenario, Seed, SensorSize, CameraMode, EMGain, Pacing, …), ``Laser405``/``Laser488``/
``Laser561``/``Laser640`` and ``TransmittedLamp`` (property ``Power`` in mW),
``VirtualZStage`` (µm), ``VirtualDeformableMirror`` (properties ``Z1``…``Z21``: Noll
Zernike amplitudes in rad RMS, plus ``ZernikeVectorRad``, a comma-separated vector).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pymmcore_plus.experimental.unicore import (
    CameraDevice,
    GenericDevice,
    StageDevice,
    pymm_property,
)

from .camera import EMCCD_REFERENCE, SCMOS_REFERENCE
from .microscope import LAMP, SCENARIOS, VirtualMicroscope

__all__ = [
    "Laser405",
    "Laser488",
    "Laser561",
    "Laser640",
    "TransmittedLamp",
    "VirtualCamera",
    "VirtualDeformableMirror",
    "VirtualZStage",
    "get_virtual_microscope",
]

N_MIRROR_MODES = 21
SENSOR_SIZES = ("64", "128", "256", "512", "1024", "2048")


# One VirtualMicroscope per core. Python devices only see a restricted proxy of their core;
# the core's ``events.propertyChanged`` signal instance is the same object for all of them,
# so it identifies the core. The entry keeps that object alive, so its id cannot be reused.
_REGISTRY: dict[int, tuple[object, VirtualMicroscope, set[int]]] = {}


def _core_token(core: Any) -> object:
    return core.events.propertyChanged


def _attach(token: object, owner: int) -> VirtualMicroscope:
    entry = _REGISTRY.get(id(token))
    if entry is None or entry[0] is not token:
        entry = (token, VirtualMicroscope(lazy=True), set())
        _REGISTRY[id(token)] = entry
    entry[2].add(owner)
    return entry[1]


def _detach(token: object, owner: int) -> None:
    entry = _REGISTRY.get(id(token))
    if entry is not None and entry[0] is token:
        entry[2].discard(owner)
        if not entry[2]:
            del _REGISTRY[id(token)]


def get_virtual_microscope(core: Any) -> VirtualMicroscope:
    """The :class:`VirtualMicroscope` behind a core that loaded the virtual devices."""
    entry = _REGISTRY.get(id(_core_token(core)))
    if entry is None or entry[0] is not _core_token(core):
        raise LookupError("this core has no virtual-microscope devices loaded")
    return entry[1]


class _VirtualDevice:
    """Mixin: lazy access to the shared microscope of this device's core."""

    _vm_: VirtualMicroscope | None = None
    _token_: object | None = None
    core: Any

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


# ============================================================================ camera


class VirtualCamera(_VirtualDevice, CameraDevice):
    """Simulated sCMOS/EMCCD camera imaging the virtual sample (uint16 frames)."""

    def __init__(self) -> None:
        super().__init__()
        self._pacing = "RealTime"
        self._stop_t0: float | None = None

    def initialize(self) -> None:
        _ = self.vm

    def shutdown(self) -> None:
        self._release()

    # mandatory -----------------------------------------------------------------
    def get_exposure(self) -> float:
        return self.vm.exposure_ms

    def set_exposure(self, exposure: float) -> None:
        self.vm.set_exposure_ms(float(exposure))

    def shape(self) -> tuple[int, int]:
        return self.vm.frame_shape()

    def dtype(self) -> Any:
        return np.uint16

    def start_sequence(
        self, n: int | None, get_buffer: Callable[[Sequence[int], Any], np.ndarray]
    ) -> Iterator[Mapping]:
        vm = self.vm
        limit = n if n is not None else 2**62
        t0 = time.perf_counter()
        sim_t0 = vm.t_s
        for _ in range(limit):
            if vm.t_s < sim_t0:  # sample rebuilt (scenario/seed/size): clock restarted
                t0, sim_t0 = time.perf_counter(), vm.t_s
            if self._pacing == "RealTime":
                # the frame is read out when its exposure ends on the simulated clock; render
                # it then, so settings changed meanwhile act on it as on a real camera
                due = t0 + (vm.t_s - sim_t0) + vm.exposure_ms * 1e-3
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -0.5 * vm.frame_interval_ms() * 1e-3:
                    t0 -= wait  # fell behind (slow host): no catch-up burst, like a camera
            frame, truth = vm.render_frame()
            buf = get_buffer(frame.shape, np.uint16)
            buf[:] = frame
            yield {
                "SimFrame": str(truth.frame),
                "SimTime_s": f"{truth.t_s:.6f}",
                "SimScenario": truth.scenario,
                "Exposure-ms": f"{truth.exposure_ms:.4f}",
                "SimDefocus_um": f"{truth.defocus_um:.4f}",
            }

    # ROI --------------------------------------------------------------------------
    def get_roi(self) -> tuple[int, int, int, int]:
        vm = self.vm
        if vm.roi is None:
            return (0, 0, vm.sensor_px, vm.sensor_px)
        return vm.roi

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        self.vm.set_roi(x, y, width, height)

    def clear_roi(self) -> None:
        self.vm.clear_roi()

    # standard properties ----------------------------------------------------------
    def get_em_gain(self) -> float:
        return self.vm.camera.em_gain

    def set_em_gain(self, value: float) -> None:
        self.vm.set_camera(em_gain=max(1.0, float(value)))

    def get_camera_name(self) -> str:
        return "smartscope virtual camera"

    # simulator properties -------------------------------------------------------
    @pymm_property(allowed_values=list(SCENARIOS), name="Scenario")
    def scenario(self) -> str:
        """Sample scenario (rebuilds the sample and resets the simulated clock)."""
        return self.vm.scenario

    @scenario.setter
    def _set_scenario(self, value: str) -> None:
        self.vm.configure(scenario=str(value))

    @pymm_property(limits=(0, 2**31 - 1), name="Seed")
    def seed(self) -> int:
        """Seed of the sample, photophysics and noise (rebuilds the sample)."""
        return self.vm.seed

    @seed.setter
    def _set_seed(self, value: int) -> None:
        self.vm.configure(seed=int(float(value)))

    @pymm_property(allowed_values=list(SENSOR_SIZES), name="SensorSize")
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
        """RealTime: frames arrive at the simulated frame rate; else as fast as rendered."""
        return self._pacing

    @pacing.setter
    def _set_pacing(self, value: str) -> None:
        self._pacing = str(value)

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
    source: ClassVar[str] = ""
    max_power_mw: ClassVar[float] = 200.0

    def initialize(self) -> None:
        _ = self.vm

    def shutdown(self) -> None:
        self._release()

    @pymm_property(limits=(0.0, 200.0), name="Power")
    def power(self) -> float:
        """Power at the sample, mW (0 = off)."""
        return self.vm.power_mw[self.source]

    @power.setter
    def _set_power(self, value: float) -> None:
        self.vm.set_power(self.source, min(float(value), self.max_power_mw))

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


# ============================================================================ focus


class VirtualZStage(_VirtualDevice, StageDevice):
    """Objective focus (µm). Defocus = sample drift − Z; the PSF follows exactly."""

    def initialize(self) -> None:
        _ = self.vm

    def shutdown(self) -> None:
        self._release()

    def set_position_um(self, val: float) -> None:
        self.vm.set_z_um(float(val))

    def get_position_um(self) -> float:
        return self.vm.z_um

    def home(self) -> None:
        self.vm.set_z_um(0.0)

    def stop(self) -> None:
        pass

    def set_origin(self) -> None:
        self.vm.set_z_um(0.0)

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
                limits=(-5.0, 5.0),
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
            raise ValueError(f"ZernikeVectorRad: {value!r} is not a comma-separated list") from exc
        if len(vals) > N_MIRROR_MODES:
            raise ValueError(f"ZernikeVectorRad: at most {N_MIRROR_MODES} modes, got {len(vals)}")
        self.vm.set_mirror(vals)
