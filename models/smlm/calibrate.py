"""Calibrate a user's microscope for SMLM: camera (photon transfer) and PSF (beads or data).

* :func:`calibrate_camera` — offset, conversion gain and read noise from a dark stack and
  flat-field stacks at several light levels: per pixel, the temporal variance grows with
  the mean as ``var = F²·g·(mean − offset) + σ_read²`` (``g`` ADU per photoelectron,
  ``F² = 2`` for an EMCCD). → :class:`CameraCalibration`. Per-pixel sCMOS maps are kept
  only as far as the pixels really differ (:class:`MapEstimate`): a map estimated from a
  hundred frames is mostly noise, and dividing data by a noisy gain multiplies it.
* :func:`calibrate_psf_beads` — a cubic-spline PSF (SMAP/DECODE style) from a bead
  z-stack: beads found, cut out, registered in x, y (sub-pixel) and z, averaged,
  normalised, and z = 0 put at the best focus (astigmatic: where the x and y widths are
  equal). A calibrated Gaussian-z model (Huang et al. 2008) is fitted to the same average.
  Fit residuals per slice (reduced χ² of the model against every bead) come with it.
* :func:`calibrate_psf_from_data` — a 2-D PSF from isolated emitters in SMLM data, for
  users without beads: bright, isolated detections are fitted, registered and averaged,
  then re-registered with the averaged model; that spline is kept only when it explains
  emitters it was not fitted to better than the Gaussian it started from
  (:class:`ModelChoice`). Invariant: never worse than that Gaussian on held-out emitters.
* :func:`plot_psf_report`, :func:`plot_ptc` — the figures written beside the files.

Stacks are (Z or T, Y, X) camera ADU. Slice ``i`` of a bead stack is taken with the focus
moved up by ``i·z_step_nm`` (a bead's height above the focal plane falls through the
stack); ``reverse=True`` for stacks taken the other way.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage, optimize

from smartscope.exceptions import InvalidValue
from smartscope.models.smlm.localize_classical import (
    CameraModel,
    detect_spots,
    fit_psf_model,
    fit_spots,
    integrated_gaussian,
)
from smartscope.simulators.camera import CameraMaps
from smartscope.simulators.camera_calibration import CameraCalibration, load_camera
from smartscope.simulators.psf_models import GaussianZPSF, SplinePSF, file_sha256, load_psf

__all__ = [
    "MapEstimate",
    "ModelChoice",
    "PSFCalibrationReport",
    "UserCalibration",
    "calibrate_camera",
    "calibrate_psf_beads",
    "calibrate_psf_from_data",
    "gaussian_psf",
    "plot_psf_report",
    "plot_ptc",
]


@dataclass(frozen=True)
class UserCalibration:
    """A user's PSF and/or camera as loaded from the calibration files, with their sha256
    (what training renders with and what a bundle records)."""

    psf: SplinePSF | None = None
    psf_file: str = ""
    psf_sha256: str = ""
    camera: CameraCalibration | None = None
    camera_maps: CameraMaps | None = None
    camera_file: str = ""
    camera_sha256: str = ""

    @classmethod
    def load(cls, psf: Path | None = None, camera: Path | None = None) -> UserCalibration:
        """Read ``psf`` (``calibrate psf`` output) and ``camera`` (``calibrate camera``)."""
        kw: dict[str, Any] = {}
        if psf is not None:
            kw.update(psf=load_psf(psf), psf_file=Path(psf).name, psf_sha256=file_sha256(psf))
        if camera is not None:
            cal, maps = load_camera(camera)
            kw.update(
                camera=cal, camera_maps=maps, camera_file=Path(camera).name, camera_sha256=file_sha256(camera)
            )
        return cls(**kw)


# ============================================================================ camera


def _as_stack(a: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 3 or arr.shape[0] < 2:
        raise InvalidValue(f"{what}: expected a (T, Y, X) stack of at least 2 frames, got shape {arr.shape}")
    return arr.astype(np.float64)


@dataclass(frozen=True)
class MapEstimate:
    """One per-pixel camera map as calibrated, and what was kept of it and why.

    Each pixel's raw estimate (dark mean; log of the dark variance; log of the photon-transfer
    slope) has a standard error. The real pixel-to-pixel spread ``τ`` is the covariance
    between two independent half estimates (even and odd frames): estimation noise does not
    survive it. A map whose ``τ²`` is not significantly above zero (``z`` < 3) is dropped
    (every pixel takes the global value); otherwise each pixel keeps the fraction
    ``τ² / (τ² + se²)`` of its deviation from the global value (empirical-Bayes shrinkage).

    Attributes
    ----------
    name : "offset", "read_noise" or "gain".
    kept : whether the map stays per pixel.
    global_value : offset ADU, read noise e⁻ rms, gain ADU/e⁻ (median pixel).
    spread, noise : real spread and per-pixel standard error of the raw estimate: ADU for the
        offset, % of the value for read noise and gain.
    spread_upper : what the frames can rule out: a real spread above this would have been seen.
    reliability : ``τ² / (τ² + se²)`` at the median pixel (0 when dropped).
    z : significance of the real spread (covariance of the halves over its s.e.).
    frames : frames per stack the estimate used (dark; flats: per light level).
    frames_needed : frames per stack for a map that keeps 90 % of each pixel's deviation —
        of the measured spread when kept, of ``spread_upper`` when dropped.
    """

    name: str
    kept: bool
    global_value: float
    spread: float
    spread_upper: float
    noise: float
    reliability: float
    z: float
    frames: int
    frames_needed: int

    @property
    def unit(self) -> str:
        return "ADU" if self.name == "offset" else "%"

    def describe(self) -> str:
        """One clause: what was kept and why."""

        def q(v: float) -> str:
            return f"{v:.2g} ADU" if self.name == "offset" else f"{v:.2g} %"

        label = self.name.replace("_", " ")
        if self.kept:
            return (
                f"{label} per pixel (real spread {q(self.spread)}, noise {q(self.noise)}: "
                f"{100 * self.reliability:.0f} % of each deviation kept; "
                f"90 % needs {max(self.frames_needed, 2)} frames)"
            )
        return (
            f"{label} uniform (its spread is estimation noise, {q(self.noise)}; a real spread up to "
            f"{q(self.spread_upper)} may hide in it, mapping one that size needs {self.frames_needed} frames)"
        )


def _shrink(
    theta: np.ndarray,
    se2_model: np.ndarray,
    halves: tuple[np.ndarray, np.ndarray],
    name: str,
    frames: int,
    scale: float,
    center: float | None = None,
    min_z: float = 3.0,
) -> tuple[np.ndarray, MapEstimate, float]:
    """Empirical-Bayes shrinkage of one map's raw per-pixel estimates ``theta`` toward their
    median. ``se2_model``: each pixel's estimation variance up to a common factor (the
    factor is set so the noise and the split-half spread add up to the observed variance);
    ``halves``: the same estimate from even and odd frames; ``scale``: unit of the report
    (1 for ADU, 100 for % in the log domain); ``center``: the global value (default: the
    median pixel). Returns (estimate per pixel, its :class:`MapEstimate` with
    ``global_value`` left 0, global value in ``theta``'s domain)."""
    t = theta.ravel()
    n = t.size
    mu = float(np.median(t)) if center is None else center
    a = halves[0].ravel() - halves[0].mean()
    b = halves[1].ravel() - halves[1].mean()
    tau2 = float(np.mean(a * b))
    tau2_se = math.sqrt(float(np.mean(a * a)) * float(np.mean(b * b)) / n) + 1e-300
    z = tau2 / tau2_se
    noise2 = max(float(np.var(t)) - max(tau2, 0.0), 1e-30)
    se2 = np.broadcast_to(se2_model, theta.shape) * (noise2 / max(float(np.mean(se2_model)), 1e-30))
    se2_med = float(np.median(se2))
    kept = z >= min_z and tau2 > 0
    upper2 = max(tau2, 0.0) + min_z * tau2_se
    if kept:
        est = mu + tau2 / (tau2 + se2) * (theta - mu)
        reliability = tau2 / (tau2 + se2_med)
        need = frames * 9.0 * se2_med / tau2
    else:
        est = np.full(theta.shape, mu)
        reliability = 0.0
        need = frames * 9.0 * se2_med / upper2
    info = MapEstimate(
        name=name,
        kept=bool(kept),
        global_value=0.0,
        spread=scale * math.sqrt(max(tau2, 0.0)),
        spread_upper=scale * math.sqrt(upper2),
        noise=scale * math.sqrt(se2_med),
        reliability=float(reliability),
        z=float(z),
        frames=frames,
        frames_needed=math.ceil(need),
    )
    return est, info, mu


def _pixel_estimates(
    dark: np.ndarray, flats: list[np.ndarray], slope_guess: float, f2: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw per-pixel estimates and their model estimation variances (up to a factor):
    ``offset`` (dark mean, ADU), ``log_read_var`` (log dark variance), ``log_slope`` (log of
    the photon-transfer slope, weighted least squares through the origin over the flats)."""
    t_d = dark.shape[0]
    offset = dark.mean(0)
    v = np.maximum(dark.var(0, ddof=1), 1e-6)
    num = np.zeros_like(offset)
    den = np.zeros_like(offset)
    for f in flats:
        t_f = f.shape[0]
        s = f.mean(0) - offset
        w = f.var(0, ddof=1) - v
        # variance of w: the flat's sample variance plus the dark's it is corrected by
        var_w = 2.0 * (slope_guess * np.maximum(s, 0.0) + v) ** 2 / (t_f - 1) + 2.0 * v**2 / (t_d - 1)
        num += s * w / var_w
        den += s * s / var_w
    den = np.maximum(den, 1e-30)
    slope = np.clip(num / den, 0.2 * slope_guess, 5.0 * slope_guess)
    return {
        "offset": (offset, v / t_d),
        "log_read_var": (np.log(v), np.full_like(v, 2.0 / (t_d - 1))),
        "log_slope": (np.log(slope), 1.0 / (den * slope * slope)),
    }


def calibrate_camera(
    dark: np.ndarray,
    flats: list[np.ndarray],
    kind: Literal["scmos", "emccd"] = "scmos",
    em_gain: float = 1.0,
    per_pixel: bool | None = None,
    max_adu: float = 65535.0,
    source: dict[str, Any] | None = None,
) -> tuple[CameraCalibration, CameraMaps | None, dict[str, Any]]:
    """Photon-transfer calibration. Returns (calibration, per-pixel maps or None, report).

    ``per_pixel`` (default: on for sCMOS) estimates the offset, read noise and gain of every
    pixel with its standard error and keeps each map only as far as the pixels really differ
    (:class:`MapEstimate`: dropped when estimation noise explains the spread, otherwise shrunk
    toward the global value); maps are None when all three are dropped. Flats with any pixel
    near ``max_adu`` are left out (saturation flattens the variance). The report holds the
    per-flat means/variances, the global fit, its R², ``maps`` (one :class:`MapEstimate` per
    map) and ``summary``, one line saying what was kept and why.
    """
    d = _as_stack(dark, "dark")
    shape = d.shape[1:]
    if not flats:
        raise InvalidValue("flats: give at least one flat-field stack (two or more for a reliable slope)")
    if kind == "emccd" and em_gain <= 1:
        raise InvalidValue("em_gain: an EMCCD calibration needs the EM gain the camera was set to (> 1)")
    offset = d.mean(0)
    dark_var = d.var(0, ddof=1)
    means, variances, used, corrected = [], [], [], []
    for i, f in enumerate(flats):
        fs = _as_stack(f, f"flat {i + 1}")
        if fs.shape[1:] != shape:
            raise InvalidValue(f"flat {i + 1}: frame shape {fs.shape[1:]} differs from the dark's {shape}")
        if fs.max() >= max_adu - 1:
            continue
        # frame-to-frame illumination flicker would add variance ∝ mean²: remove the
        # per-frame global level before taking each pixel's temporal variance
        level = fs.mean((1, 2))
        fs_c = fs - (level - level.mean())[:, None, None]
        means.append(fs.mean(0) - offset)
        variances.append(fs_c.var(0, ddof=1) - dark_var)
        used.append(i)
        corrected.append(fs_c)
    if not used:
        raise InvalidValue("flats: every flat-field stack reaches saturation; record dimmer flats")
    s_arr = np.stack(means)  # (F, Y, X) signal above offset, ADU
    v_arr = np.stack(variances)  # shot-noise variance, ADU²
    f2 = 2.0 if kind == "emccd" else 1.0
    # global slope through the origin on per-flat spatial medians
    sm = np.median(s_arr.reshape(len(used), -1), axis=1)
    vm = np.median(v_arr.reshape(len(used), -1), axis=1)
    if np.all(sm <= 0):
        raise InvalidValue("flats: no flat is brighter than the dark; check the files")
    slope = float((sm * vm).sum() / (sm * sm).sum())
    resid = vm - slope * sm
    r2 = 1.0 - float((resid**2).sum() / max(((vm - vm.mean()) ** 2).sum(), 1e-12)) if len(used) > 1 else 1.0
    per_e = em_gain if kind == "emccd" else 1.0
    gain = slope / f2 / per_e  # ADU per photoelectron
    read_adu = float(np.sqrt(np.median(dark_var)))
    do_maps = (kind == "scmos") if per_pixel is None else per_pixel
    per_flat = min(c.shape[0] for c in corrected)
    maps = None
    decisions: list[MapEstimate] = []
    if do_maps:
        if d.shape[0] < 4 or per_flat < 4:
            raise InvalidValue("per-pixel maps need at least 4 frames in the dark and in every flat")
        full = _pixel_estimates(d, corrected, slope, f2)
        even = _pixel_estimates(d[0::2], [c[0::2] for c in corrected], slope, f2)
        odd = _pixel_estimates(d[1::2], [c[1::2] for c in corrected], slope, f2)
        est: dict[str, np.ndarray] = {}
        for key, name, frames, scale, center in (
            ("offset", "offset", d.shape[0], 1.0, None),
            ("log_read_var", "read_noise", d.shape[0], 50.0, None),  # log σ = ½ log σ²; in %
            ("log_slope", "gain", per_flat, 100.0, math.log(slope)),  # the photon-transfer fit's
        ):
            theta, se2 = full[key]
            e_map, info, mu = _shrink(theta, se2, (even[key][0], odd[key][0]), name, frames, scale, center)
            g = {
                "offset": mu,
                "read_noise": math.exp(mu / 2) / gain,
                "gain": math.exp(mu) / f2 / per_e,
            }
            decisions.append(dataclasses.replace(info, global_value=g[name]))
            est[key] = e_map
        if any(m.kept for m in decisions) or per_pixel:
            gain_px = np.exp(est["log_slope"]) / f2 / per_e
            maps = CameraMaps.from_arrays(est["offset"], gain_px, np.exp(est["log_read_var"] / 2) / gain_px)
    n_frames = f"{d.shape[0]} dark + {len(used)}×{per_flat} flat frames"
    if decisions:
        summary = f"camera maps from {n_frames}: " + "; ".join(m.describe() for m in decisions)
    else:
        summary = f"camera from {n_frames}: global offset, gain and read noise ({kind}, no per-pixel maps)"
    report = {
        "flats_used": [i + 1 for i in used],
        "flat_signal_adu": sm.tolist(),
        "flat_variance_adu2": vm.tolist(),
        "ptc_slope_adu": slope,
        "ptc_r2": r2,
        "dark_frames": int(d.shape[0]),
        "maps": decisions,
        "summary": summary,
    }
    cal = CameraCalibration(
        kind=kind,
        offset_adu=float(np.median(offset)),
        gain_adu_per_e=gain,
        em_gain=em_gain if kind == "emccd" else 1.0,
        read_noise_e=read_adu / gain,
        source=dict(
            source or {},
            **{k: report[k] for k in ("flats_used", "ptc_r2", "dark_frames", "summary")},
            maps=[dataclasses.asdict(m) for m in decisions],
        ),
    )
    return cal, maps, report


def plot_ptc(report: dict[str, Any], cal: CameraCalibration, path: Path) -> Path:
    """Photon-transfer plot: shot-noise variance vs signal with the fitted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.asarray(report["flat_signal_adu"])
    v = np.asarray(report["flat_variance_adu2"])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(s, v, "o", label="flats (median pixel)")
    xs = np.linspace(0, s.max() * 1.05, 50)
    ax.plot(xs, report["ptc_slope_adu"] * xs, "-", label=f"slope {report['ptc_slope_adu']:.3g} ADU")
    ax.set_xlabel("signal above offset (ADU)")
    ax.set_ylabel("variance − dark variance (ADU²)")
    ax.set_title(
        f"{cal.kind}: gain {cal.gain_adu_per_e:.3g} ADU/e⁻, offset {cal.offset_adu:.1f} ADU, "
        f"read {cal.read_noise_e:.2f} e⁻",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ============================================================================ PSF: beads


@dataclass(frozen=True)
class ModelChoice:
    """How ``calibrate psf --from-data`` chose between its spline and a Gaussian.

    Both models are fitted to one half of the isolated emitters (frames in alternate blocks)
    and scored on the other half: each held-out emitter is fitted with each model (x, y,
    photons, background free, same window) and its maximised log-likelihood compared.
    ``gain_per_emitter`` is the spline's mean log-likelihood advantage (negative: the
    Gaussian explains unseen emitters better), ``gain_se`` its standard error.
    """

    chosen: Literal["spline", "gaussian"]
    heldout_emitters: int
    fit_emitters: int
    gain_per_emitter: float
    gain_se: float
    sigma_nm: float  # the Gaussian's width (median of the per-emitter Gaussian fits)

    def describe(self) -> str:
        return (
            f"{self.chosen} chosen: on {self.heldout_emitters} emitters not used for the fit the spline's "
            f"log-likelihood is {self.gain_per_emitter:+.2f} ± {self.gain_se:.2f} per emitter against the "
            f"Gaussian's (σ {self.sigma_nm:.0f} nm)"
        )


@dataclass(frozen=True)
class PSFCalibrationReport:
    """What a PSF calibration measured besides the model."""

    n_emitters: int  # beads (or emitters) averaged
    z_nm: np.ndarray  # z of every model slice
    reduced_chi2: np.ndarray  # per slice: mean of residual² / (model + read var) over beads
    rel_residual: np.ndarray  # per slice: rms residual / model peak
    sigma_x_nm: np.ndarray  # elliptical-Gaussian widths of the average, per slice
    sigma_y_nm: np.ndarray
    gaussian_z: GaussianZPSF | None
    choice: ModelChoice | None = None  # from data: spline or Gaussian, by held-out likelihood

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_emitters": self.n_emitters,
            "median_reduced_chi2": float(np.median(self.reduced_chi2)),
            "max_reduced_chi2": float(np.max(self.reduced_chi2)),
            "median_rel_residual": float(np.median(self.rel_residual)),
        }
        if self.choice is not None:
            out["model"] = self.choice.chosen
        return out


def _find_isolated(img: np.ndarray, sigma_px: float, half: int, min_sep_px: float, max_n: int) -> np.ndarray:
    """Bright, isolated peaks (rows, cols) at least ``half`` px from the border."""
    dog = ndimage.gaussian_filter(img, sigma_px) - ndimage.gaussian_filter(img, 3 * sigma_px)
    noise = 1.4826 * np.median(np.abs(dog - np.median(dog))) + 1e-9
    peak = (dog == ndimage.maximum_filter(dog, size=5)) & (dog > 8 * noise)
    r, c = np.nonzero(peak)
    vals = dog[r, c]
    order = np.argsort(-vals)
    r, c, vals = r[order], c[order], vals[order]
    keep = (r >= half) & (r < img.shape[0] - half) & (c >= half) & (c < img.shape[1] - half)
    # isolated from every other peak above a tenth of this one
    pts = np.stack([r, c], 1).astype(np.float64)
    for i in range(len(r)):
        d = np.hypot(*(pts - pts[i]).T)
        near = (d > 0) & (d < min_sep_px) & (vals > 0.1 * vals[i])
        if near.any():
            keep[i] = False
    out = np.stack([r[keep], c[keep]], 1)
    return out[:max_n]


def _border_bg(roi: np.ndarray) -> np.ndarray:
    """Median of the ROI border per leading index."""
    b = np.concatenate([roi[..., 0, :], roi[..., -1, :], roi[..., 1:-1, 0], roi[..., 1:-1, -1]], axis=-1)
    return np.asarray(np.median(b, axis=-1))


def _centroid(img: np.ndarray) -> tuple[float, float]:
    w = np.maximum(img - np.percentile(img, 50), 0)
    w = np.where(w > 0.2 * w.max(), w, 0)
    k = np.arange(img.shape[0], dtype=np.float64)
    m = w.sum() + 1e-12
    return float((w.sum(1) * k).sum() / m), float((w.sum(0) * k).sum() / m)


def _shift_stack(stack: np.ndarray, dz: float, dy: float, dx: float) -> np.ndarray:
    """Shift a (Z, Y, X) stack by (dz, dy, dx) samples (cubic spline, zero outside)."""
    return np.asarray(ndimage.shift(stack, (dz, dy, dx), order=3, mode="nearest"))


def _register(stack: np.ndarray, ref: np.ndarray, max_dz: float) -> tuple[float, float, float]:
    """(dz, dy, dx) that moves ``stack`` onto ``ref``: x, y by least squares on the z-sums
    (sub-pixel, cubic-spline shifts), then z by the peak of the correlation along z of the
    laterally aligned stacks (parabola through the best integer lag)."""
    a2, r2 = stack.sum(0), ref.sum(0)

    def cost(p: np.ndarray) -> float:
        s = ndimage.shift(a2, (p[0], p[1]), order=3, mode="nearest")
        return float(((s / max(s.sum(), 1e-12) - r2 / max(r2.sum(), 1e-12)) ** 2).sum())

    res = optimize.minimize(cost, np.zeros(2), method="Powell", bounds=[(-2.0, 2.0), (-2.0, 2.0)])
    dy, dx = float(res.x[0]), float(res.x[1])
    moved = _shift_stack(stack, 0.0, dy, dx)
    n = stack.shape[0]
    lags = np.arange(-int(max_dz), int(max_dz) + 1)
    cc = []
    for k in lags.tolist():  # moved[z + k] against ref[z]
        lo, hi = max(0, -k), min(n, n - k)
        cc.append(float((moved[lo + k : hi + k] * ref[lo:hi]).sum()) / max(hi - lo, 1))
    c = np.asarray(cc)
    j = int(np.argmax(c))
    frac = 0.0
    if 0 < j < len(c) - 1:
        den = c[j - 1] - 2 * c[j] + c[j + 1]
        frac = 0.0 if den >= 0 else float(0.5 * (c[j - 1] - c[j + 1]) / den)
    return -(float(lags[j]) + frac), dy, dx


def _gauss2d_widths(img: np.ndarray) -> tuple[float, float]:
    """σx, σy (px) of a pixel-integrated elliptical Gaussian fitted to ``img`` (LSQ)."""
    from scipy.special import erf

    s = img.shape[0]
    k = np.arange(s, dtype=np.float64)
    c = (s - 1) / 2

    def edges(x0: float, sig: float) -> np.ndarray:
        a = math.sqrt(2.0) * sig
        return np.asarray(0.5 * (erf((k - x0 + 0.5) / a) - erf((k - x0 - 0.5) / a)))

    def resid(p: np.ndarray) -> np.ndarray:
        x0, y0, sx, sy, n, b = p
        return (b + n * np.outer(edges(y0, sy), edges(x0, sx)) - img).ravel()

    p0 = np.array([c, c, 1.5, 1.5, max(float(img.sum()), 1e-6), 0.0])
    lo = [c - 3, c - 3, 0.3, 0.3, 0.0, -np.inf]
    hi = [c + 3, c + 3, s / 2, s / 2, np.inf, np.inf]
    r = optimize.least_squares(resid, p0, bounds=(lo, hi))
    return float(r.x[2]), float(r.x[3])


def _fit_gaussian_z(
    z: np.ndarray, sx: np.ndarray, sy: np.ndarray, pixel_nm: float, window: int
) -> GaussianZPSF:
    """Huang et al. 2008 width curves fitted (per axis) to the measured widths (nm)."""

    def curve(p: np.ndarray, zz: np.ndarray) -> np.ndarray:
        s0, c, d, a, b = p
        u = (zz - c) / d
        return np.asarray(s0 * np.sqrt(np.maximum(1 + u**2 + a * u**3 + b * u**4, 1e-6)))

    out = []
    for s in (sx, sy):
        i0 = int(np.argmin(s))
        p0 = np.array([float(s[i0]), float(z[i0]), 400.0, 0.0, 0.0])
        r = optimize.least_squares(
            lambda p, s=s: curve(p, z) - s,
            p0,
            bounds=([10.0, z.min() - 500, 50.0, -5.0, -5.0], [1000.0, z.max() + 500, 3000.0, 5.0, 5.0]),
        )
        out.append(tuple(float(v) for v in r.x))
    return GaussianZPSF(
        sx=out[0],  # type: ignore[arg-type]
        sy=out[1],  # type: ignore[arg-type]
        pixel_nm=pixel_nm,
        z_range=(float(z.min()), float(z.max())),
        window=window,
    )


def calibrate_psf_beads(
    stack: np.ndarray,
    z_step_nm: float,
    pixel_nm: float,
    camera: CameraModel | None = None,
    roi_px: int = 21,
    z_range_nm: tuple[float, float] | None = (-700.0, 700.0),
    reverse: bool = False,
    max_beads: int = 64,
    smooth_z_slices: float = 0.7,
    source: dict[str, Any] | None = None,
) -> tuple[SplinePSF, PSFCalibrationReport]:
    """Cubic-spline PSF from a bead z-stack (Z, Y, X) in camera ADU.

    ``camera`` converts ADU to photoelectrons (default: offset 100, 1 e⁻/ADU, no read
    noise — only the residual statistics depend on it). ``z_range_nm`` trims the model to
    that range around the best focus (None: keep every slice).
    """
    data = np.asarray(stack)
    if data.ndim != 3 or data.shape[0] < 5:
        raise InvalidValue(f"bead stack: expected (Z, Y, X) with at least 5 slices, got shape {data.shape}")
    if z_step_nm <= 0:
        raise InvalidValue(f"z_step_nm must be positive, got {z_step_nm}")
    if roi_px < 7 or roi_px % 2 == 0:
        raise InvalidValue(f"roi_px must be odd and >= 7, got {roi_px}")
    cam = camera or CameraModel()
    e = cam.to_electrons(data)
    if reverse:
        e = e[::-1]
    half = roi_px // 2
    proj = e.max(0)
    centres = _find_isolated(proj, 2.0, half + 2, roi_px + 2, max_beads)
    if len(centres) == 0:
        raise InvalidValue("bead stack: no isolated bright bead found (beads closer than the ROI or too dim)")
    # cut (Z, R, R) per bead, subtract each slice's border median, normalise by total light
    rois = []
    for r, c in centres:
        roi = e[:, r - half : r + half + 1, c - half : c + half + 1].astype(np.float64)
        rois.append(roi - _border_bg(roi)[:, None, None])
    beads = np.stack(rois)  # (B, Z, R, R)
    norm = beads.sum((1, 2, 3))
    ok = norm > 0
    beads, centres = beads[ok], centres[ok]
    beads = beads / norm[ok][:, None, None, None]
    # initial lateral registration: centroid of the z-sum
    shifted = []
    for b in beads:
        cy, cx = _centroid(b.sum(0))
        shifted.append(_shift_stack(b, 0.0, half - cy, half - cx))
    beads_al = np.stack(shifted)
    avg = beads_al.mean(0)
    # refine: register every bead in (z, y, x) to the average, twice
    shifts = np.zeros((len(beads), 3))
    for _ in range(2):
        out = []
        for i, b in enumerate(beads_al):
            dz, dy, dx = _register(b, avg / max(avg.sum(), 1e-12), max_dz=5.0)
            shifts[i] += (dz, dy, dx)
            out.append(_shift_stack(b, dz, dy, dx))
        beads_al = np.stack(out)
        avg = beads_al.mean(0)
    if smooth_z_slices > 0:
        avg = ndimage.gaussian_filter1d(avg, smooth_z_slices, axis=0, mode="nearest")
    # widths per slice → best focus (equal widths between the line foci, else narrowest)
    widths = np.array([_gauss2d_widths(sl) for sl in avg])
    sx, sy = widths[:, 0], widths[:, 1]
    n_z = avg.shape[0]
    diff = sx - sy
    astig = float(np.max(np.abs(diff))) > 0.3
    if astig:
        sign = np.sign(diff)
        cross = np.flatnonzero(sign[:-1] * sign[1:] < 0)
        if cross.size == 0:
            i_focus = float(np.argmin(np.abs(diff)))
        else:
            # the crossing nearest the narrowest mean width
            i_min = float(np.argmin(sx + sy))
            j = int(cross[np.argmin(np.abs(cross - i_min))])
            i_focus = j + diff[j] / (diff[j] - diff[j + 1])
    else:
        i_focus = float(np.argmin(sx + sy))
    # slice i shows the bead at height (i_focus − i)·step above the focal plane
    z_of_slice = (i_focus - np.arange(n_z)) * z_step_nm
    order = np.argsort(z_of_slice)
    z_sorted = z_of_slice[order]
    vals = avg[order]
    beads_sorted = beads_al[:, order]
    if z_range_nm is not None:
        keep = (z_sorted >= z_range_nm[0] - 1e-6) & (z_sorted <= z_range_nm[1] + 1e-6)
        if keep.sum() < 3:
            raise InvalidValue(f"z_range_nm {z_range_nm} keeps fewer than 3 slices of the stack")
        z_sorted, vals, beads_sorted = z_sorted[keep], vals[keep], beads_sorted[:, keep]
        sx, sy = sx[order][keep], sy[order][keep]
    else:
        sx, sy = sx[order], sy[order]
    scale = vals.sum((1, 2)).max()
    vals = vals / scale
    gz = _fit_gaussian_z(z_sorted, sx * pixel_nm, sy * pixel_nm, pixel_nm, roi_px) if astig else None
    meta: dict[str, Any] = dict(source or {})
    meta.update(
        method="beads",
        beads=len(beads),
        z_step_nm=z_step_nm,
        focus_slice=i_focus,
        registration_shift_rms_px=float(np.sqrt((shifts[:, 1:] ** 2).mean())),
    )
    if gz is not None:
        meta["gaussian_z"] = gz.to_dict()
    psf = SplinePSF(vals, pixel_nm, z0_nm=float(z_sorted[0]), dz_nm=z_step_nm, meta=meta)
    chi2, rel = _bead_residuals(e, centres, psf, half, i_focus, z_step_nm, cam, reverse_applied=True)
    report = PSFCalibrationReport(len(beads), z_sorted, chi2, rel, sx * pixel_nm, sy * pixel_nm, gz)
    psf.meta.update(report.summary())
    return psf, report


def _bead_residuals(
    e: np.ndarray,
    centres: np.ndarray,
    psf: SplinePSF,
    half: int,
    i_focus: float,
    z_step_nm: float,
    cam: CameraModel,
    reverse_applied: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit each bead slice with the model (x, y, N, bg free; z from the slice) and return,
    per model slice, the reduced χ² (Poisson + read variance) and rms residual / peak."""
    size = 2 * half + 1
    zs = np.arange(psf.n_z) * psf.dz_nm + psf.z0_nm
    chi2 = np.zeros(psf.n_z)
    rel = np.zeros(psf.n_z)
    rvar = cam.mean_read_var_e2
    for j, z in enumerate(zs):
        i = round(i_focus - z / z_step_nm)
        if not 0 <= i < e.shape[0]:
            chi2[j] = rel[j] = np.nan
            continue
        rois = np.stack([e[i, r - half : r + half + 1, c - half : c + half + 1] for r, c in centres])
        two_d = SplinePSF(psf.values[j], psf.pixel_nm)
        fit = fit_psf_model(rois, np.full_like(rois, rvar), two_d, iterations=30)
        ev = two_d.evaluate(fit.x_px, fit.y_px, np.zeros(len(rois)), size, derivatives=False)
        model = fit.bg[:, None, None] + fit.photons[:, None, None] * ev.psf
        res = rois - model
        chi2[j] = float(np.mean(res**2 / np.maximum(model + rvar, 1.0)))
        rel[j] = float(np.sqrt(np.mean(res**2)) / max(float(model.max()), 1e-9))
    return chi2, rel


# ============================================================================ PSF: data


def gaussian_psf(
    sigma_nm: float, pixel_nm: float, size: int, meta: dict[str, Any] | None = None
) -> SplinePSF:
    """A 2-D PSF file holding an isotropic, pixel-integrated Gaussian: values sampled for an
    emitter on the centre pixel, ``meta['model'] = 'gaussian'`` and ``sigma_nm``. Renderers
    use the spline of those values; the classical localizer fits the Gaussian itself."""
    c = (size - 1) / 2.0
    vals = integrated_gaussian(
        (size, size), np.array([c]), np.array([c]), np.array([1.0]), sigma_nm / pixel_nm
    )
    return SplinePSF(vals / vals.sum(), pixel_nm, meta=dict(meta or {}, model="gaussian", sigma_nm=sigma_nm))


def _average_psf(
    cut: np.ndarray, raw: np.ndarray, rv: np.ndarray, xy: np.ndarray, pixel_nm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Register and average normalised emitter cut-outs into a PSF (3 rounds: refit every
    centre with the average, leave out emitters the average cannot explain). Returns the
    PSF values (unit sum) and which emitters the last average kept."""
    n, roi_px = cut.shape[0], cut.shape[-1]
    half = roi_px // 2
    use = np.ones(n, bool)
    xy = xy.copy()
    avg = np.zeros((roi_px, roi_px))
    for _ in range(3):
        idx = np.flatnonzero(use)
        avg = np.mean([_fourier_shift(cut[i], half - xy[i, 1], half - xy[i, 0]) for i in idx], axis=0)
        avg = np.maximum(avg, 0.0)
        model = SplinePSF(avg / avg.sum(), pixel_nm)
        fit = fit_psf_model(raw, rv, model, iterations=30)
        ok = fit.converged & np.isfinite(fit.x_px)
        xy = np.where(ok[:, None], np.stack([fit.x_px, fit.y_px], 1), xy)
        # emitters the model cannot explain (a hidden neighbour, a doublet) leave the average
        c2 = _chi2_per_emitter(model, fit, raw, rv)
        use = ok & (c2 < 3.0 * float(np.median(c2[ok] if ok.any() else c2)))
        if use.sum() < 10:
            raise InvalidValue("SMLM stack: fewer than 10 emitters are explained by their average PSF")
    return avg / avg.sum(), use


def _fourier_shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``img`` moved by (dy, dx) px by its Fourier phase. A pixel-integrated PSF sampled at the
    camera pixel has almost nothing at the Nyquist frequency, so this is close to exact, where
    a cubic-spline shift blurs it (measured: the average 1–2 % wider, its peak 1 % low)."""
    f = ndimage.fourier_shift(np.fft.fft2(img), (dy, dx))
    return np.asarray(np.real(np.fft.ifft2(f)))


def _chi2_per_emitter(model: SplinePSF, fit: Any, raw: np.ndarray, rv: np.ndarray) -> np.ndarray:
    """Mean of residual² / (model + read variance) per emitter."""
    n, size = raw.shape[0], raw.shape[-1]
    ev = model.evaluate(fit.x_px, fit.y_px, np.zeros(n), size, derivatives=False)
    mu = fit.bg[:, None, None] + fit.photons[:, None, None] * ev.psf
    return np.asarray(np.mean((raw - mu) ** 2 / np.maximum(mu + rv, 1.0), axis=(1, 2)))


def calibrate_psf_from_data(
    frames: np.ndarray,
    pixel_nm: float,
    camera: CameraModel | None = None,
    sigma_guess_nm: float = 130.0,
    roi_px: int = 15,
    max_frames: int = 2000,
    max_emitters: int = 5000,
    min_photons: float | None = None,
    model: Literal["auto", "spline", "gaussian"] = "auto",
    block_frames: int = 16,
    source: dict[str, Any] | None = None,
) -> tuple[SplinePSF, PSFCalibrationReport]:
    """2-D PSF from isolated emitters in SMLM frames (T, Y, X) ADU, no beads: a spline or
    the Gaussian it starts from, whichever explains emitters it was not fitted to better.

    Spots are detected and fitted with a Gaussian (width free); those with no other
    detection within ``roi_px`` px, converged, and brighter than ``min_photons`` (default:
    the median) are cut out, their border's mean subtracted, normalised to unit sum,
    shifted onto the pixel grid by their fitted centre and averaged. The centres are then
    refitted with that average (the Gaussian's centring bias on an asymmetric PSF goes
    away) and the average recomputed. The Gaussian is isotropic with the median fitted
    width. ``model="auto"`` fits both to the emitters of alternate ``block_frames``-frame
    blocks and keeps the one with the higher held-out log-likelihood on the others
    (:class:`ModelChoice`), then rebuilds it from all emitters; ``"spline"`` or
    ``"gaussian"`` force one (the comparison is still reported). A Gaussian is written as
    :func:`gaussian_psf`.
    """
    data = np.asarray(frames)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InvalidValue(f"SMLM stack: expected (T, Y, X), got shape {data.shape}")
    if roi_px < 7 or roi_px % 2 == 0:
        raise InvalidValue(f"roi_px must be odd and >= 7, got {roi_px}")
    if model not in ("auto", "spline", "gaussian"):
        raise InvalidValue(f"model: {model!r} must be auto, spline or gaussian")
    cam = camera or CameraModel()
    half = roi_px // 2
    sig = sigma_guess_nm / pixel_nm
    step = max(1, data.shape[0] // max_frames)
    cuts, raws, rvars, gauss_xy, photons, sigmas, frame_of = [], [], [], [], [], [], []
    for t in range(0, data.shape[0], step):
        e = cam.to_electrons(data[t])
        rvar = cam.read_var_e2(e.shape)
        rows, cols = detect_spots(e, sig, 5.0, 2, float(rvar.mean()))
        if rows.size == 0:
            continue
        pts = np.stack([rows, cols], 1).astype(np.float64)
        d = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
        np.fill_diagonal(d, np.inf)
        iso = (d.min(1) >= roi_px) & (rows >= half) & (rows < e.shape[0] - half)
        iso &= (cols >= half) & (cols < e.shape[1] - half)
        rows, cols = rows[iso], cols[iso]
        if rows.size == 0:
            continue
        k = np.arange(roi_px)
        yy = rows[:, None, None] - half + k[None, :, None]
        xx = cols[:, None, None] - half + k[None, None, :]
        rois = e[yy, xx]
        fit = fit_spots(rois, rvar[yy, xx], sig, fit_sigma=True)
        good = fit.converged & (np.hypot(fit.x_px - half, fit.y_px - half) < 1.0)
        good &= (fit.sigma_px > 0.5 * sig) & (fit.sigma_px < 2.0 * sig)
        rv = rvar[yy, xx]
        # background from the ROI's border, not from the Gaussian fit: a Gaussian takes the
        # PSF's wings into its background, and subtracting that sharpens the average
        border = np.concatenate([rois[:, 0, :], rois[:, -1, :], rois[:, 1:-1, 0], rois[:, 1:-1, -1]], axis=1)
        bg_ring = border.mean(1)
        for i in np.flatnonzero(good):
            cuts.append(rois[i] - bg_ring[i])
            raws.append(rois[i])
            rvars.append(rv[i])
            gauss_xy.append((fit.x_px[i], fit.y_px[i]))
            photons.append(fit.photons[i])
            sigmas.append(fit.sigma_px[i])
            frame_of.append(t)
        if len(cuts) >= 4 * max_emitters:
            break
    if len(cuts) < 20:
        raise InvalidValue(f"SMLM stack: only {len(cuts)} isolated emitters found; need at least 20")
    ph = np.asarray(photons)
    thr = float(np.median(ph)) if min_photons is None else min_photons
    sel = np.flatnonzero(ph >= thr)[:max_emitters]
    cut = np.stack([cuts[i] / max(float(cuts[i].sum()), 1e-9) for i in sel])
    raw = np.stack([raws[i] for i in sel])
    rv = np.stack([rvars[i] for i in sel])
    xy = np.asarray(gauss_xy)[sel]
    sg = np.asarray(sigmas)[sel]
    # held-out split: emitters of alternate blocks of frames (one emitter's consecutive
    # frames mostly stay on one side)
    fit_half = (np.asarray(frame_of)[sel] // max(block_frames, 1)) % 2 == 0
    if min(fit_half.sum(), (~fit_half).sum()) < 20:  # too few blocks: alternate emitters
        fit_half = np.arange(len(sel)) % 2 == 0
    a, b = np.flatnonzero(fit_half), np.flatnonzero(~fit_half)
    spline_a = SplinePSF(_average_psf(cut[a], raw[a], rv[a], xy[a], pixel_nm)[0], pixel_nm)
    sigma_a = float(np.median(sg[a]))
    f_spline = fit_psf_model(raw[b], rv[b], spline_a, iterations=30)
    f_gauss = fit_spots(raw[b], rv[b], sigma_a)
    both = f_spline.converged & f_gauss.converged
    if both.sum() < 10:
        raise InvalidValue("SMLM stack: fewer than 10 held-out emitters could be fitted by both models")
    gain = 0.5 * (f_spline.loglik_ratio - f_gauss.loglik_ratio)[both]
    g_mean = float(gain.mean())
    g_se = float(gain.std(ddof=1) / math.sqrt(gain.size))
    chosen: Literal["spline", "gaussian"] = (
        model if model != "auto" else ("spline" if g_mean > 0 else "gaussian")
    )
    sigma_nm = float(np.median(sg)) * pixel_nm
    choice = ModelChoice(chosen, int(both.sum()), int(a.size), g_mean, g_se, sigma_nm)
    n = len(sel)
    meta = dict(
        source or {},
        method="from-data",
        emitters=n,
        min_photons=thr,
        model=chosen,
        model_choice=dataclasses.asdict(choice),
    )
    if chosen == "spline":
        psf_vals, use = _average_psf(cut, raw, rv, xy, pixel_nm)
        psf = SplinePSF(psf_vals, pixel_nm, meta=meta)
    else:
        psf = gaussian_psf(sigma_nm, pixel_nm, roi_px, meta)
        use = np.ones(n, bool)
    # residual statistics on the emitters kept (Poisson + read variance)
    fit = fit_psf_model(raw, rv, psf, iterations=30)
    ev = psf.evaluate(fit.x_px, fit.y_px, np.zeros(n), roi_px, derivatives=False)
    mu = fit.bg[:, None, None] + fit.photons[:, None, None] * ev.psf
    chi2 = float(np.mean(_chi2_per_emitter(psf, fit, raw, rv)[use]))
    rel = float(
        np.sqrt(np.mean((raw[use] - mu[use]) ** 2)) / max(float((mu - fit.bg[:, None, None]).max()), 1e-9)
    )
    sx, sy = _gauss2d_widths(psf.values[0])
    report = PSFCalibrationReport(
        int(use.sum()),
        np.zeros(1),
        np.array([chi2]),
        np.array([rel]),
        np.array([sx * pixel_nm]),
        np.array([sy * pixel_nm]),
        None,
        choice,
    )
    psf.meta.update(report.summary())
    return psf, report


# ============================================================================ plots


def plot_psf_report(psf: SplinePSF, report: PSFCalibrationReport, path: Path) -> Path:
    """Sections of the model, widths vs z (with the Gaussian-z fit), residuals vs z."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = psf.values
    c = psf.size_px // 2
    if psf.is_3d:
        fig, ax = plt.subplots(2, 3, figsize=(11, 6.5))
        z = report.z_nm
        ext = (-c * psf.pixel_nm, c * psf.pixel_nm, z[0], z[-1])
        ax[0, 0].imshow(v[:, c, :], aspect="auto", origin="lower", extent=ext)
        ax[0, 0].set(title="x–z section", xlabel="x (nm)", ylabel="z (nm)")
        ax[0, 1].imshow(v[:, :, c], aspect="auto", origin="lower", extent=ext)
        ax[0, 1].set(title="y–z section", xlabel="y (nm)", ylabel="z (nm)")
        picks = np.linspace(0, psf.n_z - 1, 5).round().astype(int)
        ax[0, 2].imshow(np.concatenate([v[i] / v[i].max() for i in picks], axis=1), cmap="magma")
        ax[0, 2].set(title="slices at z = " + ", ".join(f"{z[i]:.0f}" for i in picks) + " nm")
        ax[0, 2].axis("off")
        ax[1, 0].plot(z, report.sigma_x_nm, ".", label="σx (Gaussian fit)")
        ax[1, 0].plot(z, report.sigma_y_nm, ".", label="σy")
        if report.gaussian_z is not None:
            gx, gy = report.gaussian_z.sigmas_nm(z)
            ax[1, 0].plot(z, gx, "-", z, gy, "-", lw=1)
        ax[1, 0].set(xlabel="z (nm)", ylabel="width (nm)", title="widths and Gaussian-z fit")
        ax[1, 0].legend(fontsize=8)
        ax[1, 1].plot(z, report.reduced_chi2, ".-")
        ax[1, 1].axhline(1.0, color="k", lw=0.5)
        ax[1, 1].set(xlabel="z (nm)", ylabel="reduced χ²", title="model vs every bead")
        ax[1, 2].plot(z, 100 * report.rel_residual, ".-")
        ax[1, 2].set(xlabel="z (nm)", ylabel="rms residual (% of peak)", title="fit residuals")
    else:
        fig, ax = plt.subplots(1, 2, figsize=(8, 4))
        ax[0].imshow(v[0], cmap="magma")
        ax[0].set(title=f"2-D PSF from {report.n_emitters} emitters")
        prof = v[0, c]
        ax[1].plot(np.arange(psf.size_px) - c, prof / prof.max(), ".-")
        ax[1].set(
            xlabel="x (px)",
            ylabel="normalised",
            title=f"reduced χ² {report.reduced_chi2[0]:.2f}, residual {100 * report.rel_residual[0]:.1f} %",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
