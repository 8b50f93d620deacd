"""Scenes: a sample + the optics that image it, rendered to photons per pixel.

:class:`CellScene` renders the fluorescence channels (and the label-free channel) of a
cell field, optionally with fission events. :class:`SMLMScene` is the plain-Python SMLM
generator: blinking emitters → PSF stamps → camera → (uint16 frame, ground-truth table),
with no Micro-Manager involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from smartscope.exceptions import InvalidValue

from .camera import CameraConfig, expose
from .optics import Optics, OTFCache, StampTable, convolve
from .samples import (
    CHANNELS,
    Emitters,
    FissionEvent,
    Photophysics,
    PhotophysicsState,
    fission_points,
    label_free,
    make_cells,
    make_emitters,
    make_fission_events,
    splat_tubes,
)

__all__ = ["GT_COLUMNS", "CellScene", "SMLMScene", "render_emitters"]

GT_COLUMNS = ("frame", "emitter_id", "x_nm", "y_nm", "z_nm", "photons", "on_fraction")


_STAMP_CACHE: dict[tuple, StampTable] = {}


def render_emitters(
    shape: tuple[int, int],
    x_nm: np.ndarray,
    y_nm: np.ndarray,
    photons: np.ndarray,
    z_nm: np.ndarray | None = None,
    optics: Optics | None = None,
    zernike_rad: Sequence[float] | None = None,
    focus_um: float = 0.0,
    background: float = 0.0,
) -> np.ndarray:
    """Expected photons per pixel (float32) of point emitters through the pupil PSF.

    Coordinates in nm from the top-left corner of pixel (0, 0); ``photons`` per emitter
    land in the image in full (see :class:`StampTable`); ``background`` photons/px are
    added uniformly. No noise: pass the result to :func:`camera.expose` for a frame.
    """
    o = optics or Optics()
    key = (o, tuple(float(v) for v in (zernike_rad or ())))
    tab = _STAMP_CACHE.get(key)
    if tab is None:
        if len(_STAMP_CACHE) > 8:
            _STAMP_CACHE.clear()
        tab = _STAMP_CACHE[key] = StampTable(o, zernike_rad)
    a = o.pixel_size_um * 1000.0
    x = np.asarray(x_nm, np.float64)
    z = np.zeros_like(x) if z_nm is None else np.asarray(z_nm, np.float64)
    img = np.full(shape, float(background), np.float32)
    return tab.render(
        shape,
        np.asarray(y_nm, np.float64) / a - 0.5,
        x / a - 0.5,
        np.asarray(photons, np.float64),
        z * 1e-3 - focus_um,
        out=img,
    )


class CellScene:
    """A cell field imaged in three fluorescence channels and one label-free channel.

    Photons per pixel in an exposure = density · ``brightness_per_ms_per_mw[channel]``
    · laser power (mW) · exposure (ms) · remaining (unbleached) fraction, convolved with
    the emission PSF of the channel, plus autofluorescence background. Linear in power
    and exposure by construction.
    """

    brightness_per_ms_per_mw: dict[str, float] = {  # noqa: RUF012
        "nuclei": 0.6,
        "mitochondria": 1.0,
        "membrane": 0.5,
    }
    background_per_ms_per_mw: float = 0.01

    def __init__(
        self,
        shape: tuple[int, int] = (256, 256),
        pixel_size_um: float = 0.1,
        seed: int = 0,
        na: float = 1.4,
        n_immersion: float = 1.518,
        events: bool = False,
        duration_s: float = 60.0,
        event_rate_per_s: float = 0.05,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.seed = seed
        self.geom = make_cells(self.shape, pixel_size_um, seed)
        self.optics = {
            ch: Optics(na=na, n_immersion=n_immersion, wavelength_nm=em, pixel_size_um=pixel_size_um)
            for ch, (_ex, em) in CHANNELS.items()
        }
        self.events: list[FissionEvent] = (
            make_fission_events(self.geom, duration_s, event_rate_per_s, seed=seed + 7919) if events else []
        )
        self._event_tubes = {e.tube_id for e in self.events}
        dyn = np.isin(self.geom.mito_id, list(self._event_tubes))
        self._dyn = dyn
        self._static_mito = splat_tubes(
            self.shape,
            self.geom.mito_y[~dyn],
            self.geom.mito_x[~dyn],
            None,
            self.geom.mito_sigma_px,
        )
        self.otf_cache = OTFCache()
        self._conv_cache: dict[tuple, np.ndarray] = {}

    @property
    def channels(self) -> list[str]:
        return list(CHANNELS)

    def density(self, channel: str, t_s: float = 0.0) -> np.ndarray:
        """Ground-truth fluorophore density of a channel at time ``t_s``."""
        if channel not in CHANNELS:
            raise InvalidValue(f"channel must be one of {list(CHANNELS)}, got {channel!r}")
        if channel != "mitochondria" or not self.events:
            return self.geom.density[channel]
        return np.clip(self._static_mito + self._dynamic_mito(t_s), 0, 1.5)

    def _dynamic_mito(self, t_s: float) -> np.ndarray:
        y, x, w = fission_points(self.geom, self.events, t_s)
        d = self._dyn
        return splat_tubes(self.shape, y[d], x[d], w[d], self.geom.mito_sigma_px)

    def blurred(
        self,
        channel: str,
        t_s: float = 0.0,
        defocus_um: float = 0.0,
        zernike_rad: Sequence[float] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Density ⊗ PSF (unit brightness). Static parts are cached per optical state."""
        optics = self.optics[channel]
        otf = self.otf_cache.otf(self.shape, optics, zernike_rad, defocus_um)
        # keyed by the optical state, never id(otf): an evicted OTF's id can be reused
        key = (channel, OTFCache.key(self.shape, optics, zernike_rad, defocus_um))
        static = self._conv_cache.get(key)
        if static is None:
            base = self._static_mito if channel == "mitochondria" else self.geom.density[channel]
            static = convolve(base, otf)
            if len(self._conv_cache) > 24:
                self._conv_cache.clear()
            self._conv_cache[key] = static
        if channel == "mitochondria" and self.events:
            return static + convolve(self._dynamic_mito(t_s), otf)
        return static

    def photons(
        self,
        channel: str,
        power_mw: float,
        exposure_ms: float,
        t_s: float = 0.0,
        defocus_um: float = 0.0,
        zernike_rad: Sequence[float] | np.ndarray | None = None,
        remaining: float = 1.0,
        region: tuple[slice, slice] | None = None,
    ) -> np.ndarray:
        """Expected detected photons per pixel in one exposure (float32); ``region``
        (rows, cols) returns only that part of the field."""
        scale = power_mw * exposure_ms
        sig = self.blurred(channel, t_s, defocus_um, zernike_rad)
        if region is not None:
            sig = sig[region]
        return (
            sig * (self.brightness_per_ms_per_mw[channel] * scale * remaining)
            + self.background_per_ms_per_mw * scale
        ).astype(np.float32)

    def label_free(
        self,
        mode: Literal["phase", "brightfield"] = "phase",
        t_s: float = 0.0,
        defocus_um: float = 0.0,
    ) -> np.ndarray:
        """Label-free image (background 1) of the same geometry at time ``t_s``, with the
        sample ``defocus_um`` from the focal plane."""
        mito = self.density("mitochondria", t_s) if self.events else None
        na = min(0.9, self.optics["nuclei"].na)
        return label_free(self.geom, mode, na=na, mito_density=mito, focus_offset_um=defocus_um)

    def event_rows(self) -> list[dict[str, float | int | str]]:
        return [e.as_row(self.geom.pixel_size_um) for e in self.events]


class SMLMScene:
    """Blinking emitters on structures, imaged through the pupil PSF onto a camera.

    ``step(activation_mw)`` advances the photophysics by one exposure and returns the
    uint16 camera frame and the ground truth of every emitter that was on during it:
    a dict of equal-length arrays with columns :data:`GT_COLUMNS` (``photons`` =
    expected detected photons of that emitter in the frame; ``on_fraction`` = part of
    the exposure it was on). Coordinates: nm from the top-left corner of pixel (0, 0).
    """

    def __init__(
        self,
        shape: tuple[int, int] = (64, 64),
        pixel_size_um: float = 0.1,
        seed: int = 0,
        structure: Literal["filaments", "rings", "clusters", "mixed"] = "mixed",
        photophysics: Photophysics | None = None,
        camera: CameraConfig | None = None,
        optics: Optics | None = None,
        exposure_ms: float = 10.0,
        excitation_mw: float = 100.0,
        background_per_ms_per_mw: float = 0.02,
        label_density_per_um: float = 40.0,
        emitters: Emitters | None = None,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.pixel_size_nm = pixel_size_um * 1000.0
        self.optics = optics or Optics(wavelength_nm=670.0, pixel_size_um=pixel_size_um)
        if abs(self.optics.pixel_size_um - pixel_size_um) > 1e-9:
            raise ValueError("optics.pixel_size_um must equal pixel_size_um")
        self.camera = camera or CameraConfig(exposure_ms=exposure_ms)
        self.pp = photophysics or Photophysics()
        self.exposure_ms = exposure_ms
        self.excitation_mw = excitation_mw
        self.background_per_ms_per_mw = background_per_ms_per_mw
        fov = (self.shape[0] * self.pixel_size_nm, self.shape[1] * self.pixel_size_nm)
        self.emitters = emitters or make_emitters(structure, fov, seed, label_density_per_um)
        self.state = PhotophysicsState.initial(len(self.emitters), self.pp)
        self.rng = np.random.default_rng(seed + 1_000_003)
        self._stamps: dict[tuple, StampTable] = {}
        self.frame = 0

    def stamps(self, zernike_rad: Sequence[float] | np.ndarray | None = None) -> StampTable:
        key = tuple(np.round(np.asarray(zernike_rad if zernike_rad is not None else []), 9))
        tab = self._stamps.get(key)
        if tab is None:
            if len(self._stamps) > 8:
                self._stamps.clear()
            tab = StampTable(self.optics, zernike_rad)
            self._stamps[key] = tab
        return tab

    def advance(
        self, activation_mw: float, excitation_mw: float | None = None, dt_s: float | None = None
    ) -> dict[str, np.ndarray]:
        """Photophysics for one frame → ground-truth table (no rendering)."""
        exc = self.excitation_mw if excitation_mw is None else excitation_mw
        dt = self.exposure_ms * 1e-3 if dt_s is None else dt_s
        frac = self.state.step(self.pp, dt, exc, activation_mw, self.rng)
        on = np.flatnonzero(frac > 0)
        photons = frac[on] * self.pp.photons_per_ms_per_mw * exc * (dt * 1e3)
        e = self.emitters
        gt = {
            "frame": np.full(on.size, self.frame, np.int64),
            "emitter_id": on.astype(np.int64),
            "x_nm": e.x_nm[on],
            "y_nm": e.y_nm[on],
            "z_nm": e.z_nm[on],
            "photons": photons,
            "on_fraction": frac[on],
        }
        self.frame += 1
        return gt

    def photons_image(
        self,
        gt: dict[str, np.ndarray],
        excitation_mw: float | None = None,
        focus_um: float = 0.0,
        zernike_rad: Sequence[float] | np.ndarray | None = None,
        exposure_ms: float | None = None,
    ) -> np.ndarray:
        """Expected photons per pixel for the emitters in ``gt`` plus background."""
        exc = self.excitation_mw if excitation_mw is None else excitation_mw
        t_ms = self.exposure_ms if exposure_ms is None else exposure_ms
        img = np.full(self.shape, self.background_per_ms_per_mw * exc * t_ms, np.float32)
        a = self.pixel_size_nm
        return self.stamps(zernike_rad).render(
            self.shape,
            gt["y_nm"] / a - 0.5,
            gt["x_nm"] / a - 0.5,
            gt["photons"],
            (gt["z_nm"] * 1e-3 - focus_um),
            out=img,
        )

    def step(
        self,
        activation_mw: float = 0.0,
        excitation_mw: float | None = None,
        focus_um: float = 0.0,
        zernike_rad: Sequence[float] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One exposure: photophysics, rendering, camera noise → (uint16 frame, ground truth)."""
        gt = self.advance(activation_mw, excitation_mw)
        ph = self.photons_image(gt, excitation_mw, focus_um, zernike_rad)
        frame = expose(self.camera, ph, self.rng, self.exposure_ms)
        return frame, gt
