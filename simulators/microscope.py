"""The virtual microscope: sample + optics + lights + mirror + focus + camera, frame by frame.

:class:`VirtualMicroscope` holds the whole instrument state. ``render_frame()`` turns
the *current* state into the next camera frame (uint16) and its ground truth, so any
change (laser power, exposure, Z, mirror shape, camera gain) acts physically on the very
next frame. Simulated time advances by the frame interval (max of exposure, readout and
the requested interval); events, drift and photophysics run on that clock, independent
of how fast the host renders.

Lights: the lasers excite their dyes (488 → nuclei, 561 → mitochondria, 640 → membrane
in the cell scenes; 640 excites and 405 activates the SMLM dye); the camera records the
sum of everything excited (no emission filter wheel), plus the transmitted lamp, which
forms the label-free image of the same cells. Every frame appends a dose-ledger row:
energy per light source (mJ = mW · ms · 1e-3).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from .camera import CameraConfig, expose
from .samples import CHANNELS, FocusDrift, Photophysics
from .scene import CellScene, SMLMScene

__all__ = [
    "LASER_LINES_NM",
    "SCENARIOS",
    "FrameTruth",
    "Scenario",
    "VirtualMicroscope",
]

Scenario = Literal["cells", "lowlight", "events", "smlm", "beads"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)
LASER_LINES_NM: tuple[int, ...] = (405, 488, 561, 640)
LAMP = "lamp"

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
    """Ground truth of one simulated frame (look it up by ``frame``)."""

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

    def summary(self) -> dict[str, Any]:
        """JSON-friendly scalars (no arrays)."""
        return {
            "frame": self.frame,
            "t_s": self.t_s,
            "scenario": self.scenario,
            "exposure_ms": self.exposure_ms,
            "z_um": self.z_um,
            "focus_drift_um": self.focus_drift_um,
            "defocus_um": self.defocus_um,
            "zernike_rad": list(self.zernike_rad),
            "power_mw": dict(self.power_mw),
            "dose_mj": dict(self.dose_mj),
            "roi": list(self.roi),
            "n_emitters_on": None if self.emitters is None else len(self.emitters["x_nm"]),
            "bleach_remaining": dict(self.bleach_remaining),
            "events": self.events,
        }


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
    ) -> None:
        self._lock = threading.RLock()
        self.pixel_size_um = pixel_size_um
        self.camera = camera or CameraConfig()
        self.history_frames = history_frames
        self.clean_history_frames = clean_history_frames
        self.clean_history_mb = clean_history_mb
        self.label_free_mode = label_free_mode
        self.duration_s = duration_s
        self.interval_ms = 0.0
        self.readout_ms_full = 10.0  # full-sensor readout (sCMOS 2048 rows at 100 fps)
        self.z_um = 0.0
        self.zernike_rad: tuple[float, ...] = ()
        self._drift_override = drift
        self.drift = drift or FocusDrift()
        self._scenario: str = scenario
        self._seed = int(seed)
        self._sensor_px = int(sensor_px)
        self.roi: tuple[int, int, int, int] | None = None
        self.power_mw: dict[str, float] = {}
        self._default_powers()
        self.frame = 0
        self.t_s = 0.0
        self.cells: CellScene | None = None
        self.smlm: SMLMScene | None = None
        self.brightness_scale = 1.0
        self._dirty = True
        if not lazy:
            self._ensure()

    def _default_powers(self) -> None:
        self.power_mw = {str(k): 0.0 for k in LASER_LINES_NM}
        self.power_mw[LAMP] = 0.0
        self.power_mw.update(_DEFAULT_POWER[self._scenario])

    def _ensure(self) -> None:
        """Build the sample if scenario/seed/size changed since the last frame."""
        with self._lock:
            if self._dirty:
                self._build()
                self._dirty = False

    # ------------------------------------------------------------------ configuration

    def _build(self) -> None:
        """(Re)create the sample for the current scenario/seed/sensor size; reset time."""
        if self._scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self._scenario!r}")
        if not 16 <= self._sensor_px <= 4096:
            raise ValueError(f"sensor_px={self._sensor_px} must be within 16..4096")
        shape = (self._sensor_px, self._sensor_px)
        s = self._scenario
        self.cells = None
        self.smlm = None
        if s in ("cells", "lowlight", "events"):
            self.cells = CellScene(
                shape,
                self.pixel_size_um,
                seed=self._seed,
                events=(s == "events"),
                duration_s=self.duration_s,
                event_rate_per_s=0.1,
            )
            if s == "lowlight":
                self.brightness_scale = 0.05
            else:
                self.brightness_scale = 1.0
        else:
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
            structure: Literal["mixed", "clusters"] = "mixed"
            self.smlm = SMLMScene(
                shape,
                self.pixel_size_um,
                seed=self._seed,
                structure=structure,
                photophysics=pp,
                camera=self.camera,
            )
            if s == "beads":
                from .samples import Emitters

                rng = np.random.default_rng(self._seed + 3)
                # sparse beads on a jittered 32-px lattice (isolated PSFs for AO / focus)
                nm = self.pixel_size_um * 1000
                gy, gx = np.meshgrid(
                    np.arange(16, shape[0] - 15, 32), np.arange(16, shape[1] - 15, 32), indexing="ij"
                )
                n = gy.size
                self.smlm.emitters = Emitters(
                    x_nm=(gx.ravel() + rng.uniform(-4, 4, n)) * nm,
                    y_nm=(gy.ravel() + rng.uniform(-4, 4, n)) * nm,
                    z_nm=np.zeros(n),
                    structure_id=np.arange(n, dtype=np.int32),
                )
                from .samples import PhotophysicsState

                self.smlm.state = PhotophysicsState.initial(n, pp)
                self.smlm.background_per_ms_per_mw = 0.01
        self.drift = self._drift_override or (
            FocusDrift(rate_um_per_s=0.002, wander_um=0.05, seed=self._seed + 11)
            if s == "events"
            else FocusDrift()
        )
        self.rng = np.random.default_rng(np.random.SeedSequence([self._seed, 0xC0FFEE]))
        self.frame = 0
        self.t_s = 0.0
        self.dose_total_mj: dict[str, float] = dict.fromkeys(self.power_mw, 0.0)
        self.ledger: list[dict[str, float]] = []
        self.history: OrderedDict[int, FrameTruth] = OrderedDict()
        self._clean_frames: deque[int] = deque()
        self._lf_cache: tuple[tuple[str, float], np.ndarray] | None = None
        self._last_gt: dict[str, np.ndarray] | None = None
        if self.roi is not None:
            x, y, w, h = self.roi
            if x + w > self._sensor_px or y + h > self._sensor_px:
                self.roi = None

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
                    raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
                self._scenario = scenario
                self._default_powers()
            if seed is not None:
                self._seed = int(seed)
            if sensor_px is not None:
                self._sensor_px = int(sensor_px)
            if sensor_px is not None and not 16 <= int(sensor_px) <= 4096:
                raise ValueError(f"sensor_px={sensor_px} must be within 16..4096")
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

    def set_power(self, source: str | int, power_mw: float) -> None:
        key = str(source)
        if key not in self.power_mw:
            raise ValueError(f"light source must be one of {list(self.power_mw)}, got {key!r}")
        if not math.isfinite(power_mw) or power_mw < 0:
            raise ValueError(f"power_mw={power_mw} must be finite and >= 0")
        with self._lock:
            self.power_mw[key] = float(power_mw)

    def set_exposure_ms(self, exposure_ms: float) -> None:
        if not 0 < exposure_ms <= 60_000:
            raise ValueError(f"exposure_ms={exposure_ms} must be in (0, 60000]")
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

    def set_z_um(self, z_um: float) -> None:
        if not math.isfinite(z_um) or abs(z_um) > 1000:
            raise ValueError(f"z_um={z_um} must be finite and within ±1000")
        with self._lock:
            self.z_um = float(z_um)

    def set_mirror(self, zernike_rad: Sequence[float]) -> None:
        """Deformable-mirror shape: amplitudes of Noll modes j = 1, 2, … in rad RMS."""
        vals = tuple(float(v) for v in zernike_rad)
        if any(not math.isfinite(v) or abs(v) > 10 for v in vals):
            raise ValueError(f"zernike_rad={vals}: amplitudes must be finite and within ±10 rad")
        with self._lock:
            self.zernike_rad = vals

    def set_drift(self, **updates: float) -> None:
        """Change the focus drift (fields of :class:`FocusDrift`); keeps its seed."""
        with self._lock:
            base = self.drift.model_dump()
            self.drift = FocusDrift.model_validate({**base, **updates})
            self._drift_override = self.drift

    def set_roi(self, x: int, y: int, w: int, h: int) -> None:
        n = self._sensor_px
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > n or y + h > n:
            raise ValueError(f"ROI ({x}, {y}, {w}, {h}) outside the {n}×{n} sensor")
        with self._lock:
            self.roi = (int(x), int(y), int(w), int(h))

    def clear_roi(self) -> None:
        with self._lock:
            self.roi = None

    def frame_shape(self) -> tuple[int, int]:
        if self.roi is None:
            return (self._sensor_px, self._sensor_px)
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

    # ------------------------------------------------------------------ rendering

    def _label_free(self, t_s: float, defocus_um: float) -> np.ndarray:
        """Transmitted-light image; it blurs with the same defocus as the fluorescence."""
        assert self.cells is not None
        if self.cells.events:
            return self.cells.label_free(self.label_free_mode, t_s, defocus_um)
        key = (self.label_free_mode, defocus_um)
        if self._lf_cache is None or self._lf_cache[0] != key:
            self._lf_cache = (key, self.cells.label_free(self.label_free_mode, defocus_um=defocus_um))
        return self._lf_cache[1]

    def expected_photons(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Noise-free photons per pixel (full sensor) for the current state, plus extras.

        Does not advance time or photophysics (SMLM: uses the emitters on in the last frame).
        """
        with self._lock:
            self._ensure()
            return self._photons(advance=False)

    def _photons(self, advance: bool) -> tuple[np.ndarray, dict[str, Any]]:
        t = self.t_s
        exp = self.exposure_ms
        drift = float(self.drift.offset_um(t))
        # sample-plane offset from the focal plane; 10 nm steps keep the OTF cache useful
        defocus = round((drift - self.z_um) / 0.01) * 0.01
        extra: dict[str, Any] = {"drift_um": drift, "defocus_um": defocus}
        p = self.power_mw
        shape = (self._sensor_px, self._sensor_px)
        if self.cells is not None:
            img = np.zeros(shape, np.float32)
            rem = {}
            for ch, (ex, _em) in CHANNELS.items():
                rem[ch] = math.exp(-BLEACH_PER_MJ * self.dose_total_mj[str(ex)])
                pw = p[str(ex)] * self.brightness_scale
                if pw > 0:
                    img += self.cells.photons(ch, pw, exp, t, defocus, self.zernike_rad, remaining=rem[ch])
            if p[LAMP] > 0:
                img += self._label_free(t, defocus) * (LAMP_PHOTONS_PER_MS_PER_MW * p[LAMP] * exp)
            extra["bleach_remaining"] = rem
            extra["events"] = self._event_states(t)
            return img, extra
        assert self.smlm is not None
        sc = self.smlm
        if advance:
            gt = sc.advance(p["405"], p["640"], dt_s=exp * 1e-3)
            gt["frame"][:] = self.frame
            self._last_gt = gt
        else:
            gt = self._last_gt or {k: np.zeros(0) for k in ("x_nm", "y_nm", "z_nm", "photons")}
        img = sc.photons_image(gt, p["640"], self.z_um - drift, self.zernike_rad, exp)
        extra["emitters"] = gt
        return img, extra

    def _event_states(self, t_s: float) -> list[dict[str, Any]]:
        if self.cells is None:
            return []
        out = []
        for row in self.cells.event_rows():
            phase = (
                "before"
                if t_s < float(row["onset_s"])
                else ("constricting" if t_s < float(row["fission_s"]) else "divided")
            )
            out.append({**row, "phase": phase})
        return out

    def render_frame(self) -> tuple[np.ndarray, FrameTruth]:
        """Render the next frame from the current state; advance the clock by one frame."""
        with self._lock:
            self._ensure()
            photons, extra = self._photons(advance=True)
            x, y, w, h = self.roi or (0, 0, self._sensor_px, self._sensor_px)
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
            dose = {k: v * exp * 1e-3 for k, v in self.power_mw.items()}
            for k, v in dose.items():
                self.dose_total_mj[k] += v
            self.ledger.append(
                {
                    "frame": float(self.frame),
                    "t_s": self.t_s,
                    "exposure_ms": exp,
                    **{f"dose_mj_{k}": v for k, v in dose.items()},
                }
            )
            truth = FrameTruth(
                frame=self.frame,
                t_s=self.t_s,
                scenario=self._scenario,
                exposure_ms=exp,
                z_um=self.z_um,
                focus_drift_um=extra["drift_um"],
                defocus_um=extra["defocus_um"],
                zernike_rad=self.zernike_rad,
                power_mw=dict(self.power_mw),
                dose_mj=dose,
                roi=(x, y, w, h),
                emitters=extra.get("emitters"),
                events=extra.get("events", []),
                bleach_remaining=extra.get("bleach_remaining", {}),
                clean=photons,
            )
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

    def events_truth(self) -> list[dict[str, Any]]:
        """All scheduled events with onset/fission times and the frames they fall in."""
        self._ensure()
        if self.cells is None:
            return []
        return self.cells.event_rows()
