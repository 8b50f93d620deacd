"""Optics of the virtual microscope against diffraction theory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smartscope.simulators.optics import (
    Optics,
    OTFCache,
    StampTable,
    convolve,
    noll_to_nm,
    psf_2d,
    psf_3d,
    pupil,
    strehl_ratio,
    zernike,
)


def _fwhm_um(profile: np.ndarray, dx_um: float) -> float:
    """FWHM of a peaked 1-D profile with linear interpolation at the half-maximum."""
    half = profile.max() / 2
    above = np.flatnonzero(profile >= half)
    i0, i1 = above[0], above[-1]
    left = i0 - 1 + (half - profile[i0 - 1]) / (profile[i0] - profile[i0 - 1])
    right = i1 + (profile[i1] - half) / (profile[i1] - profile[i1 + 1])
    return float((right - left) * dx_um)


@pytest.mark.parametrize(("na", "wavelength_nm"), [(1.4, 670.0), (1.2, 520.0), (0.8, 590.0)])
def test_unaberrated_fwhm_matches_051_lambda_over_na(na: float, wavelength_nm: float) -> None:
    o = Optics(na=na, wavelength_nm=wavelength_nm, pixel_size_um=0.01)
    psf = psf_2d(o, 161, pixel_integrated=False)
    c = psf.shape[0] // 2
    expected = 0.51 * wavelength_nm * 1e-3 / na
    for prof in (psf[c], psf[:, c]):
        assert _fwhm_um(prof, 0.01) == pytest.approx(expected, rel=0.05)


def test_noll_indices_follow_noll_1976() -> None:
    table = {1: (0, 0), 2: (1, 1), 3: (1, -1), 4: (2, 0), 5: (2, -2), 6: (2, 2), 7: (3, -1)}
    table |= {8: (3, 1), 9: (3, -3), 10: (3, 3), 11: (4, 0), 12: (4, 2), 13: (4, -2)}
    for j, nm in table.items():
        assert noll_to_nm(j) == nm


def test_zernike_modes_are_orthonormal_on_the_unit_disk() -> None:
    n = 400
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n * 2 - 1
    rho, theta = np.hypot(x, y), np.arctan2(y, x)
    inside = rho <= 1
    modes = np.stack([zernike(j, rho, theta)[inside] for j in range(1, 16)])
    gram = modes @ modes.T / inside.sum()
    np.testing.assert_allclose(gram, np.eye(15), atol=0.02)


def test_energy_is_conserved_by_phase_aberrations_and_defocus() -> None:
    o = Optics()
    dx = 0.03
    p0 = pupil(o, 256, dx)
    energy = float(np.sum(np.abs(p0) ** 2))
    for zern, dz in (([], 0.0), ([0, 0, 0, 0, 0.6, 0, 0.4], 0.0), ([0] * 10 + [0.5], 0.8)):
        p = pupil(o, 256, dx, zern, dz)
        field = np.fft.ifft2(p, norm="ortho")
        assert float(np.sum(np.abs(field) ** 2)) == pytest.approx(energy, rel=1e-9)
    # normalised camera PSFs keep (nearly) all light in a ±3 µm window
    for zern in ([], [0, 0, 0, 0, 0.5]):
        assert psf_2d(o, 61, zern).sum() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("j", [5, 6, 7, 8, 11])
@pytest.mark.parametrize("a_rad", [0.2, 0.35])
def test_strehl_of_a_single_mode_is_exp_minus_variance(j: int, a_rad: float) -> None:
    zern = [0.0] * (j - 1) + [a_rad]
    expected = math.exp(-(a_rad**2))  # Maréchal: S ≈ exp(−σ²), σ = RMS phase (rad)
    assert strehl_ratio(Optics(), zern) == pytest.approx(expected, abs=0.01)


def test_tip_tilt_only_moves_the_psf() -> None:
    o = Optics()
    assert strehl_ratio(o, [0.0, 1.0, -0.7]) == pytest.approx(1.0, abs=1e-6)
    assert psf_2d(o, 41, [0.0, 1.0]).sum() == pytest.approx(psf_2d(o, 41).sum(), abs=0.01)
    # tilt moves the centroid; for Noll Z2 = 2ρcosθ the shift is a·λ/(π·NA) µm
    a = 0.8
    psf = psf_2d(o, 41, [0.0, a])
    xx = np.arange(41) - 20
    cx_um = float((psf.sum(axis=0) * xx).sum() / psf.sum()) * o.pixel_size_um
    expected = a * o.wavelength_nm * 1e-3 / (math.pi * o.na)
    assert abs(cx_um) == pytest.approx(expected, rel=0.05)


def test_through_focus_peak_falls_symmetrically_for_an_unaberrated_pupil() -> None:
    o = Optics()
    z = np.array([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0])
    stack = psf_3d(o, z, size_px=31)
    peaks = stack.max(axis=(1, 2))
    assert peaks.argmax() == 3
    np.testing.assert_allclose(peaks[:3], peaks[4:][::-1], rtol=0.02)
    assert peaks[0] < peaks[1] < peaks[2] < peaks[3]


def test_convolution_conserves_flux_and_cache_reuses_otfs() -> None:
    o = Optics()
    rng = np.random.default_rng(0)
    obj = rng.random((64, 64)).astype(np.float32)
    cache = OTFCache()
    out = convolve(obj, cache.otf((64, 64), o))
    assert out.sum() == pytest.approx(obj.sum(), rel=1e-3)
    cache.otf((64, 64), o)
    assert cache.builds == 1
    cache.otf((64, 64), o, [0, 0, 0, 0, 0.3])
    assert cache.builds == 2


def test_stamps_put_emitters_where_they_are() -> None:
    o = Optics()
    tab = StampTable(o)
    y, x = np.array([20.3, 40.81]), np.array([15.62, 44.07])
    img = tab.render((64, 64), y, x, np.array([1000.0, 1000.0]))
    assert img.sum() == pytest.approx(2000.0, rel=1e-4)
    for yi, xi in zip(y, x, strict=True):
        sl = (slice(int(yi) - 6, int(yi) + 7), slice(int(xi) - 6, int(xi) + 7))
        patch = img[sl]
        yy, xx = np.mgrid[sl]
        assert (patch * yy).sum() / patch.sum() == pytest.approx(yi, abs=0.05)
        assert (patch * xx).sum() / patch.sum() == pytest.approx(xi, abs=0.05)


@pytest.mark.parametrize("j", [5, 11])
def test_image_peak_ratio_follows_marechal(j: int) -> None:
    """Strehl measured on the PSF image itself (peak stays on axis for astig/spherical)."""
    o = Optics(pixel_size_um=0.02)
    a = 0.3
    p0 = psf_2d(o, 41, pixel_integrated=False)
    p1 = psf_2d(o, 41, [0.0] * (j - 1) + [a], pixel_integrated=False)
    assert p1.max() / p0.max() == pytest.approx(math.exp(-(a**2)), abs=0.015)
