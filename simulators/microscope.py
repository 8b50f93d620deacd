"""The virtual microscope: sample + stage + objective + optics + lights + mirror + focus +
camera, frame by frame.

:class:`VirtualMicroscope` holds the whole instrument state. ``render_frame()`` turns
the *current* state into the next camera frame (uint16) and its ground truth, so any
change (laser power, exposure, Z, stage, mirror shape, camera gain) acts physically on the
very next frame. Simulated time advances by the frame interval (max of exposure, readout and
the requested interval); events, drift and photophysics run on that clock, independent
of how fast the host renders.

Light is integrated over each frame's exposure window in wall-clock time
(:mod:`.lights`): ``render_frame((t0, t1))`` gives every source the mean of its power
(times the shutter gate) over ``[t0, t1]``, so a change in mid-exposure counts in
proportion; ``render_frame()`` without a window uses the settings in force now. Loaded and
started sequences (light powers, Z) step once per ``trigger(t)`` (the camera's exposure
start in a sequence acquisition), like TTL-triggered hardware.

The sample is a plane of fields under the XY stage (:mod:`.stage`); the home position
(0, 0) shows the field a fixed-stage microscope shows.

Camera binning (1, 2, 4) sums the charge of k×k sensor pixels before the read-out; the ROI is
in binned pixels. A focus lock (``set_focus_lock``) holds Z at the in-focus Z (the drift at
the simulated time) plus an offset before every frame.

Lights: the lasers excite their dyes (488 → nuclei, 561 → mitochondria, 640 → membrane
in the cell scenes; 640 excites and 405 activates the SMLM dye); the camera records the
sum of everything excited (no emission filter wheel), plus the transmitted lamp, which
forms the label-free image of the same cells. Every frame appends a dose-ledger row:
energy per light source (mJ = mW · ms · 1e-3).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from smartscope.exceptions import InvalidValue

from .camera import CameraConfig, expose
from .lights import LightPath
from .optics import DEFAULT_OBJECTIVE, OBJECTIVES, Objective, Optics, OTFCache
from .samples import CHANNELS, Emitters, FocusDrift, Photophysics, PhotophysicsState
from .scene import CellScene, SMLMScene
from .stage import STAGE_LIMIT_UM, FieldCache, FieldIndex, Piece, cover, field_seed, stage_offset_px

__all__ = [
    "BINNINGS",
    "EXPOSURE_LIMITS_MS",
    "LAMP",
    "LASER_LINES_NM",
    "LIGHT_SOURCES",
    "SCENARIOS",
    "FrameTruth",
    "Scenario",
    "VirtualMicroscope",
]

Scenario = Literal["cells", "lowlight", "events", "smlm", "beads"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)
LASER_LINES_NM: tuple[int, ...] = (405, 488, 561, 640)
LAMP = "lamp"
LIGHT_SOURCES: tuple[str, ...] = (*(str(k) for k in LASER_LINES_NM), LAMP)
Z_TARGET = "z"  # sequence target of the focus stage (light sources are named by LIGHT_SOURCES)
EXPOSURE_LIMITS_MS = (0.01, 60_000.0)  # what the camera accepts (and advertises)
BINNINGS: tuple[int, ...] = (1, 2, 4)  # on-chip binning factors the camera offers

# default light settings per scenario (mW; lamp in mW-equivalent)
_DEFAULT_POWER: dict[str, dict[str, float]] = {
    "cells": {"561": 10.0},
    "lowlight": {"561": 10.0},
    "events": {"561": 10.0},
    "smlm": {"640": 100.0, "405": 2.0},
    "beads": {"640": 5.0},
}

LAMP_PHOTONS_PER_MS_PER_MW = 20.0  # transmitted light, photons/px per ms per mW
BLEACH_PER_MJ = 0.005  # cell dyes: remaining = exp(−k · delivered dose)


@dataclass
class FrameTruth:
    """Ground truth of one simulated frame (look it up by ``frame``).

    Light: ``power_mean_mw[source]`` is the mean power that reached the sample over the
    exposure window (shutter included) and drives photons, photophysics and dose;
    ``power_constant[source]`` is False when it changed inside the window; ``power_mw`` are
    the sources' setpoints at the end of the window (shutter not applied). Times are
    wall-clock epoch seconds (``exposure_start_s == exposure_end_s`` for a frame rendered
    without a real exposure). ``stage_x_um, stage_y_um``: the stage position, the world
    coordinate of the sensor's top-left corner.
    """

    frame: int
    t_s: float
    scenario: str
    exposure_ms: float
    z_um: float
    focus_drift_um: float
    defocus_um: float
    zernike_rad: tuple[float, ...]
    power_mw: dict[str, float]
    dose_mj: dict[str, float]
    roi: tuple[int, int, int, int]
    emitters: dict[str, np.ndarray] | None = None  # SMLM/beads: on emitters (nm, photons)
    events: list[dict[str, Any]] = field(default_factory=list)
    bleach_remaining: dict[str, float] = field(default_factory=dict)
    clean: np.ndarray | None = None  # expected photons per pixel (ROI), recent frames only
    exposure_start_s: float = 0.0
    exposure_end_s: float = 0.0
    power_mean_mw: dict[str, float] = field(default_factory=dict)
    power_constant: dict[str, bool] = field(default_factory=dict)
    sequenced: dict[str, float] = field(default_factory=dict)  # values stepped at this exposure start
    shutter_open: bool = True  # light gate at the end of the exposure (shutter open or auto-shutter)
    stage_x_um: float = 0.0
    stage_y_um: float = 0.0
    objective: str = DEFAULT_OBJECTIVE.label
    pixel_size_um: float = DEFAULT_OBJECTIVE.pixel_size_um

    def summary(self) -> dict[str, Any]:
        """JSON-friendly scalars (no arrays)."""
        return {
            "frame": self.frame,
            "t_s": self.t_s,
            "scenario": self.scenario,
            "exposure_ms": self.exposure_ms,
            "exposure_start_s": self.exposure_start_s,
            "exposure_end_s": self.exposure_end_s,
            "z_um": self.z_um,
            "focus_drift_um": self.focus_drift_um,
            "defocus_um": self.defocus_um,
            "zernike_rad": list(self.zernike_rad),
            "power_mw": dict(self.power_mw),
            "power_mean_mw": dict(self.power_mean_mw),
            "power_constant": dict(self.power_constant),
            "sequenced": dict(self.sequenced),
            "shutter_open": self.shutter_open,
            "dose_mj": dict(self.dose_mj),
            "roi": list(self.roi),
            "stage_x_um": self.stage_x_um,
            "stage_y_um": self.stage_y_um,
            "objective": self.objective,
            "pixel_size_um": self.pixel_size_um,
            "n_emitters_on": None if self.emitters is None else len(self.emitters["x_nm"]),
            "bleach_remaining": dict(self.bleach_remaining),
            "events": self.events,
        }


@dataclass
class _Field:
    """One field of the sample plane: its scene and what its rendering caches."""

    index: FieldIndex
    cells: CellScene | None = None
    smlm: SMLMScene | None = None
    lf_cache: tuple[tuple[str, float], np.ndarray] | None = None
    last_gt: dict[str, np.ndarray] | None = None


@dataclass
class _Sequence:
    """A loaded hardware sequence; ``index`` = the step the next trigger applies."""

    values: tuple[float, ...]
    running: bool = False
    index: int = 0


_EMPTY_GT_KEYS = ("frame", "emitter_id", "x_nm", "y_nm", "z_nm", "photons", "on_fraction")


def _field_code(index: FieldIndex) -> int:
    """High bits of emitter ids outside the home field (0 at home; fields within ±16383)."""
    ix, iy = index
    return ((ix & 0x7FFF) << 15 | (iy & 0x7FFF)) << 32


class VirtualMicroscope:
    """A complete simulated widefield microscope. Thread-safe (one lock around state)."""

    def __init__(
        self,
        scenario: Scenario = "cells",
        seed: int = 0,
        sensor_px: int = 512,
        pixel_size_um: float = 0.1,
        camera: CameraConfig | None = None,
        duration_s: float = 60.0,
        drift: FocusDrift | None = None,
        history_frames: int = 2000,
        clean_history_frames: int = 32,
        clean_history_mb: float = 128.0,
        label_free_mode: Literal["phase", "brightfield"] = "phase",
        lazy: bool = False,
        field_cache_mb: float = 512.0,
    ) -> None:
        self._lock = threading.RLock()
        self.objective: Objective = (
            DEFAULT_OBJECTIVE
            if pixel_size_um == DEFAULT_OBJECTIVE.pixel_size_um
            else DEFAULT_OBJECTIVE.model_copy(
                update={"label": f"custom {pixel_size_um:g} µm", "pixel_size_um": float(pixel_size_um)}
            )
        )
        self.camera = camera or CameraConfig()
        self.history_frames = history_frames
        self.clean_history_frames = clean_history_frames
        self.clean_history_mb = clean_history_mb
        self.field_cache_mb = field_cache_mb
        self.label_free_mode = label_free_mode
        self.duration_s = duration_s
        self.interval_ms = 0.0
        self.readout_ms_full = 10.0  # full-sensor readout (sCMOS 2048 rows at 100 fps)
        self.z_um = 0.0
        self.stage_xy_um: tuple[float, float] = (0.0, 0.0)
        self.zernike_rad: tuple[float, ...] = ()
        self._drift_override = drift
        self.drift = drift or FocusDrift()
        self._scenario: str = scenario
        self._seed = int(seed)
        self._sensor_px = int(sensor_px)
        self.roi: tuple[int, int, int, int] | None = None  # in binned pixels, as Micro-Manager's
        self.binning = 1
        self.focus_lock_um: float | None = None  # offset a running focus lock holds (None: off)
        self.light = LightPath(LIGHT_SOURCES, _DEFAULT_POWER.get(scenario, {}))
        self.shutter_open = False  # the illumination shutter, closed at rest ...
        self.auto_shutter = True  # ... and opened for every exposure while the core's AutoShutter is on
        self._sequences: dict[str, _Sequence] = {}
        self._cover_key: tuple[int, int, int] | None = None
        self._cover: list[Piece] = []
        self._stepped: dict[str, float] = {}
        self.frame = 0
        self.t_s = 0.0
        self.cells: CellScene | None = None
        self.smlm: SMLMScene | None = None
        self.brightness_scale = 1.0
        self._dirty = True
        self._world_dirty = False
        if not lazy:
            self._ensure()

    def _default_powers(self) -> None:
        t = time.time()
        defaults = _DEFAULT_POWER[self._scenario]
        for src in LIGHT_SOURCES:
            self.light.set_power(src, defaults.get(src, 0.0), t)

    @property
    def power_mw(self) -> dict[str, float]:
        """Current power setpoint of every light source (mW; shutter not applied)."""
        return self.light.setpoints()

    @property
    def pixel_size_um(self) -> float:
        """Camera pixel in the sample plane at the current objective."""
        return self.objective.pixel_size_um

    def _ensure(self) -> None:
        """Build the sample if scenario/seed/size changed since the last frame."""
        with self._lock:
            if self._dirty:
                self._build()
                self._dirty = False
                self._world_dirty = False
            elif self._world_dirty:
                self._build_world()
                self._world_dirty = False

    # ------------------------------------------------------------------ configuration

    def _build(self) -> None:
        """(Re)create the sample for the current scenario/seed/size; reset time."""
        if self._scenario not in SCENARIOS:
            raise InvalidValue(f"scenario must be one of {SCENARIOS}, got {self._scenario!r}")
        if not 16 <= self._sensor_px <= 4096:
            raise InvalidValue(f"sensor_px={self._sensor_px} must be within 16..4096")
        self._build_world()
        s = self._scenario
        self.drift = self._drift_override or (
            FocusDrift(rate_um_per_s=0.002, wander_um=0.05, seed=self._seed + 11)
            if s == "events"
            else FocusDrift()
        )
        self.rng = np.random.default_rng(np.random.SeedSequence([self._seed, 0xC0FFEE]))
        self.frame = 0
        self.t_s = 0.0
        self.dose_total_mj: dict[str, float] = dict.fromkeys(LIGHT_SOURCES, 0.0)
        self.ledger: list[dict[str, float]] = []
        self.history: OrderedDict[int, FrameTruth] = OrderedDict()
        self._clean_frames: deque[int] = deque()
        if self.roi is not None:
            x, y, w, h = self.roi
            if x + w > self.binned_px or y + h > self.binned_px:
                self.roi = None

    def _build_world(self) -> None:
        """A fresh sample plane (scenario, seed, sensor size, objective); keeps the clock."""
        s = self._scenario
        n = self._sensor_px
        self.brightness_scale = 0.05 if s == "lowlight" else 1.0
        self._otf_cache = OTFCache()  # shared by every field: same optics, same frame size
        self._field_dose: dict[FieldIndex, dict[str, float]] = {}
        if s in ("cells", "lowlight", "events"):
            per_field_mb = n * n * 4 * 12 / 2**20  # geometry + cached convolutions
            max_fields = min(64, max(4, int(self.field_cache_mb / per_field_mb)))
        else:
            max_fields = 1 << 20  # emitters are small; their photophysics must persist
        self._fields: FieldCache[_Field] = FieldCache(self._make_field, max_fields)
        home = self._fields.get((0, 0))
        self.cells = home.cells
        self.smlm = home.smlm

    def _make_field(self, index: FieldIndex) -> _Field:
        """Build one field from the seed and its index (home = the seed itself)."""
        s = self._scenario
        seed = field_seed(self._seed, *index)
        shape = (self._sensor_px, self._sensor_px)
        obj = self.objective
        px = obj.pixel_size_um
        if s in ("cells", "lowlight", "events"):
            cells = CellScene(
                shape,
                px,
                seed=seed,
                na=obj.na,
                n_immersion=obj.n_immersion,
                events=(s == "events"),
                duration_s=self.duration_s,
                event_rate_per_s=0.1,
            )
            cells.otf_cache = self._otf_cache
            return _Field(index, cells=cells)
        pp = (
            Photophysics(start_on=False)  # dye already pumped to the dark state
            if s == "smlm"
            else Photophysics(
                k_act_spont_per_s=0.0,
                k_act_per_s_per_mw405=0.0,
                k_off_per_s_per_mw=0.0,
                k_bleach_per_s_per_mw=0.0005,
                photons_per_ms_per_mw=20.0,
            )
        )
        sc = SMLMScene(
            shape,
            px,
            seed=seed,
            structure="mixed",
            photophysics=pp,
            camera=self.camera,
            optics=Optics(wavelength_nm=670.0, pixel_size_um=px, na=obj.na, n_immersion=obj.n_immersion),
        )
        if s == "beads":
            rng = np.random.default_rng(seed + 3)
            # sparse beads on a jittered 32-px lattice (isolated PSFs for AO / focus)
            nm = px * 1000
            gy, gx = np.meshgrid(
                np.arange(16, shape[0] - 15, 32), np.arange(16, shape[1] - 15, 32), indexing="ij"
            )
            n = gy.size
            sc.emitters = Emitters(
                x_nm=(gx.ravel() + rng.uniform(-4, 4, n)) * nm,
                y_nm=(gy.ravel() + rng.uniform(-4, 4, n)) * nm,
                z_nm=np.zeros(n),
                structure_id=np.arange(n, dtype=np.int32),
            )
            sc.state = PhotophysicsState.initial(n, pp)
            sc.background_per_ms_per_mw = 0.01
        return _Field(index, smlm=sc)

    def configure(
        self,
        scenario: str | None = None,
        seed: int | None = None,
        sensor_px: int | None = None,
        duration_s: float | None = None,
    ) -> None:
        """Change scenario / seed / sensor size: the sample is rebuilt before the next frame
        and the simulated clock and frame counter restart at 0. A new scenario also loads
        its default light settings."""
        with self._lock:
            if scenario is not None:
                if scenario not in SCENARIOS:
                    raise InvalidValue(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
                self._scenario = scenario
                self._default_powers()
            if seed is not None:
                self._seed = int(seed)
            if sensor_px is not None:
                self._sensor_px = int(sensor_px)
            if sensor_px is not None and not 16 <= int(sensor_px) <= 4096:
                raise InvalidValue(f"sensor_px={sensor_px} must be within 16..4096")
            if duration_s is not None:
                self.duration_s = float(duration_s)
            self._dirty = True
            self.frame = 0
            self.t_s = 0.0

    @property
    def scenario(self) -> str:
        return self._scenario

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def sensor_px(self) -> int:
        return self._sensor_px

    @property
    def binned_px(self) -> int:
        """Sensor edge in binned pixels (what a full frame is wide at the current binning)."""
        return self._sensor_px // self.binning

    def set_power(self, source: str | int, power_mw: float, at_s: float | None = None) -> None:
        """Set a light source's power (mW at the sample) from wall-clock time ``at_s`` (now)."""
        key = str(source)
        if key not in self.light.power:
            raise InvalidValue(f"light source must be one of {list(self.light.power)}, got {key!r}")
        if not math.isfinite(power_mw) or power_mw < 0:
            raise InvalidValue(f"power_mw={power_mw} must be finite and >= 0")
        with self._lock:
            self.light.set_power(key, float(power_mw), time.time() if at_s is None else at_s)

    def set_shutter(self, open_: bool, at_s: float | None = None) -> None:
        """Open or close the illumination shutter (in front of every light source)."""
        with self._lock:
            self.shutter_open = bool(open_)
            self.light.set_gate(self.shutter_open or self.auto_shutter, time.time() if at_s is None else at_s)

    def set_auto_shutter(self, on: bool, at_s: float | None = None) -> None:
        """Follow the core's AutoShutter: when on, the shutter opens for every exposure."""
        with self._lock:
            self.auto_shutter = bool(on)
            self.light.set_gate(self.shutter_open or self.auto_shutter, time.time() if at_s is None else at_s)

    @property
    def light_gate_open(self) -> bool:
        """Whether light reaches the sample during exposures (shutter open or auto-shutter)."""
        return self.light.gate.latest > 0

    def set_exposure_ms(self, exposure_ms: float) -> None:
        lo, hi = EXPOSURE_LIMITS_MS
        if not lo <= exposure_ms <= hi:
            raise InvalidValue(f"exposure_ms={exposure_ms} must be within {lo:g}..{hi:g}")
        with self._lock:
            self.camera = self.camera.model_copy(update={"exposure_ms": float(exposure_ms)})

    @property
    def exposure_ms(self) -> float:
        return self.camera.exposure_ms

    def set_camera(self, **updates: Any) -> None:
        """Replace camera fields (validated), e.g. ``kind='emccd', em_gain=300``."""
        with self._lock:
            self.camera = CameraConfig.model_validate({**self.camera.model_dump(), **updates})
            if self.smlm is not None:
                self.smlm.camera = self.camera

    def set_binning(self, binning: int) -> None:
        """On-chip binning: each frame pixel sums the charge of ``binning``² sensor pixels
        (one read-out, one read noise). The ROI is cleared, as Micro-Manager cameras do."""
        k = int(binning)
        if k not in BINNINGS or self._sensor_px % k:
            raise InvalidValue(
                f"binning={binning} must be one of {BINNINGS} and divide the {self._sensor_px}-px sensor"
            )
        with self._lock:
            if k != self.binning:
                self.binning = k
                self.roi = None

    def in_focus_z_um(self) -> float:
        """The Z at which the sample is in focus now (the focus drift at the simulated time)."""
        with self._lock:
            return float(self.drift.offset_um(self.t_s))

    def set_focus_lock(self, offset_um: float | None) -> None:
        """Engage (an offset in µm: Z is held at the in-focus Z + offset before every frame)
        or release (None) a continuous focus lock that follows the drift."""
        if offset_um is not None and not math.isfinite(offset_um):
            raise InvalidValue(f"focus lock offset {offset_um} must be finite")
        with self._lock:
            self.focus_lock_um = None if offset_um is None else float(offset_um)

    def set_z_um(self, z_um: float) -> None:
        if not math.isfinite(z_um) or abs(z_um) > 1000:
            raise InvalidValue(f"z_um={z_um} must be finite and within ±1000")
        with self._lock:
            self.z_um = float(z_um)

    def set_stage_xy_um(self, x_um: float, y_um: float) -> None:
        """Move the XY stage: (x, y) = world coordinate of the sensor's top-left corner (µm)."""
        for name, v in (("x_um", x_um), ("y_um", y_um)):
            if not math.isfinite(v) or abs(v) > STAGE_LIMIT_UM:
                raise InvalidValue(f"stage {name}={v} must be finite and within ±{STAGE_LIMIT_UM:g}")
        with self._lock:
            self.stage_xy_um = (float(x_um), float(y_um))

    def set_objective(self, label: str) -> None:
        """Swing in an objective from :data:`OBJECTIVES` by its label: the camera pixel in the
        sample plane and the NA change, so the sample plane is rebuilt at the new pixel size
        (same scenario and seed; the clock and frame counter keep running)."""
        hit = next((o for o in OBJECTIVES if o.label == label), None)
        if hit is None:
            raise InvalidValue(f"objective must be one of {[o.label for o in OBJECTIVES]}, got {label!r}")
        with self._lock:
            if hit != self.objective:
                self.objective = hit
                self._world_dirty = True

    def set_mirror(self, zernike_rad: Sequence[float]) -> None:
        """Deformable-mirror shape: amplitudes of Noll modes j = 1, 2, … in rad RMS."""
        vals = tuple(float(v) for v in zernike_rad)
        if any(not math.isfinite(v) or abs(v) > 10 for v in vals):
            raise InvalidValue(f"zernike_rad={vals}: amplitudes must be finite and within ±10 rad")
        with self._lock:
            self.zernike_rad = vals

    def set_drift(self, **updates: float) -> None:
        """Change the focus drift (fields of :class:`FocusDrift`); keeps its seed."""
        with self._lock:
            base = self.drift.model_dump()
            self.drift = FocusDrift.model_validate({**base, **updates})
            self._drift_override = self.drift

    def set_roi(self, x: int, y: int, w: int, h: int) -> None:
        """A sub-array in binned pixels (x, y, width, height), as Micro-Manager's ``setROI``."""
        n = self.binned_px
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > n or y + h > n:
            raise InvalidValue(
                f"ROI ({x}, {y}, {w}, {h}) outside the {n}×{n} sensor (binning {self.binning})"
            )
        with self._lock:
            self.roi = (int(x), int(y), int(w), int(h))

    def clear_roi(self) -> None:
        with self._lock:
            self.roi = None

    def frame_shape(self) -> tuple[int, int]:
        if self.roi is None:
            return (self.binned_px, self.binned_px)
        return (self.roi[3], self.roi[2])

    def frame_interval_ms(self) -> float:
        """Simulated time between frame starts: max(exposure, readout of the rows, interval).

        Readout: sCMOS rolling shutter 2048 rows in 10 ms (100 fps full frame); EMCCD
        frame transfer 512 rows in 10.75 ms (93 fps), the reference EMCCD.
        """
        rows = self.frame_shape()[0]
        emccd = self.camera.kind == "emccd"
        readout = 10.75 * rows / 512 if emccd else self.readout_ms_full * rows / 2048
        return max(self.exposure_ms, readout, self.interval_ms)

    # ------------------------------------------------------------------ hardware sequences

    def _check_target(self, target: str) -> str:
        key = str(target)
        if key != Z_TARGET and key not in self.light.power:
            raise InvalidValue(f"sequence target must be {Z_TARGET!r} or one of {LIGHT_SOURCES}, got {key!r}")
        return key

    def load_sequence(self, target: str, values: Sequence[float]) -> None:
        """Load a frame-locked sequence for a light source's power (mW) or ``"z"`` (µm)."""
        key = self._check_target(target)
        vals = tuple(float(v) for v in values)
        if not vals:
            raise InvalidValue(f"sequence for {key!r} is empty")
        if key == Z_TARGET and any(not math.isfinite(v) or abs(v) > 1000 for v in vals):
            raise InvalidValue(f"sequence for {key!r}: positions must be finite and within ±1000 µm")
        if key != Z_TARGET and any(not math.isfinite(v) or v < 0 for v in vals):
            raise InvalidValue(f"sequence for {key!r}: powers must be finite and >= 0 mW")
        with self._lock:
            self._sequences[key] = _Sequence(vals)

    def start_sequence(self, target: str) -> None:
        """Arm a loaded sequence: the next trigger applies its first value."""
        key = self._check_target(target)
        with self._lock:
            seq = self._sequences.get(key)
            if seq is None:
                raise RuntimeError(f"no sequence loaded for {key!r}")
            seq.running = True
            seq.index = 0

    def stop_sequence(self, target: str) -> None:
        """Disarm a sequence; the last value applied stays in force."""
        key = self._check_target(target)
        with self._lock:
            seq = self._sequences.get(key)
            if seq is not None:
                seq.running = False

    def sequence_running(self, target: str) -> bool:
        seq = self._sequences.get(self._check_target(target))
        return seq is not None and seq.running

    def trigger(self, at_s: float) -> dict[str, float]:
        """One hardware trigger (a camera exposure start at wall time ``at_s``): every running
        sequence applies its next value (step ``k mod len``). Returns what was applied; the
        next rendered frame records it in ``FrameTruth.sequenced``."""
        applied: dict[str, float] = {}
        with self._lock:
            for key, seq in self._sequences.items():
                if not seq.running:
                    continue
                v = seq.values[seq.index % len(seq.values)]
                seq.index += 1
                if key == Z_TARGET:
                    self.z_um = v
                else:
                    self.light.set_power(key, v, at_s)
                applied[key] = v
            self._stepped = applied
        return applied

    # ------------------------------------------------------------------ rendering

    def _pieces(self) -> list[Piece]:
        key = (*stage_offset_px(*self.stage_xy_um, self.pixel_size_um), self._sensor_px)
        if self._cover_key != key:
            self._cover_key, self._cover = key, cover(*key)
        return self._cover

    def _dose_of(self, index: FieldIndex) -> dict[str, float]:
        d = self._field_dose.get(index)
        if d is None:
            d = self._field_dose[index] = dict.fromkeys(LIGHT_SOURCES, 0.0)
        return d

    def _label_free(self, fld: _Field, t_s: float, defocus_um: float) -> np.ndarray:
        """Transmitted-light image; it blurs with the same defocus as the fluorescence."""
        assert fld.cells is not None
        if fld.cells.events:
            return fld.cells.label_free(self.label_free_mode, t_s, defocus_um)
        key = (self.label_free_mode, defocus_um)
        if fld.lf_cache is None or fld.lf_cache[0] != key:
            fld.lf_cache = (key, fld.cells.label_free(self.label_free_mode, defocus_um=defocus_um))
        return fld.lf_cache[1]

    @property
    def needs_prepare(self) -> bool:
        """Whether the sample must be (re)built before the next frame (see :meth:`prepare`)."""
        return self._dirty or self._world_dirty

    def prepare(self) -> None:
        """Build the sample if it must be (re)built and warm the optics caches for it, so the
        next frame renders at steady-state speed (a camera calls this while it arms)."""
        with self._lock:
            if self._dirty or self._world_dirty:
                self._ensure()
                # every light source at once: each channel's optics is cached, whichever is on later
                photons, _ = self._photons(False, dict.fromkeys(LIGHT_SOURCES, 1.0), self._pieces())
                # the camera's maps and noise tables for this frame shape (a throwaway noise stream)
                expose(self.camera, photons[: self.binned_px, : self.binned_px], np.random.default_rng(0))
                if self.smlm is not None:  # PSF stamps for every depth the emitters sit at
                    tab = self.smlm.stamps(self.zernike_rad)  # every field renders with these
                    focus = self.z_um - float(self.drift.offset_um(self.t_s))
                    for piece in self._pieces():
                        em = self._fields.get(piece.field).smlm.emitters  # type: ignore[union-attr]
                        for zi in np.unique(np.rint((em.z_nm * 1e-3 - focus) / tab.dz_um)):
                            tab.slice(float(zi) * tab.dz_um)

    def expected_photons(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Noise-free photons per pixel (full sensor) for the current state, plus extras.

        Does not advance time or photophysics (SMLM: uses the emitters on in the last frame).
        """
        with self._lock:
            self._ensure()
            p, _ = self.light.received(0.0, 0.0)
            return self._photons(False, p, self._pieces())

    def _photons(
        self, advance: bool, p: dict[str, float], pieces: list[Piece]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        t = self.t_s
        exp = self.exposure_ms
        drift = float(self.drift.offset_um(t))
        # sample-plane offset from the focal plane; 10 nm steps keep the OTF cache useful
        defocus = round((drift - self.z_um) / 0.01) * 0.01
        extra: dict[str, Any] = {"drift_um": drift, "defocus_um": defocus}
        shape = (self._sensor_px, self._sensor_px)
        if self._scenario in ("cells", "lowlight", "events"):
            img = np.zeros(shape, np.float32)
            rem: dict[str, float] = {}
            for k, piece in enumerate(pieces):
                fld = self._fields.get(piece.field)
                cells = fld.cells
                assert cells is not None
                region = None if piece.whole else (piece.field_rows, piece.field_cols)
                out = img if piece.whole else img[piece.fov_rows, piece.fov_cols]
                dose = self._dose_of(piece.field)
                for ch, (ex, _em) in CHANNELS.items():
                    r = math.exp(-BLEACH_PER_MJ * dose[str(ex)])
                    if k == 0:
                        rem[ch] = r
                    pw = p[str(ex)] * self.brightness_scale
                    if pw > 0:
                        out += cells.photons(
                            ch, pw, exp, t, defocus, self.zernike_rad, remaining=r, region=region
                        )
                if p[LAMP] > 0:
                    lf = self._label_free(fld, t, defocus)
                    out += (lf if region is None else lf[region]) * (
                        LAMP_PHOTONS_PER_MS_PER_MW * p[LAMP] * exp
                    )
            extra["bleach_remaining"] = rem
            extra["events"] = self._event_states(t, pieces)
            return img, extra
        home = self._fields.get((0, 0)).smlm
        assert home is not None
        gts: list[dict[str, np.ndarray]] = []
        shown: list[dict[str, np.ndarray]] = []
        a = self.pixel_size_um * 1000.0
        for piece in pieces:
            fld = self._fields.get(piece.field)
            sc = fld.smlm
            assert sc is not None
            if advance:
                gt = sc.advance(p["405"], p["640"], dt_s=exp * 1e-3)
                gt["frame"][:] = self.frame
                fld.last_gt = gt
            else:
                gt = fld.last_gt or {k: np.zeros(0) for k in _EMPTY_GT_KEYS}
            if piece.whole:
                gts.append(gt)
                shown.append(gt)
                continue
            # into field-of-view coordinates; light from just outside still spills in
            moved = dict(gt)
            moved["x_nm"] = gt["x_nm"] + piece.dx_px * a
            moved["y_nm"] = gt["y_nm"] + piece.dy_px * a
            moved["emitter_id"] = gt["emitter_id"] + _field_code(piece.field)
            n = self._sensor_px * a
            margin = 16 * a
            x, y = moved["x_nm"], moved["y_nm"]
            near = (x > -margin) & (x < n + margin) & (y > -margin) & (y < n + margin)
            inside = (x >= 0) & (x < n) & (y >= 0) & (y < n)
            gts.append({k: v[near] for k, v in moved.items()})
            shown.append({k: v[inside] for k, v in moved.items()})
        if len(gts) == 1:
            render_gt, truth_gt = gts[0], shown[0]
        else:
            render_gt = {k: np.concatenate([g[k] for g in gts]) for k in gts[0]}
            truth_gt = {k: np.concatenate([g[k] for g in shown]) for k in shown[0]}
        img = home.photons_image(render_gt, p["640"], self.z_um - drift, self.zernike_rad, exp)
        extra["emitters"] = truth_gt
        return img, extra

    def _event_states(self, t_s: float, pieces: list[Piece]) -> list[dict[str, Any]]:
        out = []
        px = self.pixel_size_um
        n = self._sensor_px
        for piece in pieces:
            cells = self._fields.get(piece.field).cells
            if cells is None:
                continue
            for row in cells.event_rows():
                phase = (
                    "before"
                    if t_s < float(row["onset_s"])
                    else ("constricting" if t_s < float(row["fission_s"]) else "divided")
                )
                r: dict[str, Any] = {
                    **row,
                    "phase": phase,
                    "field_ix": piece.field[0],
                    "field_iy": piece.field[1],
                }
                if not piece.whole:
                    y = float(row["y_px"]) + piece.dy_px
                    x = float(row["x_px"]) + piece.dx_px
                    if not (0 <= y < n and 0 <= x < n):
                        continue
                    r.update(y_px=y, x_px=x, y_um=y * px, x_um=x * px)
                out.append(r)
        return out

    def render_frame(
        self, exposure_window_s: tuple[float, float] | None = None
    ) -> tuple[np.ndarray, FrameTruth]:
        """Render the next frame from the current state; advance the clock by one frame.

        ``exposure_window_s`` = (start, end) in wall-clock epoch seconds: the light of every
        source is averaged over it. None: a frame without a real exposure, lit by the
        settings in force now (its window is the rendering moment).
        """
        with self._lock:
            self._ensure()
            if exposure_window_s is None:
                t_now = time.time()
                t0, t1 = t_now, t_now
            else:
                t0, t1 = (float(v) for v in exposure_window_s)
            if self.focus_lock_um is not None:  # a running focus lock corrects before the exposure
                self.z_um = float(self.drift.offset_um(self.t_s)) + self.focus_lock_um
            p_mean, constant = self.light.received(t0, t1)
            pieces = self._pieces()
            photons, extra = self._photons(True, p_mean, pieces)
            binning = self.binning
            x, y, w, h = self.roi or (0, 0, self.binned_px, self.binned_px)
            if binning > 1:  # on-chip binning: the charge of k×k pixels in one read-out
                nb = self.binned_px
                photons = photons.reshape(nb, binning, nb, binning).sum(axis=(1, 3))
            if self.roi is not None:
                photons = np.ascontiguousarray(photons[y : y + h, x : x + w])
            frame = expose(
                self.camera,
                photons,
                self.rng,
                self.exposure_ms,
                roi=None if self.roi is None else self.roi,
            )
            exp = self.exposure_ms
            dose = {k: v * exp * 1e-3 for k, v in p_mean.items()}
            for k, v in dose.items():
                self.dose_total_mj[k] += v
            for piece in pieces:
                fd = self._dose_of(piece.field)
                for k, v in dose.items():
                    fd[k] += v
            sx, sy = self.stage_xy_um
            self.ledger.append(
                {
                    "frame": float(self.frame),
                    "t_s": self.t_s,
                    "exposure_ms": exp,
                    **{f"dose_mj_{k}": v for k, v in dose.items()},
                    "stage_x_um": sx,
                    "stage_y_um": sy,
                }
            )
            setpoints = {s: tl.value_at(t1) for s, tl in self.light.power.items()}
            truth = FrameTruth(
                frame=self.frame,
                t_s=self.t_s,
                scenario=self._scenario,
                exposure_ms=exp,
                z_um=self.z_um,
                focus_drift_um=extra["drift_um"],
                defocus_um=extra["defocus_um"],
                zernike_rad=self.zernike_rad,
                power_mw=setpoints if exposure_window_s is not None else self.light.setpoints(),
                dose_mj=dose,
                roi=(x, y, w, h),
                emitters=extra.get("emitters"),
                events=extra.get("events", []),
                bleach_remaining=extra.get("bleach_remaining", {}),
                clean=photons,
                exposure_start_s=t0,
                exposure_end_s=t1,
                power_mean_mw=p_mean,
                power_constant=constant,
                sequenced=self._stepped,
                shutter_open=(
                    self.light.gate.value_at(t1) > 0
                    if exposure_window_s is not None
                    else self.light_gate_open
                ),
                stage_x_um=sx,
                stage_y_um=sy,
                objective=self.objective.label,
                pixel_size_um=self.pixel_size_um * binning,
            )
            self._stepped = {}
            self.history[self.frame] = truth
            # bounded memory: drop clean images beyond the recent window, rows beyond history
            per_frame_mb = photons.nbytes / 2**20
            keep = max(1, min(self.clean_history_frames, int(self.clean_history_mb / per_frame_mb)))
            self._clean_frames.append(self.frame)
            while len(self._clean_frames) > keep:
                old = self._clean_frames.popleft()
                if old in self.history:
                    self.history[old].clean = None
            while len(self.history) > self.history_frames:
                self.history.popitem(last=False)
            if len(self.ledger) > 10 * self.history_frames:
                del self.ledger[: len(self.ledger) - 10 * self.history_frames]
            self.frame += 1
            self.t_s += self.frame_interval_ms() * 1e-3
            return frame, truth

    def truth(self, frame: int) -> FrameTruth:
        """Ground truth of a rendered frame (within the last ``history_frames``)."""
        with self._lock:
            hit = self.history.get(int(frame))
        if hit is None:
            raise KeyError(
                f"frame {frame} not in ground-truth history "
                f"(kept: last {self.history_frames} frames, next frame {self.frame})"
            )
        return hit

    def events_truth(self, field: FieldIndex = (0, 0)) -> list[dict[str, Any]]:
        """Every scheduled event of one field (default: home) with onset/fission times.

        Positions (``x_px``, ``y_um``, …) are in that field's own coordinates; the field's
        pixel (0, 0) sits at stage position ``(ix, iy) · sensor_px · pixel_size_um``.
        """
        self._ensure()
        cells = self._fields.get(tuple(field)).cells  # type: ignore[arg-type]
        if cells is None:
            return []
        return cells.event_rows()
