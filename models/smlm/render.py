"""Super-resolution rendering and drift estimation from localization tables.

* :func:`render_histogram` — counts per render pixel.
* :func:`render_gaussian` — each localization spread as a pixel-integrated Gaussian of
  its own uncertainty (or a fixed sigma), normalised to 1, so the image sums to the number
  of localizations inside the field.
* :func:`render_z_color` — 3-D tables: a Gaussian render per z slab, coloured by z
  (matplotlib colormap), brightness from the localization density; RGB float32 in 0..1.
  :func:`save_png` writes it.
* :func:`estimate_drift` — drift by cross-correlation of partial renders: the run is
  split into time segments, each rendered and cross-correlated with the first; sub-pixel
  peak by a 3-point Gaussian fit; per-frame drift by linear interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import erf

from smartscope.exceptions import InvalidValue
from smartscope.models.smlm.table import LocTable

__all__ = [
    "DriftEstimate",
    "correct_drift",
    "estimate_drift",
    "field_shape",
    "render_gaussian",
    "render_histogram",
    "render_z_color",
    "save_png",
]


def field_shape(extent_nm: tuple[float, float], pixel_nm: float) -> tuple[int, int]:
    """Render-grid shape (rows, cols) covering ``extent_nm`` = (height_nm, width_nm)."""
    if pixel_nm <= 0:
        raise InvalidValue(f"render pixel_nm must be positive, got {pixel_nm}")
    h, w = extent_nm
    if h <= 0 or w <= 0:
        raise InvalidValue(f"extent_nm must be positive, got {extent_nm}")
    return math.ceil(h / pixel_nm), math.ceil(w / pixel_nm)


def render_histogram(table: LocTable, pixel_nm: float, extent_nm: tuple[float, float]) -> np.ndarray:
    """2-D histogram (float32 counts) on a grid of ``pixel_nm`` covering ``extent_nm``
    (height, width) from the origin; localizations outside are dropped."""
    shape = field_shape(extent_nm, pixel_nm)
    col = np.floor(table.x_nm / pixel_nm).astype(np.int64)
    row = np.floor(table.y_nm / pixel_nm).astype(np.int64)
    ok = (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    flat = np.bincount(row[ok] * shape[1] + col[ok], minlength=shape[0] * shape[1])
    return flat.reshape(shape).astype(np.float32)


def _edge_weights(centre: np.ndarray, sig: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Integrated 1-D Gaussian over render pixels ``k`` (n, K), normalised to 1 per row."""
    lo = (k - centre[:, None]) / (math.sqrt(2.0) * sig[:, None])
    hi = (k + 1 - centre[:, None]) / (math.sqrt(2.0) * sig[:, None])
    w = 0.5 * (erf(hi) - erf(lo))
    s = w.sum(1, keepdims=True)
    return np.asarray(w / np.where(s > 0, s, 1.0))


def render_gaussian(
    table: LocTable,
    pixel_nm: float,
    extent_nm: tuple[float, float],
    sigma_nm: float | None = None,
    min_sigma_nm: float | None = None,
    chunk: int = 200_000,
) -> np.ndarray:
    """Gaussian rendering: each localization contributes a unit-mass integrated Gaussian.

    ``sigma_nm`` None uses each localization's uncertainty (rms of ``sigma_x_nm`` and
    ``sigma_y_nm``), floored at ``min_sigma_nm`` (default: half a render pixel). The kernel
    window is ±4 sigma, renormalised, so every localization whose centre lies inside the
    field adds exactly 1 (less only where the window leaves the field).
    """
    shape = field_shape(extent_nm, pixel_nm)
    floor = 0.5 * pixel_nm if min_sigma_nm is None else min_sigma_nm
    if sigma_nm is not None:
        if sigma_nm <= 0:
            raise InvalidValue(f"sigma_nm must be positive, got {sigma_nm}")
        sig_all = np.full(len(table), float(sigma_nm))
    else:
        sig_all = np.sqrt(0.5 * (table.sigma_x_nm**2 + table.sigma_y_nm**2))
        sig_all = np.where(np.isfinite(sig_all), sig_all, floor)
    sig_all = np.maximum(sig_all, floor) / pixel_nm  # render pixels
    cx_all = table.x_nm / pixel_nm
    cy_all = table.y_nm / pixel_nm
    inside = (cx_all >= 0) & (cx_all < shape[1]) & (cy_all >= 0) & (cy_all < shape[0])
    out = np.zeros(shape[0] * shape[1], np.float64)
    idx_all = np.flatnonzero(inside)
    for start in range(0, idx_all.size, chunk):
        idx = idx_all[start : start + chunk]
        cx, cy, sig = cx_all[idx], cy_all[idx], sig_all[idx]
        r = math.ceil(4.0 * float(sig.max())) + 1
        k = np.arange(-r, r + 1)[None, :]
        x0 = np.floor(cx).astype(np.int64)
        y0 = np.floor(cy).astype(np.int64)
        kx = x0[:, None] + k
        ky = y0[:, None] + k
        wx = _edge_weights(cx, sig, kx.astype(np.float64))
        wy = _edge_weights(cy, sig, ky.astype(np.float64))
        okx = (kx >= 0) & (kx < shape[1])
        oky = (ky >= 0) & (ky < shape[0])
        w = wy[:, :, None] * wx[:, None, :]
        ok = oky[:, :, None] & okx[:, None, :]
        flat = ky[:, :, None] * shape[1] + kx[:, None, :]
        out += np.bincount(flat[ok], weights=w[ok], minlength=out.size)
    return out.reshape(shape).astype(np.float32)


def render_z_color(
    table: LocTable,
    pixel_nm: float,
    extent_nm: tuple[float, float],
    z_range_nm: tuple[float, float] | None = None,
    n_slabs: int = 16,
    cmap: str = "turbo",
    saturation_percentile: float = 99.5,
) -> np.ndarray:
    """RGB (H, W, 3) float32 in 0..1: each localization a unit-mass Gaussian (as in
    :func:`render_gaussian`) in the colour of its z (``z_range_nm``: colour scale limits,
    default the 1st–99th percentile of z), brightness saturating at the given
    percentile of the summed density. Localizations without z are left out."""
    from matplotlib import colormaps

    if n_slabs < 2:
        raise ValueError(f"n_slabs must be >= 2, got {n_slabs}")
    has = np.isfinite(table.z_nm)
    if not has.any():
        raise ValueError("render_z_color: the table has no z (a 2-D localization table)")
    t = table.select(has)
    lo, hi = z_range_nm if z_range_nm is not None else tuple(np.percentile(t.z_nm, [1, 99]))
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, n_slabs + 1)
    slab = np.clip(np.digitize(t.z_nm, edges) - 1, 0, n_slabs - 1)
    colours = colormaps[cmap](np.linspace(0, 1, n_slabs))[:, :3]
    shape = field_shape(extent_nm, pixel_nm)
    rgb = np.zeros((*shape, 3), np.float64)
    total = np.zeros(shape, np.float64)
    for k in range(n_slabs):
        m = slab == k
        if not m.any():
            continue
        img = render_gaussian(t.select(m), pixel_nm, extent_nm).astype(np.float64)
        rgb += img[..., None] * colours[k]
        total += img
    sat = float(np.percentile(total[total > 0], saturation_percentile)) if (total > 0).any() else 1.0
    scale = np.minimum(total / max(sat, 1e-12), 1.0) / np.maximum(total, 1e-12)
    return (rgb * scale[..., None]).astype(np.float32)


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an RGB float image (0..1) as an 8-bit PNG."""
    import matplotlib.image as mpimg

    p = Path(path)
    mpimg.imsave(p, np.clip(rgb, 0.0, 1.0))
    return p


@dataclass(frozen=True, slots=True)
class DriftEstimate:
    """Drift at segment centres and interpolated per frame (nm; subtract to correct)."""

    segment_frames: np.ndarray  # centre frame of each segment
    segment_dx_nm: np.ndarray
    segment_dy_nm: np.ndarray
    frames: np.ndarray  # every frame from min to max
    dx_nm: np.ndarray
    dy_nm: np.ndarray

    def at(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = np.asarray(frame, dtype=np.float64)
        return (
            np.interp(f, self.segment_frames, self.segment_dx_nm),
            np.interp(f, self.segment_frames, self.segment_dy_nm),
        )


def _subpixel_peak(cc: np.ndarray) -> tuple[float, float]:
    """Peak of a 2-D correlation (fftshifted) with a 3-point Gaussian fit per axis."""
    iy, ix = np.unravel_index(int(np.argmax(cc)), cc.shape)

    def refine(m1: float, m0: float, p1: float) -> float:
        vals = np.log(np.maximum(np.array([m1, m0, p1]), 1e-12))
        den = vals[0] - 2 * vals[1] + vals[2]
        return 0.0 if den >= 0 else float(0.5 * (vals[0] - vals[2]) / den)

    h, w = cc.shape
    dy = refine(cc[(iy - 1) % h, ix], cc[iy, ix], cc[(iy + 1) % h, ix])
    dx = refine(cc[iy, (ix - 1) % w], cc[iy, ix], cc[iy, (ix + 1) % w])
    return iy + dy - h // 2, ix + dx - w // 2


def estimate_drift(
    table: LocTable,
    n_segments: int = 10,
    pixel_nm: float = 20.0,
    blur_nm: float = 30.0,
    extent_nm: tuple[float, float] | None = None,
    max_drift_nm: float = 1000.0,
) -> DriftEstimate:
    """Drift by cross-correlation of partial renders (segment i vs segment 0).

    Segments hold equal numbers of frames. Each is rendered as a histogram at ``pixel_nm``,
    blurred by ``blur_nm``; the correlation peak is searched within ``max_drift_nm``.
    Drift of the first segment is zero by definition.
    """
    if n_segments < 2:
        raise ValueError(f"n_segments must be >= 2, got {n_segments}")
    if len(table) == 0:
        raise InvalidValue("cannot estimate drift from an empty localization table")
    if extent_nm is None:
        extent_nm = (float(table.y_nm.max()) + pixel_nm, float(table.x_nm.max()) + pixel_nm)
    f0, f1 = int(table.frame.min()), int(table.frame.max())
    bounds = np.linspace(f0, f1 + 1, n_segments + 1)
    seg_frames = 0.5 * (bounds[:-1] + bounds[1:]) - 0.5
    imgs = []
    for i in range(n_segments):
        m = (table.frame >= bounds[i]) & (table.frame < bounds[i + 1])
        img = render_histogram(table.select(m), pixel_nm, extent_nm).astype(np.float64)
        img = ndimage.gaussian_filter(img, blur_nm / pixel_nm)
        imgs.append(img - img.mean())
    ref_f = np.fft.rfft2(imgs[0])
    shape = imgs[0].shape
    yy, xx = np.meshgrid(
        np.arange(shape[0]) - shape[0] // 2, np.arange(shape[1]) - shape[1] // 2, indexing="ij"
    )
    window = (np.hypot(yy, xx) * pixel_nm) <= max_drift_nm
    dx = np.zeros(n_segments)
    dy = np.zeros(n_segments)
    for i in range(1, n_segments):
        cc = np.fft.irfft2(np.fft.rfft2(imgs[i]) * np.conj(ref_f), s=shape)
        cc = np.fft.fftshift(cc)
        cc = np.where(window, cc, cc.min())
        sy, sx = _subpixel_peak(cc - cc.min())
        dy[i] = sy * pixel_nm
        dx[i] = sx * pixel_nm
    frames = np.arange(f0, f1 + 1)
    return DriftEstimate(
        segment_frames=seg_frames,
        segment_dx_nm=dx,
        segment_dy_nm=dy,
        frames=frames,
        dx_nm=np.interp(frames, seg_frames, dx),
        dy_nm=np.interp(frames, seg_frames, dy),
    )


def correct_drift(table: LocTable, drift: DriftEstimate) -> LocTable:
    dx, dy = drift.at(table.frame)
    return table.shifted(dx, dy)
