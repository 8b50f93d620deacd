"""Camera noise models: sCMOS (per-pixel maps) and EMCCD (EM gain with excess noise).

Signal chain per pixel:

    e⁻   = Poisson(QE·photons + dark_e_per_s·t)         (shot noise)
    EMCCD: e⁻ ← Gamma(shape=e⁻, scale=G)                (multiplication register, F² = 2)
    e⁻   = min(e⁻, full_well_e)                          (saturation)
    e⁻  += Normal(0, σ_read)                             (read noise, per pixel for sCMOS)
    ADU  = floor(e⁻ · gain_adu_per_e + offset_adu), clipped to [0, 2^bits − 1]

``gain_adu_per_e`` is the conversion gain (the photon-transfer slope). For an EMCCD the
read noise is given before EM gain and ``gain_adu_per_e`` applies after it. The sCMOS maps
(offset, gain, read noise) are drawn once from ``map_seed`` so a camera is a fixed object.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import special

from smartscope.base_model import FrozenModel
from smartscope.exceptions import InvalidValue

__all__ = [
    "EMCCD_REFERENCE",
    "SCMOS_REFERENCE",
    "CameraConfig",
    "CameraMaps",
    "expected_adu",
    "expected_electrons",
    "expose",
    "set_render_threads",
    "shot_noise",
]


class CameraConfig(FrozenModel):
    """A camera, frozen. ``kind`` selects the noise model."""

    kind: Literal["scmos", "emccd"] = "scmos"
    qe: float = Field(default=0.82, gt=0, le=1, description="quantum efficiency at the emission")
    read_noise_e: float = Field(default=0.9, ge=0, description="RMS read noise, electrons")
    gain_adu_per_e: float = Field(
        default=2.0,
        gt=0,
        description="conversion gain, ADU per electron (after EM gain for EMCCD)",
    )
    offset_adu: float = Field(default=100.0, ge=0, description="bias offset, ADU")
    bit_depth: int = Field(default=16, ge=8, le=16)
    full_well_e: float = Field(default=30_000.0, gt=0, description="full-well capacity, electrons")
    dark_e_per_s: float = Field(default=0.5, ge=0, description="dark current, e⁻/pixel/s")
    em_gain: float = Field(default=1.0, ge=1, le=2000, description="EM gain (EMCCD only)")
    exposure_ms: float = Field(default=10.0, gt=0, le=60_000)
    # per-pixel spread of the sCMOS maps (relative for gain, absolute otherwise)
    offset_spread_adu: float = Field(default=2.0, ge=0)
    gain_spread_rel: float = Field(default=0.02, ge=0, lt=0.5)
    read_noise_spread_rel: float = Field(default=0.3, ge=0, lt=2)
    map_seed: int = 12345

    @property
    def max_adu(self) -> int:
        return (1 << self.bit_depth) - 1

    @property
    def excess_noise_factor_sq(self) -> float:
        """F²: 2 for an EMCCD with gain ≫ 1, 1 otherwise."""
        return 2.0 if self.kind == "emccd" and self.em_gain > 1 else 1.0

    def maps(self, shape: tuple[int, int]) -> CameraMaps:
        return _maps(self, shape)


SCMOS_REFERENCE = CameraConfig()
EMCCD_REFERENCE = CameraConfig(
    kind="emccd",
    qe=0.95,
    read_noise_e=50.0,
    gain_adu_per_e=0.02,
    em_gain=300.0,
    full_well_e=800_000.0,
    dark_e_per_s=0.001,
    offset_spread_adu=0.0,
    gain_spread_rel=0.0,
    read_noise_spread_rel=0.0,
)


class CameraMaps:
    """Per-pixel offset (ADU), gain (ADU/e⁻) and read noise (e⁻) for one sensor size."""

    def __init__(self, cfg: CameraConfig, shape: tuple[int, int]) -> None:
        self.shape = shape
        rng = np.random.default_rng(cfg.map_seed)
        if cfg.kind == "scmos":
            self.offset_adu = (cfg.offset_adu + cfg.offset_spread_adu * rng.standard_normal(shape)).astype(
                np.float32
            )
            self.gain_adu_per_e = (
                cfg.gain_adu_per_e * (1 + cfg.gain_spread_rel * rng.standard_normal(shape))
            ).astype(np.float32)
            # read noise: log-normal around the nominal (sCMOS maps have a long tail)
            s = cfg.read_noise_spread_rel
            ln = rng.standard_normal(shape) * s - s * s / 2
            self.read_noise_e = (cfg.read_noise_e * np.exp(ln)).astype(np.float32)
        else:
            self.offset_adu = np.full(shape, cfg.offset_adu, dtype=np.float32)
            self.gain_adu_per_e = np.full(shape, cfg.gain_adu_per_e, dtype=np.float32)
            self.read_noise_e = np.full(shape, cfg.read_noise_e, dtype=np.float32)

    @classmethod
    def from_arrays(
        cls, offset_adu: np.ndarray, gain_adu_per_e: np.ndarray, read_noise_e: np.ndarray
    ) -> CameraMaps:
        """Measured maps (a user's sCMOS calibration) instead of drawn ones; same shape each."""
        shape = np.shape(offset_adu)
        if len(shape) != 2 or np.shape(gain_adu_per_e) != shape or np.shape(read_noise_e) != shape:
            raise InvalidValue(
                f"camera maps must share one 2-D shape: offset {np.shape(offset_adu)}, "
                f"gain {np.shape(gain_adu_per_e)}, read noise {np.shape(read_noise_e)}"
            )
        m = cls.__new__(cls)
        m.shape = (int(shape[0]), int(shape[1]))
        m.offset_adu = np.asarray(offset_adu, np.float32)
        m.gain_adu_per_e = np.asarray(gain_adu_per_e, np.float32)
        m.read_noise_e = np.asarray(read_noise_e, np.float32)
        return m


_MAP_CACHE: dict[tuple, CameraMaps] = {}


def _maps(cfg: CameraConfig, shape: tuple[int, int]) -> CameraMaps:
    key = (
        cfg.kind,
        cfg.offset_adu,
        cfg.gain_adu_per_e,
        cfg.read_noise_e,
        cfg.offset_spread_adu,
        cfg.gain_spread_rel,
        cfg.read_noise_spread_rel,
        cfg.map_seed,
        shape,
    )
    hit = _MAP_CACHE.get(key)
    if hit is None:
        if len(_MAP_CACHE) > 8:
            _MAP_CACHE.clear()
        hit = CameraMaps(cfg, shape)
        _MAP_CACHE[key] = hit
    return hit


def expected_electrons(
    cfg: CameraConfig, photons_per_px: np.ndarray, exposure_ms: float | None = None
) -> np.ndarray:
    """Noise-free mean photoelectrons per pixel (before EM gain): QE·photons + dark."""
    t_s = (cfg.exposure_ms if exposure_ms is None else exposure_ms) * 1e-3
    return (cfg.qe * np.asarray(photons_per_px, dtype=np.float32) + cfg.dark_e_per_s * t_s).astype(np.float32)


_TABLE_BITS = 20
_TABLES: OrderedDict[float, np.ndarray] = OrderedDict()


def _poisson_table(lam: float) -> np.ndarray:
    """Inverse-CDF table of Poisson(lam) with 2^20 equiprobable slots.

    Each value k fills round(P(k)·2^20) slots (largest-remainder rounding, so the slots
    sum to 2^20): a draw is one random 20-bit integer and one lookup. Probabilities are
    exact to 2^-20 ≈ 1e-6 (tails rarer than that are not drawn).
    """
    hit = _TABLES.get(lam)
    if hit is not None:
        _TABLES.move_to_end(lam)
        return hit
    n = 1 << _TABLE_BITS
    k_max = int(lam + 14 * math.sqrt(lam) + 30)
    k = np.arange(k_max + 1)
    log_p = k * math.log(lam) - lam - special.gammaln(k + 1)
    p = np.exp(log_p)
    slots = np.floor(p * n).astype(np.int64)
    short = n - int(slots.sum())
    if short > 0:
        slots[np.argsort(-(p * n - slots))[:short]] += 1
    table = np.repeat(k.astype(np.float32), slots)
    _TABLES[lam] = table
    while len(_TABLES) > 16:
        _TABLES.popitem(last=False)
    return table


def shot_noise(lam: np.ndarray, rng: np.random.Generator, floor: float | None = None) -> np.ndarray:
    """Poisson(lam) per pixel, float32.

    Split exactly as Poisson(lo) + Poisson(lam − lo) with lo = the frame minimum (the
    uniform background of a sparse scene; ``floor`` overrides it, it must be ≤ every
    lam): the first term comes from a lookup table for every pixel, the second from
    numpy's sampler only where lam > lo. A sparse SMLM frame thus costs one table lookup
    per pixel plus the emitter footprints.
    """
    lam = np.asarray(lam, dtype=np.float32)
    lo = float(lam.min()) if floor is None else float(floor)
    if lo > 0:
        table = _poisson_table(lo)
        e = np.take(table, rng.integers(0, 1 << _TABLE_BITS, lam.shape, dtype=np.uint32))
    else:
        lo = 0.0
        e = np.zeros(lam.shape, np.float32)
    flat_lam = lam.reshape(-1)
    idx = np.flatnonzero(flat_lam > np.float32(lo))
    if idx.size:
        flat = e.reshape(-1)
        flat[idx] += rng.poisson(flat_lam[idx] - np.float32(lo)).astype(np.float32)
    return e


_POOL: ThreadPoolExecutor | None = None
_THREADS = 1


def set_render_threads(n: int) -> None:
    """Noise synthesis in ``n`` row blocks on ``n`` threads (numpy releases the GIL).

    Frames stay seeded and reproducible for a given ``n`` (each block draws from its own
    generator, spawned from the frame's), but differ between thread counts.
    """
    global _POOL, _THREADS
    if n < 1:
        raise ValueError(f"threads={n} must be >= 1")
    _THREADS = int(n)
    if _POOL is not None:
        _POOL.shutdown(wait=False)
    _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sim-camera") if n > 1 else None


@lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    """2^20 equiprobable quantiles of N(0, 1) (mid-points; tails beyond ±4.9σ not drawn).

    Read noise drawn from it is indistinguishable from a continuous Gaussian once
    digitised to ADU, and one lookup is ~3× cheaper than the ziggurat.
    """
    n = 1 << _TABLE_BITS
    return special.ndtri((np.arange(n) + 0.5) / n).astype(np.float32)


def _expose_block(
    cfg: CameraConfig,
    lam: np.ndarray,
    floor: float,
    rng: np.random.Generator,
    read: np.ndarray,
    gain: np.ndarray,
    offset: np.ndarray,
    out: np.ndarray,
) -> None:
    e = shot_noise(lam, rng, floor)
    if cfg.kind == "emccd" and cfg.em_gain > 1:
        pos = e > 0
        e_out = np.zeros_like(e)
        e_out[pos] = rng.gamma(e[pos], cfg.em_gain).astype(np.float32)
        e = e_out
    lam_max = float(lam.max()) * (cfg.em_gain if cfg.kind == "emccd" else 1.0)
    if lam_max + 12 * math.sqrt(lam_max + 1) * (2 if cfg.kind == "emccd" else 1) > cfg.full_well_e:
        np.minimum(e, cfg.full_well_e, out=e)
    noise = np.take(_normal_table(), rng.integers(0, 1 << _TABLE_BITS, e.shape, dtype=np.uint32))
    noise *= read
    e += noise
    e *= gain
    e += offset
    np.floor(e, out=e)
    np.clip(e, 0, cfg.max_adu, out=e)
    out[...] = e


def expose(
    cfg: CameraConfig,
    photons_per_px: np.ndarray,
    rng: np.random.Generator,
    exposure_ms: float | None = None,
    roi: tuple[int, int, int, int] | None = None,
    maps: CameraMaps | None = None,
) -> np.ndarray:
    """One noisy frame (uint16 ADU) from the photons reaching each pixel in the exposure.

    ``photons_per_px`` are photons *during this exposure* (the scene scales them with the
    exposure time; the camera adds dark current for ``exposure_ms``). ``roi`` = (x, y, w, h)
    selects the sensor-map region when the frame is a sub-array of the full sensor.
    ``maps`` replaces the maps drawn from ``cfg.map_seed`` (a measured calibration).
    """
    lam = expected_electrons(cfg, photons_per_px, exposure_ms)
    if roi is None:
        shape = (lam.shape[0], lam.shape[1])
        sl: tuple[slice, slice] = (slice(0, shape[0]), slice(0, shape[1]))
    else:
        x, y, w, h = roi
        shape = (y + h, x + w)
        sl = (slice(y, y + h), slice(x, x + w))
    if maps is None:
        maps = cfg.maps(shape)
    elif maps.shape[0] < shape[0] or maps.shape[1] < shape[1]:
        raise InvalidValue(f"camera maps {maps.shape} do not cover the frame/ROI {shape}")
    read, gain, offset = maps.read_noise_e[sl], maps.gain_adu_per_e[sl], maps.offset_adu[sl]
    out = np.empty(lam.shape, np.uint16)
    floor = float(lam.min())
    n_blocks = _THREADS if (_POOL is not None and lam.shape[0] >= 128) else 1
    if n_blocks == 1:
        _expose_block(cfg, lam, floor, rng, read, gain, offset, out)
        return out
    rows = np.linspace(0, lam.shape[0], n_blocks + 1).astype(int)
    rngs = rng.spawn(n_blocks)
    futures = [
        _POOL.submit(  # type: ignore[union-attr]
            _expose_block,
            cfg,
            lam[a:b],
            floor,
            g,
            read[a:b],
            gain[a:b],
            offset[a:b],
            out[a:b],
        )
        for a, b, g in zip(rows[:-1], rows[1:], rngs, strict=True)
    ]
    for f in futures:
        f.result()
    return out


def expected_adu(
    cfg: CameraConfig, photons_per_px: np.ndarray, exposure_ms: float | None = None
) -> np.ndarray:
    """Noise-free mean ADU with the nominal (map-free) gain and offset, unclipped."""
    g = cfg.em_gain if cfg.kind == "emccd" else 1.0
    e = expected_electrons(cfg, photons_per_px, exposure_ms) * g
    return (e * cfg.gain_adu_per_e + cfg.offset_adu - 0.5).astype(np.float32)
