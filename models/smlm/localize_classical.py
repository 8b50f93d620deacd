"""Classical SMLM localization: detection + per-spot maximum-likelihood PSF fit.

Without a calibration the PSF model is the pixel-integrated isotropic 2-D Gaussian
(Smith et al. 2010):

    mu_k = bg + N * dEx(k) * dEy(k),
    dEx(k) = 0.5 * [erf((x_k - x0 + 1/2) / (sqrt(2) s)) - erf((x_k - x0 - 1/2) / (sqrt(2) s))]

in pixel units, pixel ``k`` covering ``[k - 1/2, k + 1/2)``. Fits maximise the Poisson
likelihood of the data in photoelectrons; an sCMOS read noise of variance ``r2`` (e⁻²) is
handled by the usual Poisson approximation (data + r2 and model + r2, Huang et al. 2013);
an EMCCD's excess noise (F = 2) doubles the Cramér–Rao variances. Uncertainties are the
square roots of the diagonal of the inverse Fisher information at the estimate (CRLB).

With a calibrated :class:`~smartscope.simulators.psf_models.PSFModel` (the cubic spline
from beads, or its Gaussian-z) the same Levenberg–Marquardt fitter (:func:`_lm_poisson`)
fits x, y, photons, background and, for a 3-D model, z (:func:`fit_psf_model`).
:func:`refine_localizations` polishes another method's localizations (a network's) with
that fit, holding the neighbours' modelled light fixed.

Coordinates: localizations are reported in nm with the origin at the outer corner of pixel
(0, 0): ``x_nm = (column + 0.5 + dx) * pixel_nm`` where ``dx`` is the offset from that
pixel's centre. ``photons`` and ``bg`` (per pixel) are detected photons (photoelectrons).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from scipy.special import erf
from scipy.stats import chi2

from smartscope.exceptions import InvalidValue
from smartscope.metrics import fisher_crlb
from smartscope.models.smlm.table import LocTable
from smartscope.simulators.psf_models import PSFModel, render_model_px

if TYPE_CHECKING:
    from smartscope.simulators.camera import CameraMaps

__all__ = [
    "CameraModel",
    "ClassicalConfig",
    "ClassicalLocalizer",
    "camera_model_for",
    "detect_spots",
    "equivalent_sigma_px",
    "fit_psf_model",
    "fit_spots",
    "gaussian_sigma_nm",
    "integrated_gaussian",
    "refine_localizations",
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
            raise InvalidValue(f"CameraModel.e_per_adu must be positive, got {self.e_per_adu}")
        if self.em_gain < 1:
            raise InvalidValue(f"CameraModel.em_gain must be >= 1, got {self.em_gain}")
        if self.read_noise_e < 0:
            raise InvalidValue(f"CameraModel.read_noise_e must be >= 0, got {self.read_noise_e}")

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
                raise InvalidValue(f"CameraModel.{name} has shape {np.shape(m)}, frame is {img.shape}")
        return (img - off) * gain / self.em_gain

    @property
    def mean_read_var_e2(self) -> float:
        """Read-noise variance (e⁻², after EM-gain division) averaged over the sensor."""
        r = self.read_noise_map_e if self.read_noise_map_e is not None else self.read_noise_e
        return float(np.mean((np.asarray(r, np.float64) / self.em_gain) ** 2))

    def read_var_e2(self, shape: tuple[int, ...]) -> np.ndarray:
        """Read-noise variance per pixel in (photoelectron)², after EM-gain division."""
        if self.read_noise_map_e is not None:
            if self.read_noise_map_e.shape != shape:
                raise InvalidValue(
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
    """Per-spot estimates in pixel units (x, y relative to the ROI); z in nm (NaN in 2-D)."""

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
    z_nm: np.ndarray | None = None
    crlb_z_nm: np.ndarray | None = None
    dof: int = 3  # free signal parameters the likelihood ratio tests (x, y, N[, z])


# Model callback of the LM fitter: (theta (m, P), spot indices, derivatives?) ->
# expected photoelectrons (m, K) and, with derivatives, the Jacobian (m, P, K).
_Model = Callable[[np.ndarray, np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]


def _lm_poisson(
    data_f: np.ndarray,
    gam_f: np.ndarray,
    theta: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    model: _Model,
    iterations: int,
    tol: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised Levenberg–Marquardt maximisation of the Poisson likelihood.

    ``data_f`` (n, K) are data + read variance (≥ 0), ``gam_f`` the read variance
    (Huang et al. 2013: model + variance is Poisson). Fisher scoring with a per-spot
    Marquardt damping on diag(I); a step is kept only if the likelihood rises; a spot is
    done when every parameter step is below ``tol``. Returns (theta, loglik, converged).
    """
    n_spots, npar = theta.shape

    def loglik(th: np.ndarray, idx: np.ndarray) -> np.ndarray:
        mu = np.maximum(model(th, idx, False)[0] + gam_f[idx], 1e-9)
        return (data_f[idx] * np.log(mu) - mu).sum(1)

    everyone = np.arange(n_spots)
    lam = np.full(n_spots, 1e-3)
    ll = loglik(theta, everyone)
    converged = np.zeros(n_spots, bool)
    active = everyone
    eye = np.eye(npar)
    for _ in range(iterations):
        if active.size == 0:
            break
        th = theta[active]
        mu, jac = model(th, active, True)
        assert jac is not None
        mu_t = np.maximum(mu + gam_f[active], 1e-9)
        fisher = np.matmul(jac / mu_t[:, None, :], jac.transpose(0, 2, 1))
        grad = np.matmul(jac, (data_f[active] / mu_t - 1.0)[:, :, None])[:, :, 0]
        diag = np.einsum("npp->np", fisher)
        a_mat = fisher + lam[active, None, None] * (diag[:, :, None] * eye + 1e-12 * eye)
        try:
            step = np.linalg.solve(a_mat, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.zeros_like(grad)
        trial = np.clip(th + step, lo, hi)
        ll_t = loglik(trial, active)
        better = ll_t >= ll[active]
        done = better & (np.abs(trial - th) < tol).all(1)
        theta[active] = np.where(better[:, None], trial, th)
        ll[active] = np.where(better, ll_t, ll[active])
        lam[active] = np.clip(np.where(better, lam[active] * 0.2, lam[active] * 10.0), 1e-7, 1e7)
        converged[active[done]] = True
        active = active[~done]
    return theta, ll, converged


def _initial_guess(rois: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Border median as background, excess counts as photons, centroid as position."""
    size = rois.shape[-1]
    coord = np.arange(size, dtype=np.float64)
    border = np.concatenate([rois[:, 0, :], rois[:, -1, :], rois[:, 1:-1, 0], rois[:, 1:-1, -1]], axis=1)
    b0 = np.maximum(np.median(border, axis=1), 0.1)
    excess = np.maximum(rois - b0[:, None, None], 0.0)
    n0 = np.maximum(excess.sum((1, 2)), 10.0)
    w = excess + 1e-9
    c = (size - 1) / 2.0
    x0 = np.clip((w * coord[None, None, :]).sum((1, 2)) / w.sum((1, 2)), c - 1.0, c + 1.0)
    y0 = np.clip((w * coord[None, :, None]).sum((1, 2)) / w.sum((1, 2)), c - 1.0, c + 1.0)
    return x0, y0, n0, b0


def _flat_bg_llr(rois: np.ndarray, gam: np.ndarray, ll: np.ndarray, excess_noise: float) -> np.ndarray:
    """2·(log L(fit) − log L(flat background)), divided by the excess-noise factor."""
    data = np.maximum(rois + gam, 0.0)
    bflat = np.maximum(rois.mean((1, 2)), 1e-3)
    ll_bg = (data * np.log(bflat[:, None, None] + gam) - (bflat[:, None, None] + gam)).sum((1, 2))
    return np.asarray(2.0 * (ll - ll_bg) / excess_noise)


def fit_spots(
    rois: np.ndarray,
    read_var: np.ndarray,
    sigma_px: float,
    fit_sigma: bool = False,
    excess_noise: float = 1.0,
    iterations: int = 30,
) -> FitResult:
    """Poisson-MLE fit of the pixel-integrated isotropic Gaussian to ``rois`` (n, S, S) in
    photoelectrons; ``read_var`` (n, S, S) is the per-pixel read-noise variance (e⁻²).

    Parameters (x, y, N, bg[, σ]); positions relative to the ROI (pixel-centre units).
    """
    rois = np.asarray(rois, np.float64)
    n_spots, size, _ = rois.shape
    if n_spots == 0:
        z = np.zeros(0)
        return FitResult(z, z, z, z, z, z, z, z, z, np.zeros(0, bool))
    coord = np.arange(size, dtype=np.float64)[None, :]
    k = size * size
    gam = np.broadcast_to(np.asarray(read_var, np.float64), rois.shape)
    data_f = np.maximum(rois + gam, 0.0).reshape(n_spots, k)
    gam_f = gam.reshape(n_spots, k)
    x0, y0, n0, b0 = _initial_guess(rois)
    cols = [x0, y0, n0, b0] + ([np.full(n_spots, sigma_px)] if fit_sigma else [])
    theta = np.stack(cols, axis=1)

    def model(th: np.ndarray, idx: np.ndarray, deriv: bool) -> tuple[np.ndarray, np.ndarray | None]:
        x, y, n, b = (th[:, i, None] for i in range(4))
        s = th[:, 4, None] if fit_sigma else np.full_like(x, sigma_px)
        ex, dex, dsx = _edges(coord, x, s)
        ey, dey, dsy = _edges(coord, y, s)
        psf = ey[:, :, None] * ex[:, None, :]
        mu = (b[:, :, None] + n[:, :, None] * psf).reshape(-1, k)
        if not deriv:
            return mu, None
        n3 = n[:, :, None]
        jac = [
            n3 * ey[:, :, None] * dex[:, None, :],
            n3 * dey[:, :, None] * ex[:, None, :],
            psf,
            np.ones_like(psf),
        ]
        if fit_sigma:
            jac.append(n3 * (dsy[:, :, None] * ex[:, None, :] + ey[:, :, None] * dsx[:, None, :]))
        return mu, np.stack(jac, axis=1).reshape(th.shape[0], -1, k)

    lo = np.array([-1.0, -1.0, 1.0, 1e-3, 0.3 * sigma_px])[: theta.shape[1]]
    hi = np.array([size, size, np.inf, np.inf, 3.0 * sigma_px])[: theta.shape[1]]
    tol = np.array([1e-4, 1e-4, np.inf, np.inf, np.inf])[: theta.shape[1]]
    theta, ll, converged = _lm_poisson(data_f, gam_f, theta, lo, hi, model, iterations, tol)
    mu, jac = model(theta, np.arange(n_spots), True)
    crlb = fisher_crlb(mu, jac, gam_f, excess_noise)  # type: ignore[arg-type]
    return FitResult(
        x_px=theta[:, 0],
        y_px=theta[:, 1],
        photons=theta[:, 2],
        bg=theta[:, 3],
        sigma_px=theta[:, 4] if fit_sigma else np.full(n_spots, sigma_px),
        crlb_x_px=crlb[:, 0],
        crlb_y_px=crlb[:, 1],
        crlb_photons=crlb[:, 2],
        loglik_ratio=_flat_bg_llr(rois, gam, ll, excess_noise),
        converged=converged,
    )


def fit_psf_model(
    rois: np.ndarray,
    read_var: np.ndarray,
    psf: PSFModel,
    excess_noise: float = 1.0,
    iterations: int = 60,
    z_starts_nm: Sequence[float] | None = None,
    start: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> FitResult:
    """Poisson-MLE fit of a calibrated PSF model (spline or Gaussian-z) to ``rois``.

    Parameters (x, y, z, N, bg) for a 3-D model, (x, y, N, bg) for a 2-D one. A 3-D fit
    starts from each of ``z_starts_nm`` and keeps the start with the highest likelihood
    (an astigmatic likelihood can have a local maximum at the mirrored z); by default the
    calibrated range's quarter points and centre. ``start`` (n, P) replaces the
    data-driven starting point (one start: e.g. a network's estimate); ``offset`` (n, S, S)
    is fixed light in each window (neighbours' modelled photoelectrons) added to the model.
    """
    rois = np.asarray(rois, np.float64)
    n_spots, size, _ = rois.shape
    three_d = psf.is_3d
    if n_spots == 0:
        z = np.zeros(0)
        return FitResult(z, z, z, z, z, z, z, z, z, np.zeros(0, bool), z, z, 4 if three_d else 3)
    k = size * size
    gam = np.broadcast_to(np.asarray(read_var, np.float64), rois.shape)
    zlo, zhi = psf.z_range_nm
    starts = (
        [0.0]
        if not three_d or start is not None
        else list(z_starts_nm if z_starts_nm is not None else np.linspace(zlo, zhi, 5)[1:-1])
    )
    m = len(starts)
    off = np.zeros_like(rois) if offset is None else np.asarray(offset, np.float64)
    if off.shape != rois.shape:
        raise ValueError(f"offset shape {off.shape} differs from the windows' {rois.shape}")
    off_f = np.concatenate([off] * m).reshape(-1, k)
    rois_r = np.concatenate([rois] * m)
    gam_r = np.concatenate([gam] * m)
    data_f = np.maximum(rois_r + gam_r, 0.0).reshape(-1, k)
    gam_f = gam_r.reshape(-1, k)
    x0, y0, n0, b0 = (np.concatenate([v] * m) for v in _initial_guess(rois))
    if three_d:
        z0 = np.repeat(np.asarray(starts, np.float64), n_spots)
        theta = np.stack([x0, y0, z0, n0, b0], axis=1)
        lo = np.array([-1.0, -1.0, zlo, 1.0, 1e-3])
        hi = np.array([size, size, zhi, np.inf, np.inf])
        tol = np.array([1e-3, 1e-3, 0.5, np.inf, np.inf])
    else:
        theta = np.stack([x0, y0, n0, b0], axis=1)
        lo = np.array([-1.0, -1.0, 1.0, 1e-3])
        hi = np.array([size, size, np.inf, np.inf])
        tol = np.array([1e-4, 1e-4, np.inf, np.inf])
    if start is not None:
        if start.shape != theta.shape:
            raise ValueError(f"start must have shape {theta.shape} (x, y[, z], N, bg), got {start.shape}")
        theta = np.clip(np.asarray(start, np.float64).copy(), lo, hi)
    iz, i_n, i_b = (2, 3, 4) if three_d else (-1, 2, 3)

    def model(th: np.ndarray, idx: np.ndarray, deriv: bool) -> tuple[np.ndarray, np.ndarray | None]:
        z = th[:, iz] if three_d else np.zeros(th.shape[0])
        ev = psf.evaluate(th[:, 0], th[:, 1], z, size, derivatives=deriv)
        n = th[:, i_n, None, None]
        mu = (th[:, i_b, None, None] + n * ev.psf).reshape(-1, k) + off_f[idx]
        if not deriv:
            return mu, None
        assert ev.dx is not None and ev.dy is not None and ev.dz is not None
        jac = [n * ev.dx, n * ev.dy] + ([n * ev.dz] if three_d else []) + [ev.psf, np.ones_like(ev.psf)]
        return mu, np.stack(jac, axis=1).reshape(th.shape[0], -1, k)

    theta, ll, converged = _lm_poisson(data_f, gam_f, theta, lo, hi, model, iterations, tol)
    best = np.argmax(ll.reshape(m, n_spots), axis=0)
    pick = best * n_spots + np.arange(n_spots)
    theta, ll, converged = theta[pick], ll[pick], converged[pick]
    mu, jac = model(theta, pick, True)
    crlb = fisher_crlb(mu, jac, gam.reshape(n_spots, k), excess_noise)  # type: ignore[arg-type]
    nan = np.full(n_spots, np.nan)
    return FitResult(
        x_px=theta[:, 0],
        y_px=theta[:, 1],
        photons=theta[:, i_n],
        bg=theta[:, i_b],
        sigma_px=nan,
        crlb_x_px=crlb[:, 0],
        crlb_y_px=crlb[:, 1],
        crlb_photons=crlb[:, i_n],
        loglik_ratio=_flat_bg_llr(rois, gam, ll, excess_noise),
        converged=converged,
        z_nm=theta[:, iz] if three_d else nan,
        crlb_z_nm=crlb[:, iz] if three_d else nan,
        dof=4 if three_d else 3,
    )


def equivalent_sigma_px(psf: PSFModel) -> float:
    """Width of the isotropic Gaussian that matches the model's core (second moment inside
    the central 5×5 px; for a 3-D model the mean over its z range): the detection
    filter's scale."""
    zlo, zhi = psf.z_range_nm
    zs = np.linspace(zlo, zhi, 7)[1:-1] if psf.is_3d else np.array([0.5 * (zlo + zhi)])
    s = min(psf.window_px, 9)
    c = (s - 1) / 2.0
    imgs = psf.evaluate(np.full(zs.size, c), np.full(zs.size, c), zs, s, derivatives=False).psf
    k = np.arange(s) - c
    core = np.abs(k) <= 2
    kk = k[core]
    var = 0.0
    for img in imgs:
        sub = img[np.ix_(core, core)]
        m = max(float(sub.sum()), 1e-12)
        var += 0.5 * ((sub.sum(0) * kk**2).sum() + (sub.sum(1) * kk**2).sum()) / m / len(imgs)
    # a Gaussian truncated at ±2 px has a smaller second moment: invert numerically
    for sig in np.linspace(0.5, 3.0, 251):
        g = np.exp(-(kk**2) / (2 * sig**2))
        if (g * kk**2).sum() / g.sum() >= var:
            return float(sig)
    return 3.0


def gaussian_sigma_nm(psf: PSFModel | None) -> float | None:
    """σ (nm) of a 2-D PSF file that holds an isotropic Gaussian (``calibrate psf --from-data``
    chose it over its spline: ``meta['model'] == 'gaussian'``), else None."""
    meta = getattr(psf, "meta", None)
    if psf is None or psf.is_3d or not isinstance(meta, dict) or meta.get("model") != "gaussian":
        return None
    return float(meta["sigma_nm"])


def _drop_duplicates(x_px: np.ndarray, y_px: np.ndarray, score: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Two detections of one spot (e.g. the two lobes of a defocused astigmatic PSF) fit
    the same emitter: of kept fits closer than 1 px, keep the one with the higher score."""
    idx = np.flatnonzero(keep)
    if idx.size < 2:
        return keep
    out = keep.copy()
    order = idx[np.argsort(-score[idx])]
    taken: list[int] = []
    for i in order:
        if any((x_px[i] - x_px[j]) ** 2 + (y_px[i] - y_px[j]) ** 2 < 1.0 for j in taken):
            out[i] = False
        else:
            taken.append(int(i))
    return out


@dataclass(frozen=True, slots=True)
class ClassicalConfig:
    """Settings of the classical localizer.

    ``psf_sigma_nm``: Gaussian PSF sigma (≈ 0.21 λ/NA) when no calibrated PSF model is
    given; ``fit_sigma`` also fits it per spot. ``roi_px``: odd fit window size (None: 7 for
    the Gaussian and a 2-D calibrated PSF, 13 for a 3-D one). ``threshold_sigma``:
    detection threshold on the DoG image in robust noise units. ``min_prob``: minimum
    likelihood-ratio probability to keep a fit.
    """

    pixel_nm: float = 100.0
    psf_sigma_nm: float = 130.0
    fit_sigma: bool = False
    roi_px: int | None = None
    threshold_sigma: float = 4.0
    min_distance_px: int = 2
    iterations: int = 30
    min_prob: float = 0.99
    max_crlb_nm: float = 100.0

    def __post_init__(self) -> None:
        if self.pixel_nm <= 0 or self.psf_sigma_nm <= 0:
            raise InvalidValue("ClassicalConfig.pixel_nm and psf_sigma_nm must be positive")
        if self.roi_px is not None and (self.roi_px < 5 or self.roi_px % 2 == 0):
            raise InvalidValue(f"ClassicalConfig.roi_px must be odd and >= 5, got {self.roi_px}")

    def roi_for(self, psf: PSFModel | None) -> int:
        if self.roi_px is not None:
            return self.roi_px
        if psf is None:
            return 7
        # 3-D: 13 px. The model's whole 21 px window fits isolated emitters closer to the CRLB
        # in z (bench/smlm.py: 1.25 against 1.49) but takes in neighbours at 0.1 /µm² (3-D
        # Jaccard 0.48 against 0.62); refine_localizations, which models the neighbours, uses it
        # 2-D: 7 px, as for the Gaussian. A 9 px window takes in more neighbours' light (on a
        # Moffat-like PSF, bench/smlm.py --cases: efficiency 66.8 against 69.7 at 0.15 /µm²,
        # 29.4 against 34.5 at 1.5 /µm²; RMSE/CRLB of isolated emitters 0.98 → 0.99)
        return min(psf.window_px | 1, 13 if psf.is_3d else 7)


class ClassicalLocalizer:
    """Detection + MLE fit, frame by frame; the reference the network must beat.

    Without ``psf`` the model is the isotropic pixel-integrated Gaussian; with a calibrated
    :class:`~smartscope.simulators.psf_models.PSFModel` (spline from beads, or the
    Gaussian-z astigmatic model) the fit uses it, and a 3-D model also fits z. A 2-D PSF
    file that holds a Gaussian (:func:`gaussian_sigma_nm`) is fitted as that Gaussian.
    """

    def __init__(
        self,
        config: ClassicalConfig | None = None,
        camera: CameraModel | None = None,
        psf: PSFModel | None = None,
    ):
        self.config = config or ClassicalConfig()
        self.camera = camera or CameraModel()
        if psf is not None and not math.isclose(psf.pixel_nm, self.config.pixel_nm, rel_tol=1e-3):
            raise InvalidValue(
                f"pixel size: the PSF model was calibrated at {psf.pixel_nm} nm/px, "
                f"the localizer is set to {self.config.pixel_nm} nm/px"
            )
        gauss_nm = gaussian_sigma_nm(psf)
        if gauss_nm is not None:  # a PSF file that holds a Gaussian: fit the Gaussian itself
            self.config = dataclasses.replace(self.config, psf_sigma_nm=gauss_nm)
            psf = None
        self.psf = psf
        self.roi_px = self.config.roi_for(psf)
        self._sigma_px = (
            equivalent_sigma_px(psf) if psf is not None else self.config.psf_sigma_nm / self.config.pixel_nm
        )

    @property
    def sigma_px(self) -> float:
        """Gaussian scale of the detection filter (and of the Gaussian fit), px."""
        return self._sigma_px

    def localize(self, image: np.ndarray, frame_index: int = 0) -> LocTable:
        """Localizations in one camera frame (uint16 ADU or float ADU)."""
        cfg = self.config
        img = np.asarray(image)
        if img.ndim != 2:
            raise ValueError(f"frame must be 2-D (Y, X), got shape {img.shape}")
        h, w = img.shape
        roi = self.roi_px
        if min(h, w) < roi:
            raise InvalidValue(f"frame {img.shape} is smaller than the fit window {roi}")
        e = self.camera.to_electrons(img)
        rvar = self.camera.read_var_e2(e.shape)
        rows, cols = detect_spots(
            e, self.sigma_px, cfg.threshold_sigma, cfg.min_distance_px, float(rvar.mean())
        )
        r = roi // 2
        r0 = np.clip(rows - r, 0, h - roi)
        c0 = np.clip(cols - r, 0, w - roi)
        k = np.arange(roi)
        yy = r0[:, None, None] + k[None, :, None]
        xx = c0[:, None, None] + k[None, None, :]
        excess = self.camera.excess_noise_factor
        if self.psf is None:
            fit = fit_spots(e[yy, xx], rvar[yy, xx], self.sigma_px, cfg.fit_sigma, excess, cfg.iterations)
        else:
            fit = fit_psf_model(e[yy, xx], rvar[yy, xx], self.psf, excess, max(cfg.iterations, 60))
        x_px = fit.x_px + c0
        y_px = fit.y_px + r0
        prob = chi2.cdf(np.maximum(fit.loglik_ratio, 0.0), fit.dof)
        px = cfg.pixel_nm
        max_shift = max(1.5, roi / 4.0)  # a fit may leave its detection by this much
        keep = (
            fit.converged
            & np.isfinite(fit.crlb_x_px)
            & (fit.photons > 0)
            & (np.abs(x_px - cols) <= max_shift)
            & (np.abs(y_px - rows) <= max_shift)
            & (prob >= cfg.min_prob)
            & (np.maximum(fit.crlb_x_px, fit.crlb_y_px) * px <= cfg.max_crlb_nm)
        )
        keep = _drop_duplicates(x_px, y_px, fit.loglik_ratio, keep)
        cols_out: dict[str, np.ndarray] = {}
        if fit.z_nm is not None and self.psf is not None and self.psf.is_3d:
            assert fit.crlb_z_nm is not None
            cols_out = {"z_nm": fit.z_nm[keep], "sigma_z_nm": fit.crlb_z_nm[keep]}
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
            **cols_out,
        )


def refine_localizations(
    table: LocTable,
    image: np.ndarray,
    psf: PSFModel,
    camera: CameraModel,
    pixel_nm: float,
    roi_px: int | None = None,
    iterations: int = 30,
    max_move_px: float = 1.0,
    passes: int = 3,
    only_if_sharper: bool = True,
) -> LocTable:
    """Polish localizations (e.g. a network's) of one frame by a Poisson MLE of the
    calibrated PSF, each in its own window started from its estimate, with the modelled
    light of all the others held fixed there (so neighbours are not fitted into it).
    ``passes`` rounds: each holds the neighbours at the previous round's estimates.

    ``image`` is the camera frame (ADU). A refined estimate replaces the original only
    when the fit converged, moved less than ``max_move_px`` from it and — with
    ``only_if_sharper`` — its CRLB is below the original's reported uncertainty (a
    network's estimate of a dim emitter can be better than a lone fit: it knows the
    neighbours and the prior); uncertainties become the fit's CRLB. ``prob`` is kept.
    """
    n = len(table)
    if n == 0:
        return table
    e = camera.to_electrons(np.asarray(image))
    h, w = e.shape
    if roi_px is None:  # 3-D: the whole model window, 2-D: 9 px (the neighbours' light is modelled)
        roi_px = psf.window_px | 1 if psf.is_3d else min(psf.window_px | 1, 9)
    s = roi_px
    s = min(s, h, w)
    r = s // 2
    x_in = table.x_nm / pixel_nm - 0.5
    y_in = table.y_nm / pixel_nm - 0.5
    three_d = psf.is_3d
    z_in = np.nan_to_num(table.z_nm, nan=0.5 * sum(psf.z_range_nm)) if three_d else np.zeros(n)
    ph_in = np.where(np.isfinite(table.photons) & (table.photons > 0), table.photons, 1000.0)
    bg_in = np.where(np.isfinite(table.bg) & (table.bg > 0), table.bg, 1.0)
    x, y, z, ph, bg = x_in.copy(), y_in.copy(), z_in.copy(), ph_in.copy(), bg_in.copy()
    c0 = np.clip(np.rint(x_in).astype(np.int64) - r, 0, w - s)
    r0 = np.clip(np.rint(y_in).astype(np.int64) - r, 0, h - s)
    k = np.arange(s)
    yy = r0[:, None, None] + k[None, :, None]
    xx = c0[:, None, None] + k[None, None, :]
    rois = e[yy, xx]
    rvar = camera.read_var_e2(e.shape)[yy, xx]
    ok = np.zeros(n, bool)
    fit = None
    for _ in range(max(passes, 1)):
        # every localization's light in every window, minus its own: the fixed neighbours
        total = render_model_px(psf, (h, w), x, y, z, ph)
        own = psf.evaluate(x - c0, y - r0, z, s, derivatives=False).psf * ph[:, None, None]
        offset = np.maximum(total[yy, xx] - own, 0.0)
        cols = [x - c0, y - r0] + ([z] if three_d else []) + [ph, bg]
        fit = fit_psf_model(
            rois, rvar, psf, camera.excess_noise_factor, iterations, start=np.stack(cols, 1), offset=offset
        )
        if three_d:  # also from the model's own z starts: keep the likelier (a network's z can
            # sit in the wrong basin of an astigmatic likelihood far from focus)
            other = fit_psf_model(rois, rvar, psf, camera.excess_noise_factor, iterations, offset=offset)
            fit = _likelier(fit, other)
        nx, ny = fit.x_px + c0, fit.y_px + r0
        ok = fit.converged & np.isfinite(fit.crlb_x_px) & (np.hypot(nx - x_in, ny - y_in) < max_move_px)
        if only_if_sharper:  # NaN theirs: refine
            theirs = np.hypot(table.sigma_x_nm, table.sigma_y_nm)
            sharper = ~(np.hypot(fit.crlb_x_px, fit.crlb_y_px) * pixel_nm >= theirs)
            if three_d:  # or sharper in z, where a network is weakest
                assert fit.crlb_z_nm is not None
                sharper |= ~(fit.crlb_z_nm >= table.sigma_z_nm)
            ok &= sharper
        x, y = np.where(ok, nx, x_in), np.where(ok, ny, y_in)
        ph, bg = np.where(ok, fit.photons, ph_in), np.where(ok, fit.bg, bg_in)
        if three_d:
            assert fit.z_nm is not None
            z = np.where(ok, fit.z_nm, z_in)
    assert fit is not None
    cols_out = {}
    if three_d:
        assert fit.crlb_z_nm is not None
        cols_out = {
            "z_nm": np.where(ok, z, table.z_nm),
            "sigma_z_nm": np.where(ok, fit.crlb_z_nm, table.sigma_z_nm),
        }
    return LocTable.from_columns(
        frame=table.frame,
        x_nm=(x + 0.5) * pixel_nm,
        y_nm=(y + 0.5) * pixel_nm,
        photons=np.where(ok, ph, table.photons),
        bg=np.where(ok, bg, table.bg),
        sigma_x_nm=np.where(ok, fit.crlb_x_px * pixel_nm, table.sigma_x_nm),
        sigma_y_nm=np.where(ok, fit.crlb_y_px * pixel_nm, table.sigma_y_nm),
        prob=table.prob,
        psf_sigma_nm=table.psf_sigma_nm,
        **cols_out,
    )


def camera_model_for(
    cfg: object, shape: tuple[int, int] | None = None, maps: CameraMaps | None = None
) -> CameraModel:
    """The localizer's :class:`CameraModel` for a simulator ``CameraConfig`` or a user's
    :class:`~smartscope.simulators.camera_calibration.CameraCalibration`.

    Simulator camera: ``ADU = floor(e·gain + offset)``, so ``e = (ADU + ½ − offset) /
    gain`` (÷ EM gain); with ``shape``, the sCMOS per-pixel offset / gain / read-noise
    maps of that sensor are used (the per-pixel calibration an sCMOS user measures),
    otherwise nominal values. Calibration: its offset is the measured dark level (no ½);
    ``maps`` (its measured maps, cropped to the frame) give per-pixel values.
    """
    from smartscope.simulators.camera import CameraConfig
    from smartscope.simulators.camera_calibration import CameraCalibration

    if isinstance(cfg, CameraCalibration):
        per_pixel = (
            {}
            if maps is None
            else {
                "offset_map_adu": maps.offset_adu.astype(np.float64),
                "e_per_adu_map": 1.0 / maps.gain_adu_per_e.astype(np.float64),
                "read_noise_map_e": maps.read_noise_e.astype(np.float64),
            }
        )
        return CameraModel(
            offset_adu=cfg.offset_adu,
            e_per_adu=1.0 / cfg.gain_adu_per_e,
            em_gain=cfg.em_gain if cfg.emccd else 1.0,
            read_noise_e=cfg.read_noise_e,
            emccd=cfg.emccd,
            **per_pixel,
        )
    if not isinstance(cfg, CameraConfig):
        raise TypeError(f"expected a simulator CameraConfig or a CameraCalibration, got {type(cfg).__name__}")
    emccd = cfg.kind == "emccd" and cfg.em_gain > 1
    if shape is not None and cfg.kind == "scmos":
        m = cfg.maps(shape)
        return CameraModel(
            offset_adu=cfg.offset_adu - 0.5,
            e_per_adu=1.0 / cfg.gain_adu_per_e,
            read_noise_e=cfg.read_noise_e,
            offset_map_adu=m.offset_adu.astype(np.float64) - 0.5,
            e_per_adu_map=1.0 / m.gain_adu_per_e.astype(np.float64),
            read_noise_map_e=m.read_noise_e.astype(np.float64),
        )
    return CameraModel(
        offset_adu=cfg.offset_adu - 0.5,
        e_per_adu=1.0 / cfg.gain_adu_per_e,
        em_gain=cfg.em_gain if emccd else 1.0,
        read_noise_e=cfg.read_noise_e,
        emccd=emccd,
    )


def _likelier(a: FitResult, b: FitResult) -> FitResult:
    """Per spot, the converged fit with the higher likelihood (same data, same model)."""
    take_b = b.converged & (~a.converged | (b.loglik_ratio > a.loglik_ratio))

    def pick(u: np.ndarray | None, v: np.ndarray | None) -> np.ndarray | None:
        return None if u is None or v is None else np.where(take_b, v, u)

    fields = ("x_px", "y_px", "photons", "bg", "sigma_px", "crlb_x_px", "crlb_y_px", "crlb_photons")
    picked = {f: pick(getattr(a, f), getattr(b, f)) for f in fields}
    return FitResult(
        **picked,  # type: ignore[arg-type]
        loglik_ratio=np.where(take_b, b.loglik_ratio, a.loglik_ratio),
        converged=a.converged | b.converged,
        z_nm=pick(a.z_nm, b.z_nm),
        crlb_z_nm=pick(a.crlb_z_nm, b.crlb_z_nm),
        dof=a.dof,
    )
