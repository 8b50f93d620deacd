"""PSF models for SMLM that a fitter, a network trainer and the simulator share.

Two calibrated models, each evaluated on a pixel grid together with its derivatives by
the emitter position (what a maximum-likelihood fitter needs) and able to render emitters
into frames (what training data and test data need):

* :class:`SplinePSF` — a measured PSF stack (Z, Y, X), sampled at the camera pixel and at a
  z step, interpolated by a tricubic B-spline (the representation SMAP and DECODE use for
  beads). Values are pixel-integrated (they come from camera pixels) and normalised so the
  brightest slice sums to 1: ``photons`` are the photons landing in the model's window.
* :class:`GaussianZPSF` — the calibrated astigmatic Gaussian (Huang et al. 2008):
  ``σ(z) = σ0·sqrt(1 + u² + A·u³ + B·u⁴)``, ``u = (z − c)/d``, per axis, pixel-integrated.

Coordinates: inside a window, pixel ``k`` is centred at ``k`` (pixel-centre units) and an
emitter at ``x_px`` sits at that position; ``z_nm`` is the emitter's height above the focal
plane (positive = away from the objective, the pupil model's defocus sign). Frames use the
simulator's convention: nm from the outer corner of pixel (0, 0).

:func:`astigmatic_zernike` gives the pupil aberration of a cylindrical lens (Noll Z6) for
the pupil PSF of :mod:`.optics`; the virtual microscope takes it as a mirror shape.

Files: :meth:`SplinePSF.save` writes one ``.npz`` (arrays + a JSON ``meta`` string, read
with ``allow_pickle=False``); :func:`load_psf` reads it back; :func:`file_sha256` is the
identity a trained bundle records.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import ndimage
from scipy.special import erf

from smartscope.exceptions import InvalidValue

__all__ = [
    "GaussianZPSF",
    "PSFEval",
    "PSFModel",
    "SplinePSF",
    "astigmatic_zernike",
    "file_sha256",
    "load_psf",
]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def astigmatic_zernike(amplitude_rad: float = 1.0, extra: dict[int, float] | None = None) -> np.ndarray:
    """Zernike vector (rad RMS, Noll j = index + 1) of a cylindrical lens: Z6 astigmatism.

    With NA 1.4 at 670 nm, 1 rad RMS puts the x and y line foci about ±300 nm from the
    best focus, the usual 3-D astigmatic range of ±600 nm. ``extra`` adds other modes,
    e.g. ``{11: 0.3}`` for spherical aberration.
    """
    z = np.zeros(max([6, *(extra or {}).keys()]))
    z[5] = amplitude_rad
    for j, a in (extra or {}).items():
        if j < 1:
            raise ValueError(f"Noll index must be >= 1, got {j}")
        z[j - 1] += a
    return z


@dataclass(frozen=True)
class PSFEval:
    """A PSF on windows, one per emitter: values and derivatives, each (n, S, S).

    ``psf`` is the fraction of the emitter's photons per pixel; ``dx``, ``dy`` are per
    pixel of emitter displacement, ``dz`` per nm.
    """

    psf: np.ndarray
    dx: np.ndarray | None = None
    dy: np.ndarray | None = None
    dz: np.ndarray | None = None


class PSFModel(Protocol):
    """What fitters, trainers and the simulator need from a PSF model."""

    @property
    def pixel_nm(self) -> float: ...

    @property
    def z_range_nm(self) -> tuple[float, float]:
        """The z range the model was calibrated over (2-D models: (0, 0))."""
        ...

    @property
    def is_3d(self) -> bool: ...

    @property
    def window_px(self) -> int:
        """Odd window that holds the PSF over its z range (render and fit size)."""
        ...

    def evaluate(
        self, x_px: np.ndarray, y_px: np.ndarray, z_nm: np.ndarray, size: int, derivatives: bool = True
    ) -> PSFEval: ...


def render_model(
    model: PSFModel,
    shape: tuple[int, int],
    x_nm: np.ndarray,
    y_nm: np.ndarray,
    z_nm: np.ndarray,
    photons: np.ndarray,
    out: np.ndarray | None = None,
    chunk: int = 2048,
) -> np.ndarray:
    """Add emitters (nm from the corner of pixel (0, 0)) to a float32 photon image."""
    x_px = np.asarray(x_nm, np.float64) / model.pixel_nm - 0.5
    y_px = np.asarray(y_nm, np.float64) / model.pixel_nm - 0.5
    return render_model_px(model, shape, x_px, y_px, z_nm, photons, out, chunk)


def render_model_px(
    model: PSFModel,
    shape: tuple[int, int],
    x_px: np.ndarray,
    y_px: np.ndarray,
    z_nm: np.ndarray,
    photons: np.ndarray,
    out: np.ndarray | None = None,
    chunk: int = 2048,
) -> np.ndarray:
    """As :func:`render_model`, positions in pixel-centre units (pixel k centred at k)."""
    img = np.zeros(shape, np.float32) if out is None else out
    x_px = np.asarray(x_px, np.float64)
    y_px = np.asarray(y_px, np.float64)
    z = np.broadcast_to(np.asarray(z_nm, np.float64), x_px.shape)
    ph = np.broadcast_to(np.asarray(photons, np.float64), x_px.shape)
    s = model.window_px
    r = s // 2
    h, w = shape
    flat = img.reshape(-1)
    for c0 in range(0, x_px.size, chunk):
        sl = slice(c0, c0 + chunk)
        cx = np.rint(x_px[sl]).astype(np.int64)
        cy = np.rint(y_px[sl]).astype(np.int64)
        ev = model.evaluate(x_px[sl] - (cx - r), y_px[sl] - (cy - r), z[sl], s, derivatives=False)
        st = (ev.psf * ph[sl, None, None]).astype(np.float32)
        k = np.arange(s) - r
        yy = cy[:, None, None] + k[None, :, None]
        xx = cx[:, None, None] + k[None, None, :]
        yy, xx = np.broadcast_arrays(yy, xx)
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(flat, yy[ok] * w + xx[ok], st[ok])
    return img


# ----------------------------------------------------------------------------- spline


def _bspline_weights(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline weights of the 4 coefficients around a point (offset ``u`` ∈ [0, 1)
    past the base index, coefficients at base −1 … base +2) and their derivatives by u."""
    u = u[:, None]
    w = np.concatenate(
        [
            (1 - u) ** 3 / 6,
            (3 * u**3 - 6 * u**2 + 4) / 6,
            (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6,
            u**3 / 6,
        ],
        axis=1,
    )
    dw = np.concatenate(
        [-((1 - u) ** 2) / 2, (9 * u**2 - 12 * u) / 6, (-9 * u**2 + 6 * u + 3) / 6, u**2 / 2], axis=1
    )
    return w, dw


def file_sha256(path: str | Path) -> str:
    """sha256 of a calibration file's bytes (what a bundle records)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class SplinePSF:
    """Tricubic B-spline PSF from a measured stack ``values`` (Z, S, S), S odd.

    Slice ``i`` is the PSF of an emitter at ``z = z0_nm + i·dz_nm``, centred on the middle
    pixel. A single slice is a 2-D model (z ignored). ``meta`` carries calibration
    provenance (source file, residuals) and is saved with the model.
    """

    values: np.ndarray
    pixel_nm: float
    z0_nm: float = 0.0
    dz_nm: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    _pad: int = field(init=False, repr=False, compare=False, default=0)
    _coef: np.ndarray = field(init=False, repr=False, compare=False, default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        v = np.asarray(self.values, np.float64)
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3 or v.shape[1] != v.shape[2] or v.shape[1] % 2 == 0 or v.shape[1] < 5:
            raise InvalidValue(
                f"SplinePSF.values must be (Z, S, S) with S odd >= 5, got {np.shape(self.values)}"
            )
        if not np.isfinite(v).all():
            raise InvalidValue("SplinePSF.values contains non-finite numbers")
        if self.pixel_nm <= 0:
            raise InvalidValue(f"SplinePSF.pixel_nm must be positive, got {self.pixel_nm}")
        if v.shape[0] > 1 and self.dz_nm <= 0:
            raise InvalidValue(f"SplinePSF.dz_nm must be positive for a 3-D stack, got {self.dz_nm}")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "_coef", self._coefficients(v))

    # --- construction ------------------------------------------------------------------
    def _coefficients(self, v: np.ndarray) -> np.ndarray:
        """B-spline coefficients, padded: xy by zeros far enough for any window, z by edges."""
        zpad = 3
        # beyond the measured window the PSF is zero: pad xy with zeros before filtering,
        # generously enough for any fit window
        pad = 3 * v.shape[1] + 8
        object.__setattr__(self, "_pad", pad)
        vp = np.pad(v, ((0, 0), (pad, pad), (pad, pad)))
        if v.shape[0] == 1:  # 2-D: filter in x, y only; every z gives the same slice
            return np.repeat(ndimage.spline_filter(vp[0], order=3, mode="mirror")[None], 2 * zpad + 1, 0)
        # z: edge slices repeated (the model is clamped to its calibrated range)
        vz = np.concatenate([np.repeat(vp[:1], zpad, 0), vp, np.repeat(vp[-1:], zpad, 0)], 0)
        return ndimage.spline_filter(vz, order=3, mode="mirror")

    # --- properties ---------------------------------------------------------------------
    @property
    def size_px(self) -> int:
        return int(self.values.shape[1])

    @property
    def n_z(self) -> int:
        return int(self.values.shape[0])

    @property
    def is_3d(self) -> bool:
        return self.n_z > 1

    @property
    def z_range_nm(self) -> tuple[float, float]:
        return (self.z0_nm, self.z0_nm + (self.n_z - 1) * self.dz_nm)

    @property
    def window_px(self) -> int:
        return self.size_px

    def z_index(self, z_nm: np.ndarray) -> np.ndarray:
        """Fractional slice index of ``z_nm`` (clamped to the stack)."""
        if not self.is_3d:
            return np.zeros_like(np.asarray(z_nm, np.float64))
        t = (np.asarray(z_nm, np.float64) - self.z0_nm) / self.dz_nm
        return np.clip(t, 0.0, self.n_z - 1.0)

    # --- evaluation ---------------------------------------------------------------------
    def evaluate(
        self, x_px: np.ndarray, y_px: np.ndarray, z_nm: np.ndarray, size: int, derivatives: bool = True
    ) -> PSFEval:
        """PSF (and derivatives) on ``size × size`` windows for emitters at (x_px, y_px, z_nm)."""
        x = np.atleast_1d(np.asarray(x_px, np.float64))
        y = np.atleast_1d(np.asarray(y_px, np.float64))
        n = x.size
        z = np.broadcast_to(np.asarray(z_nm, np.float64), (n,))
        coef, pad = self._coef, self._pad
        c = (self.size_px - 1) / 2.0 + pad
        # grid coordinate of window pixel k: c + k - x  (same fractional part for every k)
        tx, ty = c - x, c - y
        ix, iy = np.floor(tx).astype(np.int64), np.floor(ty).astype(np.int64)
        wx, dwx = _bspline_weights(tx - ix)
        wy, dwy = _bspline_weights(ty - iy)
        tz = self.z_index(z) + 3  # padded z
        iz = np.minimum(np.floor(tz).astype(np.int64), coef.shape[0] - 3)
        wz, dwz = _bspline_weights(tz - iz)
        span = size + 3
        ny, nx = coef.shape[1], coef.shape[2]
        rows = iy[:, None] - 1 + np.arange(span)[None, :]
        cols = ix[:, None] - 1 + np.arange(span)[None, :]
        if rows.min() < 0 or cols.min() < 0 or rows.max() >= ny or cols.max() >= nx:
            raise ValueError(f"emitter too far outside the {size}-px window for the spline PSF")
        zs = iz[:, None] - 1 + np.arange(4)[None, :]
        slab = coef[zs[:, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]  # (n,4,sp,sp)
        a = np.einsum("na,nayx->nyx", wz, slab)

        def along_y(m: np.ndarray, w: np.ndarray) -> np.ndarray:
            win = np.lib.stride_tricks.sliding_window_view(m, 4, axis=1)  # (n, size, sp, 4)
            return np.einsum("nkxa,na->nkx", win, w)

        def along_x(m: np.ndarray, w: np.ndarray) -> np.ndarray:
            win = np.lib.stride_tricks.sliding_window_view(m, 4, axis=2)  # (n, size, size, 4)
            return np.einsum("nkla,na->nkl", win, w)

        b = along_y(a, wy)
        psf = along_x(b, wx)
        if not derivatives:
            return PSFEval(psf)
        dx = -along_x(b, dwx)
        dy = -along_x(along_y(a, dwy), wx)
        if self.is_3d:
            az = np.einsum("na,nayx->nyx", dwz, slab)
            inside = (self.z_index(z) > 0) & (self.z_index(z) < self.n_z - 1)
            dz = along_x(along_y(az, wy), wx) * (inside / self.dz_nm)[:, None, None]
        else:
            dz = np.zeros_like(psf)
        return PSFEval(psf, dx, dy, dz)

    # --- files --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One ``.npz``: ``values`` (Z, S, S) float32 and a JSON ``meta`` string."""
        p = Path(path)
        meta = dict(self.meta, kind="spline", pixel_nm=self.pixel_nm, z0_nm=self.z0_nm, dz_nm=self.dz_nm)
        gz = meta.pop("gaussian_z", None)
        arrays: dict[str, np.ndarray] = {
            "values": self.values.astype(np.float32),
            "meta": np.array(json.dumps(meta, default=float)),
        }
        if gz is not None:
            arrays["gaussian_z"] = np.array(json.dumps(gz))
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        return p


@dataclass(frozen=True)
class GaussianZPSF:
    """Calibrated astigmatic Gaussian: per-axis ``(σ0_nm, c_nm, d_nm, A, B)``.

    ``σ(z) = σ0·sqrt(1 + u² + A u³ + B u⁴)``, ``u = (z − c)/d`` (Huang et al. 2008).
    A 2-D Gaussian is ``A = B = 0`` with a huge ``d``.
    """

    sx: tuple[float, float, float, float, float]
    sy: tuple[float, float, float, float, float]
    pixel_nm: float
    z_range: tuple[float, float] = (-600.0, 600.0)
    window: int = 13

    @property
    def is_3d(self) -> bool:
        return True

    @property
    def z_range_nm(self) -> tuple[float, float]:
        return self.z_range

    @property
    def window_px(self) -> int:
        return self.window

    @staticmethod
    def _sigma(p: tuple[float, ...], z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s0, c, d, a, b = p
        u = (z - c) / d
        q = np.maximum(1 + u**2 + a * u**3 + b * u**4, 1e-3)
        s = s0 * np.sqrt(q)
        ds = s0 * (2 * u + 3 * a * u**2 + 4 * b * u**3) / (2 * np.sqrt(q) * d)
        return s, ds

    def sigmas_nm(self, z_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.asarray(z_nm, np.float64)
        return self._sigma(self.sx, z)[0], self._sigma(self.sy, z)[0]

    def evaluate(
        self, x_px: np.ndarray, y_px: np.ndarray, z_nm: np.ndarray, size: int, derivatives: bool = True
    ) -> PSFEval:
        x = np.atleast_1d(np.asarray(x_px, np.float64))[:, None]
        y = np.atleast_1d(np.asarray(y_px, np.float64))[:, None]
        z = np.broadcast_to(np.asarray(z_nm, np.float64), (x.shape[0],))
        sxn, dsxn = self._sigma(self.sx, z)
        syn, dsyn = self._sigma(self.sy, z)
        a = self.pixel_nm
        sx, sy = (sxn / a)[:, None], (syn / a)[:, None]
        k = np.arange(size, dtype=np.float64)[None, :]
        ex, dex, dsx = _gauss_edges(k, x, sx)
        ey, dey, dsy = _gauss_edges(k, y, sy)
        psf = ey[:, :, None] * ex[:, None, :]
        if not derivatives:
            return PSFEval(psf)
        dx = ey[:, :, None] * dex[:, None, :]
        dy = dey[:, :, None] * ex[:, None, :]
        dz = (dsx * (dsxn / a)[:, None])[:, None, :] * ey[:, :, None] + (dsy * (dsyn / a)[:, None])[
            :, :, None
        ] * ex[:, None, :]
        return PSFEval(psf, dx, dy, dz)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sx": list(self.sx),
            "sy": list(self.sy),
            "z_range": list(self.z_range),
            "window": self.window,
        }


def _gauss_edges(
    coord: np.ndarray, x0: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-integrated 1-D Gaussian along one axis and its derivatives by x0 and by s."""
    lo = coord - x0 - 0.5
    hi = coord - x0 + 0.5
    de = 0.5 * (erf(hi / (_SQRT2 * s)) - erf(lo / (_SQRT2 * s)))
    glo = np.exp(-(lo**2) / (2 * s**2))
    ghi = np.exp(-(hi**2) / (2 * s**2))
    d_x0 = (glo - ghi) / (_SQRT2PI * s)
    d_s = (lo * glo - hi * ghi) / (_SQRT2PI * s**2)
    return de, d_x0, d_s


def load_psf(path: str | Path) -> SplinePSF:
    """Read a PSF calibration written by :meth:`SplinePSF.save` (``smartscope calibrate psf``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"PSF file {p} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            values = z["values"]
            meta = json.loads(str(z["meta"]))
            gz = json.loads(str(z["gaussian_z"])) if "gaussian_z" in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidValue(f"{p}: not a smartscope PSF file ({exc})") from exc
    if meta.get("kind") != "spline":
        raise InvalidValue(f"{p}: meta.kind is {meta.get('kind')!r}, expected 'spline'")
    if gz is not None:
        meta["gaussian_z"] = gz
    return SplinePSF(
        values,
        pixel_nm=float(meta["pixel_nm"]),
        z0_nm=float(meta.get("z0_nm", 0.0)),
        dz_nm=float(meta.get("dz_nm", 0.0)),
        meta={k: v for k, v in meta.items() if k not in ("kind", "pixel_nm", "z0_nm", "dz_nm")},
    )


def gaussian_z_of(psf: SplinePSF) -> GaussianZPSF | None:
    """The calibrated Gaussian-z model stored beside a spline (None when not calibrated)."""
    gz = psf.meta.get("gaussian_z")
    if gz is None:
        return None
    return GaussianZPSF(
        sx=tuple(gz["sx"]),
        sy=tuple(gz["sy"]),
        pixel_nm=psf.pixel_nm,
        z_range=tuple(gz["z_range"]),
        window=int(gz.get("window", psf.size_px)),
    )


__all__ += ["gaussian_z_of", "render_model", "render_model_px"]
