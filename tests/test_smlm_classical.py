"""Classical localizer: precision at the Cramér–Rao bound on spots of known position."""

from __future__ import annotations

import numpy as np
import pytest

from smartscope.metrics import match_localizations, mortensen_crlb_nm, smlm_scores
from smartscope.models.smlm.localize_classical import (
    CameraModel,
    ClassicalConfig,
    ClassicalLocalizer,
    fit_spots,
    integrated_gaussian,
    render_spots,
)


def test_integrated_gaussian_conserves_photons() -> None:
    img = integrated_gaussian((41, 41), np.array([20.3]), np.array([19.8]), np.array([1e3]), 1.5)
    assert img.sum() == pytest.approx(1000.0, rel=1e-6)
    # centroid is the emitter position
    yy, xx = np.mgrid[:41, :41]
    assert (img * xx).sum() / img.sum() == pytest.approx(20.3, abs=1e-6)
    assert (img * yy).sum() / img.sum() == pytest.approx(19.8, abs=1e-6)


@pytest.mark.parametrize(("photons", "bg"), [(2000.0, 10.0), (500.0, 20.0)])
def test_fit_precision_reaches_crlb(photons: float, bg: float) -> None:
    """Over 1500 Poisson spots the MLE scatter matches its own CRLB and Mortensen's bound."""
    rng = np.random.default_rng(7)
    n, size, sig = 1500, 11, 1.3
    gx = (size - 1) / 2 + rng.uniform(-0.5, 0.5, n)
    gy = (size - 1) / 2 + rng.uniform(-0.5, 0.5, n)
    mu = np.stack(
        [
            integrated_gaussian((size, size), gx[i : i + 1], gy[i : i + 1], [photons], sig, bg)
            for i in range(n)
        ]
    )
    rois = rng.poisson(mu).astype(np.float64)
    fit = fit_spots(rois, np.zeros_like(rois), sig)
    err = np.concatenate([fit.x_px - gx, fit.y_px - gy]) * 100.0  # 100 nm pixels
    crlb_fit = float(np.sqrt(np.mean(np.concatenate([fit.crlb_x_px, fit.crlb_y_px]) ** 2))) * 100
    crlb_m = mortensen_crlb_nm(130.0, 100.0, photons, bg)
    rmse = float(np.sqrt(np.mean(err**2)))
    # a statistic over 3000 errors: its relative s.e. is ~1.3 %; the bound is met within 10 %
    assert rmse / crlb_fit == pytest.approx(1.0, abs=0.1)
    assert crlb_fit == pytest.approx(crlb_m, rel=0.1)  # Mortensen's formula vs Fisher info
    assert abs(float(np.mean(err))) < 3 * rmse / np.sqrt(err.size)  # unbiased
    assert np.median(fit.photons) == pytest.approx(photons, rel=0.05)
    assert np.median(fit.bg) == pytest.approx(bg, rel=0.1)


def test_fit_sigma_recovers_psf_width() -> None:
    rng = np.random.default_rng(3)
    n, size, sig_true = 400, 11, 1.6
    mu = np.stack(
        [integrated_gaussian((size, size), [5.0], [5.0], [3000.0], sig_true, 5.0) for _ in range(n)]
    )
    fit = fit_spots(rng.poisson(mu).astype(float), np.zeros((n, size, size)), 1.2, fit_sigma=True)
    assert np.median(fit.sigma_px) == pytest.approx(sig_true, rel=0.03)


@pytest.mark.parametrize(
    "camera",
    [
        CameraModel(offset_adu=100, e_per_adu=0.5, read_noise_e=1.5),  # sCMOS-like
        CameraModel(offset_adu=200, e_per_adu=10.0, em_gain=100.0, read_noise_e=50.0, emccd=True),
    ],
    ids=["scmos", "emccd"],
)
def test_localizer_on_frames(camera: CameraModel) -> None:
    """Whole-frame pipeline: every well-separated emitter found, no false positives, errors
    consistent with the reported uncertainties (EMCCD: sqrt(2) larger)."""
    rng = np.random.default_rng(11)
    loc = ClassicalLocalizer(ClassicalConfig(pixel_nm=100, psf_sigma_nm=130), camera)
    grid = np.arange(8, 120, 10)
    m = grid.size**2
    errs, unc, all_scores = [], [], []
    for f in range(6):
        gx = np.repeat(grid, grid.size) + rng.uniform(-0.5, 0.5, m)
        gy = np.tile(grid, grid.size) + rng.uniform(-0.5, 0.5, m)
        img = render_spots((128, 128), gx, gy, np.full(m, 1500.0), 1.3, 15.0, camera, rng)
        tab = loc.localize(img, frame_index=f)
        gt = np.stack([(gx + 0.5) * 100, (gy + 0.5) * 100], 1)
        all_scores.append(smlm_scores(tab.frame, tab.xy_nm(), np.full(m, f), gt))
        ip, ig = match_localizations(tab.frame, tab.xy_nm(), np.full(m, f), gt)
        errs.append(tab.xy_nm()[ip] - gt[ig])
        unc.append(np.stack([tab.sigma_x_nm[ip], tab.sigma_y_nm[ip]], 1))
    assert sum(s["fn"] for s in all_scores) == 0
    assert sum(s["fp"] for s in all_scores) == 0
    e = np.concatenate(errs)
    u = np.concatenate(unc)
    ratio = float(np.sqrt(np.mean(e**2)) / np.sqrt(np.mean(u**2)))
    assert ratio == pytest.approx(1.0, abs=0.12)
    base = mortensen_crlb_nm(130.0, 100.0, 1500.0, 15.0, emccd=camera.emccd)
    assert float(np.sqrt(np.mean(u**2))) == pytest.approx(base, rel=0.15)


def test_empty_frame_has_no_localizations_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    cam = CameraModel(offset_adu=100, e_per_adu=1.0)
    img = (rng.poisson(20.0, (64, 64)) + 100).astype(np.uint16)
    loc = ClassicalLocalizer(ClassicalConfig(), cam)
    assert len(loc.localize(img)) <= 1  # pure background: at most a rare false alarm
    with pytest.raises(ValueError, match="2-D"):
        loc.localize(np.zeros((2, 8, 8), np.uint16))
    with pytest.raises(ValueError, match="roi_px"):
        ClassicalConfig(roi_px=6)
    with pytest.raises(ValueError, match="e_per_adu"):
        CameraModel(e_per_adu=0)


def test_per_pixel_read_noise_enters_the_scmos_likelihood() -> None:
    """An sCMOS pixel with 40 e⁻ read noise (random-telegraph-like) beside every emitter: the
    fit that adds each pixel's read-noise variance to its Poisson term trusts that pixel less
    and localizes closer to the truth than one that assumes the sensor's typical 1.3 e⁻."""
    rng = np.random.default_rng(1)
    shape = (64, 64)
    read = np.full(shape, 1.3)
    g = np.arange(7, 60, 10)
    gx, gy = np.meshgrid(g, g)
    read[gy, gx + 1] = 40.0
    read[rng.random(shape) < 0.02] = 40.0
    cams = {
        "map": CameraModel(offset_adu=100.0, e_per_adu=1.0, read_noise_e=1.3, read_noise_map_e=read),
        "scalar": CameraModel(offset_adu=100.0, e_per_adu=1.0, read_noise_e=1.3),
    }
    errs: dict[str, list[np.ndarray]] = {k: [] for k in cams}
    for t in range(12):
        x = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
        y = gy.ravel() + rng.uniform(-0.5, 0.5, gx.size)
        mu = integrated_gaussian(shape, x, y, np.full(x.size, 1500.0), 1.3, 20.0)
        adu = rng.poisson(mu) + rng.normal(0.0, read) + 100.0
        gt = (np.column_stack([x, y]) + 0.5) * 100.0
        for k, cam in cams.items():
            tab = ClassicalLocalizer(ClassicalConfig(pixel_nm=100.0), cam).localize(adu, t)
            ip, ig = match_localizations(tab.frame, tab.xy_nm(), np.full(x.size, t), gt)
            assert len(ip) == len(tab) == x.size  # every emitter found, nothing else
            errs[k].append(tab.xy_nm()[ip] - gt[ig])
    rmse = {k: float(np.sqrt((np.concatenate(v) ** 2).sum(1).mean())) for k, v in errs.items()}
    assert rmse["map"] < 0.85 * rmse["scalar"], rmse
