"""A microscope smartscope's simulator knows nothing about, for bench/smlm.py's calibration cases.

Everything here is written independently of ``smartscope.simulators``: no pupil, no
photophysics module, no camera module. Held-out data made with it test what a user's
calibration does on a microscope the localizers were never built around.

* PSF: an elliptical Moffat profile (β = 3, wider tails than a Gaussian, x 8 % wider than
  y) whose width grows with defocus as ``sqrt(1 + (z/d)²)``. Each photon is drawn on its
  own from it (inverse CDF) and counted into the pixel it lands in.
* Emitters: blink frame by frame (two-state Markov chain, on ~20 % of frames, brightness
  log-normal around the data set's photons); uniformly spread, also just outside the frame.
* Camera: Poisson photoelectrons, Gaussian read noise, ``ADU = round(gain·e) + offset``
  (rounding, not the simulator's flooring ADC), clipped to 16 bit. Uniform, or with
  per-pixel offset, gain and log-normal read noise plus a few hot pixels.

Coordinates: nm from the outer corner of pixel (0, 0), photons are photoelectrons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PIXEL_NM = 100.0


@dataclass(frozen=True)
class ForeignPSF:
    """Elliptical Moffat: density ∝ (1 + r²/α²)^−β, ``r² = x²/e + y²·e`` (e = ellipticity)."""

    fwhm_nm: float = 270.0  # in focus, geometric mean of x and y
    beta: float = 3.0
    ellipticity: float = 1.08  # σx / σy
    depth_nm: float = 450.0  # width × sqrt(1 + (z / depth)²)

    def alpha_nm(self, z_nm: np.ndarray | float) -> np.ndarray:
        a0 = self.fwhm_nm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))
        return np.asarray(a0 * np.sqrt(1.0 + (np.asarray(z_nm, np.float64) / self.depth_nm) ** 2))

    def sample(self, rng: np.random.Generator, n: int, z_nm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` photon displacements (dx, dy) in nm from the emitter."""
        u = rng.random(n)
        r = self.alpha_nm(z_nm) * np.sqrt(u ** (-1.0 / (self.beta - 1.0)) - 1.0)
        th = rng.uniform(0.0, 2.0 * math.pi, n)
        s = math.sqrt(self.ellipticity)
        return r * np.cos(th) * s, r * np.sin(th) / s

    def density(self, dx_nm: np.ndarray, dy_nm: np.ndarray, z_nm: float = 0.0) -> np.ndarray:
        a = float(self.alpha_nm(z_nm))
        e = self.ellipticity
        r2 = dx_nm**2 / e + dy_nm**2 * e
        return np.asarray((self.beta - 1.0) / (math.pi * a * a) * (1.0 + r2 / (a * a)) ** (-self.beta))

    def pixel_stack(self, size: int = 15, z_nm: float = 0.0, oversample: int = 21) -> np.ndarray:
        """Fraction of an emitter's photons in each pixel of a ``size``² window, emitter at the
        centre pixel's centre (the exact values a spline of this PSF interpolates)."""
        c = size // 2
        k = (np.arange(size * oversample) + 0.5) / oversample - c - 0.5  # sub-pixel centres, px
        xx, yy = np.meshgrid(k * PIXEL_NM, k * PIXEL_NM)
        d = self.density(xx, yy, z_nm) * (PIXEL_NM / oversample) ** 2
        return np.asarray(d.reshape(size, oversample, size, oversample).sum((1, 3)))

    @property
    def sigma_equiv_nm(self) -> float:
        """σ of the Gaussian with the same FWHM (what a Gaussian fit starts from)."""
        return self.fwhm_nm / 2.3548


@dataclass(frozen=True)
class ForeignCamera:
    """Uniform when every spread is 0; ``hot_fraction`` of pixels get ``hot_factor``× read noise."""

    offset_adu: float = 250.0
    gain_adu_per_e: float = 0.9
    read_noise_e: float = 1.3
    offset_spread_adu: float = 0.0
    gain_spread_rel: float = 0.0
    read_noise_spread_rel: float = 0.0  # log-normal σ
    hot_fraction: float = 0.0
    hot_factor: float = 6.0
    seed: int = 1

    def maps(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offset ADU, gain ADU/e⁻, read noise e⁻) per pixel."""
        rng = np.random.default_rng(self.seed)
        off = self.offset_adu + self.offset_spread_adu * rng.standard_normal(shape)
        gain = self.gain_adu_per_e * (1.0 + self.gain_spread_rel * rng.standard_normal(shape))
        s = self.read_noise_spread_rel
        read = self.read_noise_e * np.exp(s * rng.standard_normal(shape) - s * s / 2)
        read = np.where(rng.random(shape) < self.hot_fraction, read * self.hot_factor, read)
        return off, gain, read

    def expose(self, electrons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Camera frames (uint16) from photoelectron counts (any leading shape, last two Y, X)."""
        off, gain, read = self.maps(electrons.shape[-2:])
        e = electrons + read * rng.standard_normal(electrons.shape)
        return np.asarray(np.clip(np.rint(e * gain + off), 0, 65535).astype(np.uint16))

    def calibration_frames(
        self,
        shape: tuple[int, int],
        n_frames: int,
        flat_e: tuple[float, ...] = (40.0, 150.0, 500.0),
        seed: int = 0,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """A dark stack and flat-field stacks (uniform light of ``flat_e`` photoelectrons)."""
        rng = np.random.default_rng(seed)
        dark = self.expose(np.zeros((n_frames, *shape)), rng)
        flats = [
            self.expose(rng.poisson(level, (n_frames, *shape)).astype(np.float64), rng) for level in flat_e
        ]
        return dark, flats


@dataclass
class Movie:
    """Frames (T, Y, X) uint16 and per-frame ground truth of the emitters on."""

    frames: np.ndarray
    gt_frame: np.ndarray
    gt_xy_nm: np.ndarray
    gt_photons: np.ndarray
    params: dict[str, float] = field(default_factory=dict)


def _render(
    psf: ForeignPSF,
    shape: tuple[int, int],
    x_nm: np.ndarray,
    y_nm: np.ndarray,
    photons: np.ndarray,
    rng: np.random.Generator,
    z_nm: float = 0.0,
) -> np.ndarray:
    """Photoelectron counts: every photon drawn from the PSF and counted where it lands."""
    h, w = shape
    counts = rng.poisson(photons)
    n = int(counts.sum())
    img = np.zeros(h * w, np.float64)
    if n:
        dx, dy = psf.sample(rng, n, z_nm)
        px = np.floor((np.repeat(x_nm, counts) + dx) / PIXEL_NM).astype(np.int64)
        py = np.floor((np.repeat(y_nm, counts) + dy) / PIXEL_NM).astype(np.int64)
        ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        img += np.bincount(py[ok] * w + px[ok], minlength=h * w)
    return img.reshape(h, w)


def movie(
    psf: ForeignPSF,
    camera: ForeignCamera,
    shape: tuple[int, int],
    n_frames: int,
    density_per_um2: float,
    photons: float,
    bg: float,
    seed: int,
    duty: float = 0.2,
    margin_px: float = 3.0,
) -> Movie:
    """A blinking SMLM movie: ``density_per_um2`` emitters on per frame on average."""
    rng = np.random.default_rng(seed)
    h, w = shape
    area = (h + 2 * margin_px) * (w + 2 * margin_px) * (PIXEL_NM / 1000.0) ** 2
    n_em = max(1, round(density_per_um2 * area / duty))
    ex = rng.uniform(-margin_px, w + margin_px, n_em) * PIXEL_NM
    ey = rng.uniform(-margin_px, h + margin_px, n_em) * PIXEL_NM
    bright = photons * rng.lognormal(-0.5 * 0.25**2, 0.25, n_em)
    p_off = 0.5  # on → off per frame
    p_on = p_off * duty / (1.0 - duty)
    on = rng.random(n_em) < duty
    frames = np.empty((n_frames, h, w), np.uint16)
    gf, gxy, gph = [], [], []
    for t in range(n_frames):
        idx = np.flatnonzero(on)
        e = rng.poisson(bg, shape).astype(np.float64) + _render(
            psf, shape, ex[idx], ey[idx], bright[idx], rng
        )
        frames[t] = camera.expose(e, rng)
        inside = (ex[idx] >= 0) & (ex[idx] < w * PIXEL_NM) & (ey[idx] >= 0) & (ey[idx] < h * PIXEL_NM)
        k = idx[inside]
        gf.append(np.full(k.size, t))
        gxy.append(np.column_stack([ex[k], ey[k]]))
        gph.append(bright[k])
        flip = rng.random(n_em)
        on = np.where(on, flip >= p_off, flip < p_on)
    return Movie(
        frames,
        np.concatenate(gf),
        np.concatenate(gxy),
        np.concatenate(gph),
        {"density": density_per_um2, "photons": photons, "bg": bg},
    )


def bead_stack(
    psf: ForeignPSF,
    camera: ForeignCamera,
    shape: tuple[int, int],
    z_step_nm: float = 20.0,
    z_range_nm: tuple[float, float] = (-800.0, 800.0),
    spacing_px: int = 24,
    photons: float = 20_000.0,
    bg: float = 30.0,
    seed: int = 0,
) -> np.ndarray:
    """A bead z-stack (focus moving up by ``z_step_nm`` per slice): beads on a grid."""
    rng = np.random.default_rng(seed)
    h, w = shape
    g = np.arange(spacing_px // 2, min(h, w) - spacing_px // 2 + 1, spacing_px) * PIXEL_NM
    bx, by = (v.ravel() + rng.uniform(0, PIXEL_NM, v.size) for v in np.meshgrid(g, g))
    zs = np.arange(z_range_nm[0], z_range_nm[1] + 1e-6, z_step_nm)
    out = np.empty((zs.size, h, w), np.uint16)
    for i, zf in enumerate(zs):
        # slice i: focus at zf, so a bead at 0 sits zf below the focal plane
        e = rng.poisson(bg, shape).astype(np.float64)
        e += _render(psf, shape, bx, by, np.full(bx.size, photons), rng, z_nm=-zf)
        out[i] = camera.expose(e, rng)
    return out
