"""Calibrated PSF models (cubic spline, Gaussian-z) and the 3-D MLE that fits them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smartscope.metrics import fisher_crlb, match_localizations
from smartscope.models.smlm.localize_classical import (
    CameraModel,
    ClassicalConfig,
    ClassicalLocalizer,
    fit_psf_model,
)
from smartscope.simulators.optics import Optics, psf_2d
from smartscope.simulators.psf_models import (
    GaussianZPSF,
    SplinePSF,
    astigmatic_zernike,
    file_sha256,
    load_psf,
    render_model,
)

OPTICS = Optics(pixel_size_um=0.1)


@pytest.fixture(scope="module")
def astig_spline() -> SplinePSF:
    """A spline from the exact pupil PSF with 1 rad RMS astigmatism, z −600…600 nm."""
    zr = astigmatic_zernike(1.0)
    zs = np.arange(-600, 601, 25)
    stack = np.stack([psf_2d(OPTICS, 17, zr, z * 1e-3) for z in zs])
    return SplinePSF(stack / stack.sum((1, 2)).max(), 100.0, z0_nm=-600.0, dz_nm=25.0)


def test_spline_interpolates_exactly_at_samples_and_between(astig_spline: SplinePSF) -> None:
    sp = astig_spline
    c = 8.0
    ev = sp.evaluate(np.array([c]), np.array([c]), np.array([-100.0]), 17, derivatives=False)
    np.testing.assert_allclose(ev.psf[0], sp.values[20], atol=1e-12)
    # between samples: the pupil PSF at a sub-pixel shift and an off-grid z, within 2 % of peak
    zr = astigmatic_zernike(1.0)
    truth = psf_2d(OPTICS, 17, zr, -0.09, shift_px=(0.3, -0.2))
    truth = (
        truth
        / np.stack([psf_2d(OPTICS, 17, zr, z * 1e-3) for z in np.arange(-600, 601, 25)]).sum((1, 2)).max()
    )
    ev = sp.evaluate(np.array([c - 0.2]), np.array([c + 0.3]), np.array([-90.0]), 17, derivatives=False)
    assert np.abs(ev.psf[0] - truth).max() < 0.02 * truth.max()


@pytest.mark.parametrize("model", ["spline", "gaussian_z"])
def test_derivatives_match_finite_differences(model: str, astig_spline: SplinePSF) -> None:
    m = (
        astig_spline
        if model == "spline"
        else GaussianZPSF((130.0, -250.0, 400.0, 0.1, 0.05), (130.0, 250.0, 400.0, -0.1, 0.05), 100.0)
    )
    x, y, z = np.array([6.3, 5.1]), np.array([5.8, 6.6]), np.array([-170.0, 240.0])
    ev = m.evaluate(x, y, z, 13)
    assert ev.dx is not None and ev.dy is not None and ev.dz is not None
    for d, args, h in (
        (ev.dx, (x + 1e-5, y, z), 1e-5),
        (ev.dy, (x, y + 1e-5, z), 1e-5),
        (ev.dz, (x, y, z + 1e-3), 1e-3),
    ):
        fd = (m.evaluate(*args, 13, derivatives=False).psf - ev.psf) / h
        assert np.abs(fd - d).max() < 1e-3 * np.abs(d).max()


def test_render_conserves_photons_and_positions(astig_spline: SplinePSF) -> None:
    img = render_model(
        astig_spline, (40, 40), np.array([2050.0]), np.array([1530.0]), np.array([0.0]), np.array([1e4])
    )
    # light inside the model window at best focus: close to all of it
    assert 0.9e4 < img.sum() <= 1.0e4 * 1.0001
    k = np.arange(40)
    cy = (img.sum(1) * k).sum() / img.sum()
    cx = (img.sum(0) * k).sum() / img.sum()
    assert cx == pytest.approx(2050 / 100 - 0.5, abs=0.05) and cy == pytest.approx(1530 / 100 - 0.5, abs=0.05)


def test_save_load_round_trip_and_bad_files(tmp_path: Path, astig_spline: SplinePSF) -> None:
    gz = {"sx": [130, -250, 400, 0, 0], "sy": [130, 250, 400, 0, 0], "z_range": [-600, 600], "window": 13}
    sp = SplinePSF(astig_spline.values, 100.0, -600.0, 25.0, meta={"method": "test", "gaussian_z": gz})
    p = sp.save(tmp_path / "psf.npz")
    back = load_psf(p)
    np.testing.assert_allclose(back.values, sp.values, rtol=1e-6)
    assert back.z_range_nm == sp.z_range_nm and back.meta["method"] == "test"
    assert back.meta["gaussian_z"]["sx"][1] == -250
    assert len(file_sha256(p)) == 64
    with pytest.raises(FileNotFoundError, match="nope"):
        load_psf(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.npz"):
        load_psf(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="odd"):
        SplinePSF(np.ones((3, 8, 8)), 100.0, 0.0, 10.0)
    with pytest.raises(ValueError, match="dz_nm"):
        SplinePSF(np.ones((3, 9, 9)), 100.0)


def test_3d_mle_reaches_the_crlb_on_its_own_model(astig_spline: SplinePSF) -> None:
    """x, y, z fitted to Poisson data drawn from the spline itself: unbiased, RMSE close
    to the Fisher bound in all three axes, across the z range."""
    sp = astig_spline
    rng = np.random.default_rng(4)
    n = 300
    z = rng.uniform(-450, 450, n)
    x = 6.0 + rng.uniform(-0.5, 0.5, n)
    y = 6.0 + rng.uniform(-0.5, 0.5, n)
    photons, bg = 3000.0, 10.0
    ev = sp.evaluate(x, y, z, 13)
    mu = bg + photons * ev.psf
    data = rng.poisson(mu).astype(np.float64)
    fit = fit_psf_model(data, np.zeros_like(data), sp)
    assert fit.converged.mean() > 0.95 and fit.z_nm is not None
    err = np.stack([(fit.x_px - x) * 100, (fit.y_px - y) * 100, fit.z_nm - z], 1)
    jac = np.stack([photons * ev.dx, photons * ev.dy, photons * ev.dz, ev.psf, np.ones_like(ev.psf)], 1)
    crlb = fisher_crlb(mu.reshape(n, -1), jac.reshape(n, 5, -1))[:, :3] * np.array([100, 100, 1])
    ratio = np.sqrt((err**2).mean(0)) / np.sqrt((crlb**2).mean(0))
    assert np.all(ratio < 1.25), ratio
    assert np.all(np.abs(err.mean(0)) < 0.3 * np.sqrt((crlb**2).mean(0)))
    # the reported uncertainty is that bound
    np.testing.assert_allclose(fit.crlb_z_nm, crlb[:, 2], rtol=0.2)


def test_classical_localizer_3d_on_a_frame(astig_spline: SplinePSF) -> None:
    """The full detector + spline fit on a rendered frame: every emitter, with z."""
    rng = np.random.default_rng(7)
    g = np.arange(8, 60, 16) * 100.0
    x = np.repeat(g, g.size) + rng.uniform(0, 100, g.size**2)
    y = np.tile(g, g.size) + rng.uniform(0, 100, g.size**2)
    z = rng.uniform(-400, 400, g.size**2)
    img = render_model(
        astig_spline, (64, 64), x, y, z, np.full(x.size, 4000.0), out=np.full((64, 64), 15.0, np.float32)
    )
    frame = rng.poisson(img).astype(np.float64) + 100.0  # ADU with offset 100, 1 e⁻/ADU
    loc = ClassicalLocalizer(ClassicalConfig(pixel_nm=100.0), CameraModel(offset_adu=100.0), psf=astig_spline)
    t = loc.localize(frame, 3)
    assert t.has_z and set(t.frame.tolist()) == {3}
    ip, ig = match_localizations(t.frame, t.xyz_nm(), np.full(x.size, 3), np.stack([x, y, z], 1))
    assert ip.size == x.size == len(t)
    assert np.sqrt(np.mean((t.z_nm[ip] - z[ig]) ** 2)) < 40.0
    assert np.all(np.isfinite(t.sigma_z_nm)) and np.median(t.sigma_z_nm) < 30.0
    with pytest.raises(ValueError, match="pixel size"):
        ClassicalLocalizer(ClassicalConfig(pixel_nm=110.0), psf=astig_spline)


def test_astigmatism_swaps_the_elongation_through_focus() -> None:
    zr = astigmatic_zernike(1.0)
    below, above = psf_2d(OPTICS, 21, zr, -0.4), psf_2d(OPTICS, 21, zr, 0.4)
    k = np.arange(21) - 10

    def widths(p: np.ndarray) -> tuple[float, float]:
        return float((p.sum(0) * k**2).sum() / p.sum()), float((p.sum(1) * k**2).sum() / p.sum())

    (bx, by), (ax, ay) = widths(below), widths(above)
    assert bx > 1.5 * by and ay > 1.5 * ax


def test_refine_pulls_rough_estimates_to_the_mle_with_neighbours_held(astig_spline: SplinePSF) -> None:
    """Estimates off by ~30 nm (as a young network's) are refined to near the truth; a close
    neighbour's light is held fixed rather than fitted into its partner."""
    from smartscope.models.smlm.localize_classical import refine_localizations
    from smartscope.models.smlm.table import LocTable

    rng = np.random.default_rng(11)
    x = np.array([1500.0, 1850.0, 4000.0])  # the first two 350 nm apart
    y = np.array([2000.0, 2050.0, 4200.0])
    z = np.array([-200.0, 150.0, 0.0])
    img = render_model(
        astig_spline, (64, 64), x, y, z, np.full(3, 5000.0), out=np.full((64, 64), 10.0, np.float32)
    )
    frame = rng.poisson(img).astype(np.float64)
    rough = LocTable.from_columns(
        frame=np.zeros(3, int),
        x_nm=x + np.array([30.0, -25.0, 20.0]),
        y_nm=y + np.array([-20.0, 30.0, -30.0]),
        z_nm=z + np.array([80.0, -60.0, 50.0]),
        photons=np.full(3, 4000.0),
        bg=np.full(3, 10.0),
        sigma_x_nm=np.full(3, 30.0),
        sigma_y_nm=np.full(3, 30.0),
        prob=np.ones(3),
    )
    t = refine_localizations(rough, frame, astig_spline, CameraModel(offset_adu=0.0), 100.0)
    assert np.all(np.hypot(t.x_nm - x, t.y_nm - y) < 12.0), np.hypot(t.x_nm - x, t.y_nm - y)
    assert np.all(np.abs(t.z_nm - z) < 40.0) and np.all(t.sigma_x_nm < 10.0)
    assert np.array_equal(t.prob, rough.prob)
