"""Every metric smartscope reports, defined once.

Image metrics take float arrays and a stated ``data_range``; nothing here rescales
behind the caller's back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["image_scores", "mae", "nrmse", "pearson_r", "percentiles_ms", "psnr", "ssim", "strict_json"]


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return a, b


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = _pair(pred, target)
    return float(np.abs(p - t).mean())


def nrmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root-mean-square error divided by the target's dynamic range (max - min)."""
    p, t = _pair(pred, target)
    rng = float(t.max() - t.min())
    if rng == 0:
        raise ValueError("target is constant; NRMSE is undefined")
    return float(np.sqrt(((p - t) ** 2).mean()) / rng)


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB for the stated ``data_range``."""
    if data_range <= 0:
        raise ValueError("data_range must be positive")
    p, t = _pair(pred, target)
    mse = float(((p - t) ** 2).mean())
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) with a Gaussian window of ``sigma`` px (11x11 support).

    K1 = 0.01, K2 = 0.03; 2-D images or stacks of them (last two axes are Y, X).
    """
    p, t = _pair(pred, target)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    sig = [0.0] * (p.ndim - 2) + [sigma, sigma]
    trunc = (5.0) / sigma  # window radius 5 px -> 11x11 support

    def filt(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sig, truncate=trunc)

    mu_p, mu_t = filt(p), filt(t)
    spp = filt(p * p) - mu_p**2
    stt = filt(t * t) - mu_t**2
    spt = filt(p * t) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * spt + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (spp + stt + c2)
    smap = num / den
    pad = 5  # drop the border where the window is truncated by the image edge
    if min(smap.shape[-2:]) > 2 * pad:
        smap = smap[..., pad:-pad, pad:-pad]
    return float(smap.mean())


def pearson_r(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = _pair(pred, target)
    p = p.ravel() - p.mean()
    t = t.ravel() - t.mean()
    den = float(np.sqrt((p * p).sum() * (t * t).sum()))
    if den == 0:
        raise ValueError("an input is constant; Pearson r is undefined")
    return float((p * t).sum() / den)


def image_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Pearson r, SSIM (Gaussian σ 1.5 px, 11×11), PSNR and MAE of one image channel.

    Data range for SSIM and PSNR: max − min of ``target`` (1 if it is constant).
    """
    rng = float(np.max(target) - np.min(target)) or 1.0
    return {
        "pearson": pearson_r(pred, target),
        "ssim": ssim(pred, target, rng),
        "psnr_db": psnr(pred, target, rng),
        "mae": mae(pred, target),
    }


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN and infinity (numpy scalars included) as ``None``: strict JSON
    (RFC 8259, what ``metrics.json`` is) has neither."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def percentiles_ms(latencies_s: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Latency percentiles in milliseconds, keyed ``p50_ms`` etc.; NaN when empty."""
    if len(latencies_s) == 0:
        return {f"p{q:g}_ms": float("nan") for q in qs}
    vals = np.percentile(np.asarray(latencies_s, dtype=np.float64) * 1e3, list(qs))
    return {f"p{q:g}_ms": float(v) for q, v in zip(qs, vals, strict=True)}


# ---------------------------------------------------------------------------------------
# SMLM: SMLM Challenge 2016 matching and scores (Sage et al. 2019), in 2-D and 3-D, the
# Mortensen et al. 2010 localization limit and the Cramér–Rao bound of any PSF model.
# ---------------------------------------------------------------------------------------

__all__ += ["fisher_crlb", "match_localizations", "mortensen_crlb_nm", "smlm_scores"]


def _loc_arrays(
    frame: np.ndarray | Sequence[int], xy_nm: np.ndarray | Sequence[Sequence[float]], what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (n,) and coordinates (n, 2) = (x, y) or (n, 3) = (x, y, z), in nm."""
    f = np.asarray(frame, dtype=np.int64).reshape(-1)
    xy = np.asarray(xy_nm, dtype=np.float64)
    if xy.size == 0:
        xy = xy.reshape(0, xy.shape[-1] if xy.ndim == 2 and xy.shape[-1] in (2, 3) else 2)
    if xy.ndim != 2 or xy.shape[1] not in (2, 3):
        raise ValueError(f"{what}_xy_nm must have shape (n, 2) or (n, 3) (x, y[, z]), got {xy.shape}")
    if f.shape[0] != xy.shape[0]:
        raise ValueError(f"{what}_frame has {f.shape[0]} entries but {what}_xy_nm has {xy.shape[0]}")
    if not np.isfinite(xy).all():
        raise ValueError(f"{what}_xy_nm contains non-finite coordinates")
    return f, xy


def _same_dims(pxy: np.ndarray, gxy: np.ndarray) -> None:
    if pxy.shape[1] != gxy.shape[1]:
        raise ValueError(
            f"pred_xy_nm has {pxy.shape[1]} columns but gt_xy_nm has {gxy.shape[1]}: "
            "give both 2-D (x, y) or both 3-D (x, y, z)"
        )


def match_localizations(
    pred_frame: np.ndarray | Sequence[int],
    pred_xy_nm: np.ndarray | Sequence[Sequence[float]],
    gt_frame: np.ndarray | Sequence[int],
    gt_xy_nm: np.ndarray | Sequence[Sequence[float]],
    tolerance_nm: float = 250.0,
    axial_tolerance_nm: float = 500.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of localizations to ground truth, frame by frame.

    Within each frame the assignment minimises the summed distance (Hungarian,
    ``scipy.optimize.linear_sum_assignment``) over pairs closer than ``tolerance_nm``
    laterally and, for 3-D coordinates (x, y, z), closer than ``axial_tolerance_nm`` in z
    (the cost is then the 3-D distance); other pairs are never matched. Returns index
    arrays ``(pred_idx, gt_idx)`` into the inputs, sorted by frame.
    """
    from scipy.optimize import linear_sum_assignment

    if tolerance_nm <= 0:
        raise ValueError("tolerance_nm must be positive")
    if axial_tolerance_nm <= 0:
        raise ValueError("axial_tolerance_nm must be positive")
    pf, pxy = _loc_arrays(pred_frame, pred_xy_nm, "pred")
    gf, gxy = _loc_arrays(gt_frame, gt_xy_nm, "gt")
    _same_dims(pxy, gxy)
    out_p: list[np.ndarray] = []
    out_g: list[np.ndarray] = []
    big = 1e12
    for fr in np.intersect1d(np.unique(pf), np.unique(gf)):
        ip = np.flatnonzero(pf == fr)
        ig = np.flatnonzero(gf == fr)
        diff = pxy[ip, None, :] - gxy[None, ig, :]
        lat = np.sqrt((diff[..., :2] ** 2).sum(-1))
        ok_pair = lat <= tolerance_nm
        d = lat
        if pxy.shape[1] == 3:
            ok_pair &= np.abs(diff[..., 2]) <= axial_tolerance_nm
            d = np.sqrt((diff**2).sum(-1))
        cost = np.where(ok_pair, d, big)
        r, c = linear_sum_assignment(cost)
        ok = ok_pair[r, c]
        out_p.append(ip[r[ok]])
        out_g.append(ig[c[ok]])
    if not out_p:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_p), np.concatenate(out_g)


def smlm_scores(
    pred_frame: np.ndarray | Sequence[int],
    pred_xy_nm: np.ndarray | Sequence[Sequence[float]],
    gt_frame: np.ndarray | Sequence[int],
    gt_xy_nm: np.ndarray | Sequence[Sequence[float]],
    tolerance_nm: float = 250.0,
    alpha_per_nm: float = 1.0,
    axial_tolerance_nm: float = 500.0,
    axial_alpha_per_nm: float = 0.5,
) -> dict[str, float]:
    """SMLM Challenge 2016 detection/localization scores, 2-D (x, y) or 3-D (x, y, z).

    Keys: ``tp, fp, fn``, ``jaccard`` (TP/(TP+FP+FN), 0..1; in 3-D a match must also lie
    within ``axial_tolerance_nm``), ``jaccard_pct``, ``recall``, ``precision``,
    ``rmse_lat_nm`` (sqrt of the mean squared lateral distance over matched pairs),
    ``rmse_x_nm``, ``rmse_y_nm``, ``bias_x_nm``, ``bias_y_nm``, ``efficiency_lat`` =
    100 − sqrt((100 − JI%)² + α²·RMSE_lat²) with α in nm⁻¹ (1 for lateral). 3-D adds
    ``rmse_ax_nm``, ``bias_z_nm``, ``rmse_vol_nm`` and ``efficiency_ax`` (α 0.5 nm⁻¹ on
    the axial RMSE). ``efficiency`` is the lateral one in 2-D and the mean of lateral and
    axial in 3-D (as the challenge ranks 3-D software). RMSEs and efficiencies are NaN
    when nothing matched.
    """
    pf, pxy = _loc_arrays(pred_frame, pred_xy_nm, "pred")
    gf, gxy = _loc_arrays(gt_frame, gt_xy_nm, "gt")
    _same_dims(pxy, gxy)
    three_d = pxy.shape[1] == 3
    ip, ig = match_localizations(pf, pxy, gf, gxy, tolerance_nm, axial_tolerance_nm)
    tp = int(ip.size)
    fp = int(pf.size - tp)
    fn = int(gf.size - tp)
    denom = tp + fp + fn
    ji = tp / denom if denom else float("nan")
    nan = float("nan")
    rmse = rx = ry = bx = by = rz = bz = nan
    if tp:
        d = pxy[ip] - gxy[ig]
        rmse = float(np.sqrt((d[:, :2] ** 2).sum(1).mean()))
        rx, ry = (float(v) for v in np.sqrt((d[:, :2] ** 2).mean(0)))
        bx, by = (float(v) for v in d[:, :2].mean(0))
        if three_d:
            rz = float(np.sqrt((d[:, 2] ** 2).mean()))
            bz = float(d[:, 2].mean())
    eff_lat = 100.0 - float(np.sqrt((100.0 - 100.0 * ji) ** 2 + (alpha_per_nm * rmse) ** 2))
    out = {
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "jaccard": float(ji),
        "jaccard_pct": float(100.0 * ji),
        "recall": tp / (tp + fn) if tp + fn else nan,
        "precision": tp / (tp + fp) if tp + fp else nan,
        "rmse_lat_nm": rmse,
        "rmse_x_nm": rx,
        "rmse_y_nm": ry,
        "bias_x_nm": bx,
        "bias_y_nm": by,
        "efficiency_lat": eff_lat,
        "efficiency": eff_lat,
    }
    if three_d:
        eff_ax = 100.0 - float(np.sqrt((100.0 - 100.0 * ji) ** 2 + (axial_alpha_per_nm * rz) ** 2))
        out.update(
            rmse_ax_nm=rz,
            bias_z_nm=bz,
            rmse_vol_nm=float(np.sqrt(rmse**2 + rz**2)),
            efficiency_ax=eff_ax,
            efficiency=0.5 * (eff_lat + eff_ax),
        )
    return out


def fisher_crlb(
    expected: np.ndarray,
    jacobian: np.ndarray,
    read_var: np.ndarray | float = 0.0,
    excess_noise: float = 1.0,
) -> np.ndarray:
    """Cramér–Rao lower bound (standard deviations) of any pixelated PSF model.

    ``expected`` (..., K): model photoelectrons per pixel; ``jacobian`` (..., P, K): their
    derivatives by the P parameters (e.g. x, y, z, photons, background), both for one
    emitter per leading index. Poisson noise with an sCMOS read-noise variance
    ``read_var`` (e⁻², added to the variance as in Huang et al. 2013) gives the Fisher
    information ``I_ij = Σ_k ∂μ_k/∂θ_i ∂μ_k/∂θ_j / (μ_k + r_k)``; an EMCCD's excess noise
    (``excess_noise`` = F² = 2) doubles the variances. Returns (..., P): sqrt(diag(I⁻¹)),
    in the parameters' units; NaN where I is singular.
    """
    mu = np.asarray(expected, np.float64)
    jac = np.asarray(jacobian, np.float64)
    if jac.shape[:-2] != mu.shape[:-1] or jac.shape[-1] != mu.shape[-1]:
        raise ValueError(f"jacobian shape {jac.shape} does not fit expected shape {mu.shape} (…, P, K)")
    if excess_noise < 1:
        raise ValueError(f"excess_noise must be >= 1, got {excess_noise}")
    den = np.maximum(mu + np.asarray(read_var, np.float64), 1e-12)
    fisher = np.einsum("...ik,...jk->...ij", jac / den[..., None, :], jac) / excess_noise
    p = fisher.shape[-1]
    out = np.full(fisher.shape[:-1], np.nan)
    flat_f = fisher.reshape(-1, p, p)
    flat_o = out.reshape(-1, p)
    ok = np.linalg.matrix_rank(flat_f) == p if flat_f.shape[0] else np.zeros(0, bool)
    if ok.any():
        cov = np.linalg.inv(flat_f[ok])
        flat_o[ok] = np.sqrt(np.maximum(np.einsum("npp->np", cov), 0.0))
    return flat_o.reshape(out.shape)


def mortensen_crlb_nm(
    sigma_nm: float,
    pixel_nm: float,
    photons: float,
    bg_photons_per_px: float,
    method: str = "mle",
    emccd: bool = False,
) -> float:
    """Mortensen et al. 2010 localization precision (standard deviation, one axis, nm).

    σ_a² = σ² + a²/12, τ = 2π σ_a² b / (N a²);
    MLE: Var = F (σ_a²/N) [1 + ∫₀¹ ln t / (1 + t/τ) dt]⁻¹;
    least squares: Var = F (σ_a²/N) (16/9 + 8π σ_a² b / (N a²)); F = 2 for EMCCD, else 1.
    With b = 0 the MLE bound is the photon-limited σ_a²/N.
    """
    from scipy.integrate import quad

    for name, val in (("sigma_nm", sigma_nm), ("pixel_nm", pixel_nm), ("photons", photons)):
        if not (val > 0 and np.isfinite(val)):
            raise ValueError(f"{name} must be positive and finite, got {val}")
    if not (bg_photons_per_px >= 0 and np.isfinite(bg_photons_per_px)):
        raise ValueError(f"bg_photons_per_px must be >= 0, got {bg_photons_per_px}")
    f = 2.0 if emccd else 1.0
    sa2 = sigma_nm**2 + pixel_nm**2 / 12.0
    base = sa2 / photons
    if method == "ls":
        ls_bg = 8.0 * np.pi * sa2 * bg_photons_per_px / (photons * pixel_nm**2)
        var = f * base * (16.0 / 9.0 + ls_bg)
    elif method == "mle":
        if bg_photons_per_px == 0:
            var = f * base
        else:
            tau = 2.0 * np.pi * sa2 * bg_photons_per_px / (photons * pixel_nm**2)
            integral, _ = quad(lambda t: np.log(t) / (1.0 + t / tau), 0.0, 1.0, limit=200)
            var = f * base / (1.0 + integral)
    else:
        raise ValueError(f"method must be 'mle' or 'ls', got {method!r}")
    return float(np.sqrt(var))
