"""Classical SMLM localization: detection + per-spot maximum-likelihood Gaussian fit.

The PSF model is the pixel-integrated isotropic 2-D Gaussian (Smith et al. 2010):

    mu_k = bg + N * dEx(k) * dEy(k),
    dEx(k) = 0.5 * [erf((x_k - x0 + 1/2) / (sqrt(2) s)) - erf((x_k - x0 - 1/2) / (sqrt(2) s))]

in pixel units, pixel ``k`` covering ``[k - 1/2, k + 1/2)``. Fits maximise the Poisson
likelihood of the data in photoelectrons; an sCMOS read noise of variance ``r2`` (e⁻²) is
handled by the usual Poisson approximation (data + r2 and model + r2, Huang et al. 2013);
an EMCCD's excess noise (F = 2) doubles the Cramér–Rao variances. Uncertainties are the
square roots of the diagonal of the inverse Fisher information at the estimate (CRLB).

Coordinates: localizations are reported in nm with the origin at the outer corner of pixel
(0, 0): ``x_nm = (column + 0.5 + dx) * pixel_nm`` where ``dx`` is the offset from that
pixel's centre. ``photons`` and ``bg`` (per pixel) are detected photons (photoelectrons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import erf
from scipy.stats import chi2

from smartscope.models.smlm.table import LocTable

__all__ = [
    "CameraModel",
    "ClassicalConfig",
    "ClassicalLocalizer",
    "detect_spots",
    "fit_spots",
    "integrated_gaussian",
    "render_spots",
]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class CameraModel:
    """How camera ADU map to photoelectrons.

    ``electrons = (adu - offset_adu) * e_per_adu / em_gain``. ``read_noise_e`` is the rms read
    noise in e⁻ (after EM gain division it is negligible for an EMCCD). Per-pixel sCMOS maps
    (``offset_map_adu``, ``e_per_adu_map``, ``read_noise_map_e``) override the scalars.
    """

    offset_adu: float = 100.0
    e_per_adu: float = 1.0
    em_gain: float = 1.0
    read_noise_e: float = 0.0
    emccd: bool = False
    offset_map_adu: np.ndarray | None = None
    e_per_adu_map: np.ndarray | None = None
    read_noise_map_e: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.e_per_adu <= 0:
            raise ValueError(f"CameraModel.e_per_adu must be positive, got {self.e_per_adu}")
        if self.em_gain < 1:
            raise ValueError(f"CameraModel.em_gain must be >= 1, got {self.em_gain}")
        if self.read_noise_e < 0:
            raise ValueError(f"CameraModel.read_noise_e must be >= 0, got {self.read_noise_e}")

    @property
    def excess_noise_factor(self) -> float:
        return 2.0 if self.emccd else 1.0

    def to_electrons(self, image: np.ndarray) -> np.ndarray:
        img = np.asarray(image, dtype=np.float64)
        off = self.offset_map_adu if self.offset_map_adu is not None else self.offset_adu
        gain = self.e_per_adu_map if self.e_per_adu_map is not None else self.e_per_adu
        maps = (("offset_map_adu", self.offset_map_adu), ("e_per_adu_map", self.e_per_adu_map))
        for name, m in maps:
            if m is not None and np.shape(m) != img.shape[-2:]:  # frames or (T, Y, X) stacks
                raise ValueError(f"CameraModel.{name} has shape {np.shape(m)}, frame is {img.shape}")
        return (img - off) * gain / self.em_gain

    def read_var_e2(self, shape: tuple[int, ...]) -> np.ndarray:
        """Read-noise variance per pixel in (photoelectron)², after EM-gain division."""
        if self.read_noise_map_e is not None:
            if self.read_noise_map_e.shape != shape:
                raise ValueError(
                    f"CameraModel.read_noise_map_e has shape {self.read_noise_map_e.shape}, frame is {shape}"
                )
            r = np.asarray(self.read_noise_map_e, dtype=np.float64)
        else:
            r = np.full(shape, self.read_noise_e, dtype=np.float64)
        return (r / self.em_gain) ** 2


def _edges(coord: np.ndarray, x0: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """dE, d dE/d x0, d dE/d s along one axis; coord (..., K), x0 and s (..., 1)."""
    lo = coord - x0 - 0.5
    hi = coord - x0 + 0.5
    de = 0.5 * (erf(hi / (_SQRT2 * s)) - erf(lo / (_SQRT2 * s)))
    glo = np.exp(-(lo**2) / (2 * s**2))
    ghi = np.exp(-(hi**2) / (2 * s**2))
    d_x0 = (glo - ghi) / (_SQRT2PI * s)
    d_s = (lo * glo - hi * ghi) / (_SQRT2PI * s**2)
    return de, d_x0, d_s


def integrated_gaussian(
    shape: tuple[int, int],
    x_px: np.ndarray,
    y_px: np.ndarray,
    photons: np.ndarray,
    sigma_px: float | np.ndarray,
    bg: float = 0.0,
) -> np.ndarray:
    """Expected photoelectrons per pixel for emitters at (x_px, y_px) (pixel-centre units)."""
    h, w = shape
    x = np.atleast_1d(np.asarray(x_px, np.float64))[:, None]
    y = np.atleast_1d(np.asarray(y_px, np.float64))[:, None]
    n = np.atleast_1d(np.asarray(photons, np.float64))
    s = np.broadcast_to(np.asarray(sigma_px, np.float64), n.shape)[:, None]
    ex, _, _ = _edges(np.arange(w, dtype=np.float64)[None, :], x, s)
    ey, _, _ = _edges(np.arange(h, dtype=np.float64)[None, :], y, s)
    img = np.einsum("n,ny,nx->yx", n, ey, ex)
    return img + bg


def render_spots(
    shape: tuple[int, int],
    x_px: np.ndarray,
    y_px: np.ndarray,
    photons: np.ndarray,
    sigma_px: float,
    bg: float,
    camera: CameraModel,
    rng: np.random.Generator,
) -> np.ndarray:
    """A noisy uint16 test frame from the fitter's own PSF model (for tests before the
    simulator is available): Poisson photoelectrons, Gaussian read noise, ADU conversion."""
    mu = integrated_gaussian(shape, x_px, y_px, photons, sigma_px, bg)
    e = rng.poisson(mu).astype(np.float64)
    gain = camera.em_gain
    e = rng.gamma(np.maximum(e, 1e-12), gain) * (e > 0) if camera.emccd else e * gain
    e = e + rng.normal(0.0, camera.read_noise_e, size=e.shape)
    adu = np.floor(e / camera.e_per_adu) + camera.offset_adu
    return np.clip(adu, 0, 65535).astype(np.uint16)


def _dog_norm(sigma_px: float) -> float:
    """L2 norm of the DoG kernel: the filtered image's noise s.d. per unit pixel s.d."""
    size = int(2 * math.ceil(4 * 2.5 * sigma_px) + 1)
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    k = ndimage.gaussian_filter(delta, sigma_px) - ndimage.gaussian_filter(delta, 2.5 * sigma_px)
    return float(np.sqrt((k**2).sum()))


def detect_spots(
    electrons: np.ndarray,
    sigma_px: float,
    threshold_sigma: float = 4.0,
    min_distance_px: int = 2,
    read_var_e2: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate emitter pixels: local maxima of a difference-of-Gaussians filter.

    The DoG (``sigma_px`` minus ``2.5 sigma_px``) approximates a matched filter with local
    background removal. Its noise s.d. is predicted from shot noise on the background (the
    frame's 30th percentile, robust to dense emitters) plus read noise, times the kernel's L2
    norm; maxima above ``threshold_sigma`` times that are kept. Returns (rows, cols).
    """
    img = np.asarray(electrons, dtype=np.float32)
    dog = ndimage.gaussian_filter(img, sigma_px) - ndimage.gaussian_filter(img, 2.5 * sigma_px)
    bg = max(float(np.percentile(img, 30)), 0.0)
    noise = math.sqrt(bg + read_var_e2 + 1e-6) * _dog_norm(sigma_px)
    size = 2 * min_distance_px + 1
    peaks = (dog == ndimage.maximum_filter(dog, size=size, mode="nearest")) & (dog > threshold_sigma * noise)
    rows, cols = np.nonzero(peaks)
    return rows, cols


@dataclass(frozen=True, slots=True)
class FitResult:
    """Per-spot estimates in pixel units (x, y relative to the full frame)."""

    x_px: np.ndarray
    y_px: np.ndarray
    photons: np.ndarray
    bg: np.ndarray
    sigma_px: np.ndarray
    crlb_x_px: np.ndarray
    crlb_y_px: np.ndarray
    crlb_photons: np.ndarray
    loglik_ratio: np.ndarray
    converged: np.ndarray


def _model_and_jac(theta: np.ndarray, coord: np.ndarray, fit_sigma: bool) -> tuple[np.ndarray, np.ndarray]:
    """mu (n, S, S) and d mu / d theta (n, P, S, S); theta = (x, y, N, bg[, s])."""
    x, y, n, b, s = (theta[:, i, None] for i in range(5))
    ex, dex, dsx = _edges(coord, x, s)
    ey, dey, dsy = _edges(coord, y, s)
    n3 = n[:, :, None]
    psf = ey[:, :, None] * ex[:, None, :]
    mu = b[:, :, None] + n3 * psf
    jac = [
        n3 * ey[:, :, None] * dex[:, None, :],
        n3 * dey[:, :, None] * ex[:, None, :],
        psf,
        np.ones_like(psf),
    ]
    if fit_sigma:
        jac.append(n3 * (dsy[:, :, None] * ex[:, None, :] + ey[:, :, None] * dsx[:, None, :]))
    return mu, np.stack(jac, axis=1)


def fit_spots(
    rois: np.ndarray,
    read_var: np.ndarray,
    sigma_px: float,
    fit_sigma: bool = False,
    excess_noise: float = 1.0,
    iterations: int = 30,
) -> FitResult:
    """Vectorised Levenberg–Marquardt Poisson-MLE fit of ``rois`` (n, S, S) in photoelectrons.

    ``read_var`` (n, S, S) is the per-pixel read-noise variance (e⁻²). Positions are returned
    relative to the ROI (pixel-centre units). Uses Fisher scoring with a per-spot damping
    factor; a step is accepted only if the likelihood rises.
    """
    rois = np.asarray(rois, np.float64)
    n_spots, size, _ = rois.shape
    if n_spots == 0:
        z = np.zeros(0)
        return FitResult(z, z, z, z, z, z, z, z, z, np.zeros(0, bool))
    coord = np.arange(size, dtype=np.float64)[None, :]
    gam = np.asarray(read_var, np.float64)
    data = np.maximum(rois + gam, 0.0)
    # initial guess: border median as background, excess counts as photons, centroid as position
    border = np.concatenate([rois[:, 0, :], rois[:, -1, :], rois[:, 1:-1, 0], rois[:, 1:-1, -1]], axis=1)
    b0 = np.maximum(np.median(border, axis=1), 0.1)
    excess = np.maximum(rois - b0[:, None, None], 0.0)
    n0 = np.maximum(excess.sum((1, 2)), 10.0)
    w = excess + 1e-9
    x0 = (w * coord[:, None, :]).sum((1, 2)) / w.sum((1, 2))
    y0 = (w * coord[:, :, None]).sum((1, 2)) / w.sum((1, 2))
    c = (size - 1) / 2.0
    x0 = np.clip(x0, c - 1.0, c + 1.0)
    y0 = np.clip(y0, c - 1.0, c + 1.0)
    theta = np.stack([x0, y0, n0, b0, np.full(n_spots, sigma_px)], axis=1)
    npar = 5 if fit_sigma else 4

    k = size * size
    gam_f = np.broadcast_to(gam, rois.shape).reshape(n_spots, k)
    data_f = data.reshape(n_spots, k)

    def loglik(th: np.ndarray, idx: np.ndarray) -> np.ndarray:
        x, y, n, b, s = (th[:, i, None] for i in range(5))
        ex = _edges(coord, x, s)[0]
        ey = _edges(coord, y, s)[0]
        mu = (b[:, :, None] + n[:, :, None] * ey[:, :, None] * ex[:, None, :]).reshape(-1, k)
        mu = np.maximum(mu + gam_f[idx], 1e-9)
        return (data_f[idx] * np.log(mu) - mu).sum(1)

    def fisher_of(th: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mu, jac = _model_and_jac(th, coord, fit_sigma)
        jf = jac.reshape(th.shape[0], -1, k)
        mu_t = np.maximum(mu.reshape(-1, k) + gam_f[idx], 1e-9)
        fisher = np.matmul(jf / mu_t[:, None, :], jf.transpose(0, 2, 1))
        return fisher, jf, mu_t

    everyone = np.arange(n_spots)
    lam = np.full(n_spots, 1e-3)
    ll = loglik(theta, everyone)
    converged = np.zeros(n_spots, bool)
    lo = np.array([-1.0, -1.0, 1.0, 1e-3, 0.3 * sigma_px])
    hi = np.array([size, size, np.inf, np.inf, 3.0 * sigma_px])
    active = everyone
    eye = np.eye(npar)
    for _ in range(iterations):
        if active.size == 0:
            break
        th = theta[active]
        fisher, jf, mu_t = fisher_of(th, active)
        grad = np.matmul(jf, (data_f[active] / mu_t - 1.0)[:, :, None])[:, :, 0]
        diag = np.einsum("npp->np", fisher)
        a_mat = fisher + lam[active, None, None] * diag[:, :, None] * eye
        try:
            step = np.linalg.solve(a_mat, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.zeros_like(grad)
        trial = th.copy()
        trial[:, :npar] = np.clip(th[:, :npar] + step, lo[:npar], hi[:npar])
        ll_t = loglik(trial, active)
        better = ll_t >= ll[active]
        done = better & (np.abs(step[:, :2]).max(1) < 1e-4)
        theta[active] = np.where(better[:, None], trial, th)
        ll[active] = np.where(better, ll_t, ll[active])
        lam[active] = np.clip(np.where(better, lam[active] * 0.2, lam[active] * 10.0), 1e-7, 1e7)
        converged[active[done]] = True
        active = active[~done]
    fisher, _, _ = fisher_of(theta, everyone)
    fisher /= excess_noise
    try:
        cov = np.linalg.inv(fisher)
        crlb = np.sqrt(np.maximum(np.einsum("npp->np", cov), 0.0))
    except np.linalg.LinAlgError:
        crlb = np.full((n_spots, npar), np.nan)
    # likelihood ratio against a flat background (chi2, 3 dof under "no emitter")
    bflat = np.maximum(rois.mean((1, 2)), 1e-3)
    ll_bg = (data * np.log(bflat[:, None, None] + gam) - (bflat[:, None, None] + gam)).sum((1, 2))
    llr = 2.0 * (ll - ll_bg) / excess_noise
    return FitResult(
        x_px=theta[:, 0],
        y_px=theta[:, 1],
        photons=theta[:, 2],
        bg=theta[:, 3],
        sigma_px=theta[:, 4],
        crlb_x_px=crlb[:, 0],
        crlb_y_px=crlb[:, 1],
        crlb_photons=crlb[:, 2],
        loglik_ratio=llr,
        converged=converged,
    )


@dataclass(frozen=True, slots=True)
class ClassicalConfig:
    """Settings of the classical localizer.

    ``psf_sigma_nm``: Gaussian PSF sigma (≈ 0.21 λ/NA); ``fit_sigma`` also fits it per spot.
    ``roi_px``: odd fit window size. ``threshold_sigma``: detection threshold on the DoG image
    in robust noise units. ``min_prob``: minimum likelihood-ratio probability to keep a fit.
    """

    pixel_nm: float = 100.0
    psf_sigma_nm: float = 130.0
    fit_sigma: bool = False
    roi_px: int = 7
    threshold_sigma: float = 4.0
    min_distance_px: int = 2
    iterations: int = 30
    min_prob: float = 0.99
    max_crlb_nm: float = 100.0

    def __post_init__(self) -> None:
        if self.pixel_nm <= 0 or self.psf_sigma_nm <= 0:
            raise ValueError("ClassicalConfig.pixel_nm and psf_sigma_nm must be positive")
        if self.roi_px < 5 or self.roi_px % 2 == 0:
            raise ValueError(f"ClassicalConfig.roi_px must be odd and >= 5, got {self.roi_px}")


class ClassicalLocalizer:
    """Detection + MLE fit, frame by frame; the reference the network must beat."""

    def __init__(self, config: ClassicalConfig | None = None, camera: CameraModel | None = None):
        self.config = config or ClassicalConfig()
        self.camera = camera or CameraModel()

    @property
    def sigma_px(self) -> float:
        return self.config.psf_sigma_nm / self.config.pixel_nm

    def localize(self, image: np.ndarray, frame_index: int = 0) -> LocTable:
        """Localizations in one camera frame (uint16 ADU or float ADU)."""
        cfg = self.config
        img = np.asarray(image)
        if img.ndim != 2:
            raise ValueError(f"frame must be 2-D (Y, X), got shape {img.shape}")
        h, w = img.shape
        if min(h, w) < cfg.roi_px:
            raise ValueError(f"frame {img.shape} is smaller than the fit window {cfg.roi_px}")
        e = self.camera.to_electrons(img)
        rvar = self.camera.read_var_e2(e.shape)
        rows, cols = detect_spots(
            e, self.sigma_px, cfg.threshold_sigma, cfg.min_distance_px, float(rvar.mean())
        )
        r = cfg.roi_px // 2
        r0 = np.clip(rows - r, 0, h - cfg.roi_px)
        c0 = np.clip(cols - r, 0, w - cfg.roi_px)
        k = np.arange(cfg.roi_px)
        yy = r0[:, None, None] + k[None, :, None]
        xx = c0[:, None, None] + k[None, None, :]
        fit = fit_spots(
            e[yy, xx],
            rvar[yy, xx],
            self.sigma_px,
            cfg.fit_sigma,
            self.camera.excess_noise_factor,
            cfg.iterations,
        )
        x_px = fit.x_px + c0
        y_px = fit.y_px + r0
        prob = chi2.cdf(np.maximum(fit.loglik_ratio, 0.0), 3)
        px = cfg.pixel_nm
        keep = (
            fit.converged
            & np.isfinite(fit.crlb_x_px)
            & (fit.photons > 0)
            & (np.abs(x_px - cols) <= 1.5)
            & (np.abs(y_px - rows) <= 1.5)
            & (prob >= cfg.min_prob)
            & (np.maximum(fit.crlb_x_px, fit.crlb_y_px) * px <= cfg.max_crlb_nm)
        )
        return LocTable.from_columns(
            frame=np.full(int(keep.sum()), frame_index, np.int64),
            x_nm=(x_px[keep] + 0.5) * px,
            y_nm=(y_px[keep] + 0.5) * px,
            photons=fit.photons[keep],
            bg=fit.bg[keep],
            sigma_x_nm=fit.crlb_x_px[keep] * px,
            sigma_y_nm=fit.crlb_y_px[keep] * px,
            prob=prob[keep],
            psf_sigma_nm=fit.sigma_px[keep] * px,
        )
