"""Every metric smartscope reports, defined once (DESIGN §5).

Image metrics take float arrays and a stated ``data_range``; nothing here rescales
behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["mae", "nrmse", "pearson_r", "percentiles_ms", "psnr", "ssim"]


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


def percentiles_ms(latencies_s: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Latency percentiles in milliseconds, keyed ``p50_ms`` etc.; NaN when empty."""
    if len(latencies_s) == 0:
        return {f"p{q:g}_ms": float("nan") for q in qs}
    vals = np.percentile(np.asarray(latencies_s, dtype=np.float64) * 1e3, list(qs))
    return {f"p{q:g}_ms": float(v) for q, v in zip(qs, vals, strict=True)}
