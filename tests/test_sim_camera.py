"""Camera noise models against the photon-transfer curve and EMCCD statistics."""

from __future__ import annotations

import numpy as np
import pytest

from smartscope.simulators.camera import EMCCD_REFERENCE, CameraConfig, expose


def _ptc(cfg: CameraConfig, levels: np.ndarray, shape=(128, 128), seed=0):
    """Mean signal (ADU above offset) and temporal variance (ADU²) per flat-field level.

    Two frames per level; var(A − B)/2 removes the fixed pattern (offset/gain maps).
    """
    rng = np.random.default_rng(seed)
    means, variances = [], []
    for ph in levels:
        flat = np.full(shape, ph, np.float32)
        a = expose(cfg, flat, rng).astype(np.float64)
        b = expose(cfg, flat, rng).astype(np.float64)
        means.append(0.5 * (a.mean() + b.mean()) - cfg.offset_adu + 0.5)
        variances.append(np.var(a - b) / 2)
    return np.array(means), np.array(variances)


@pytest.mark.parametrize("gain", [0.5, 2.0, 4.0])
def test_photon_transfer_slope_is_the_conversion_gain(gain: float) -> None:
    cfg = CameraConfig(gain_adu_per_e=gain, read_noise_e=1.6, full_well_e=1e6, dark_e_per_s=0.0)
    levels = np.array([0, 5, 10, 20, 50, 100, 300, 1000, 2000, 4000], np.float64)
    m, v = _ptc(cfg, levels, shape=(256, 256))
    # the scatter of a variance estimate grows with the variance: weight residuals by 1/v
    slope, intercept = np.polyfit(m, v, 1, w=1 / v)
    assert slope == pytest.approx(gain, rel=0.02)
    # intercept = g²σ_r² (+ 1/12 ADU² quantisation); the sCMOS map's RMS read noise
    rms_read = float(np.sqrt(np.mean(cfg.maps((256, 256)).read_noise_e ** 2)))
    read_est = np.sqrt(max(intercept - 1 / 12, 0)) / gain
    assert read_est == pytest.approx(rms_read, rel=0.1)


def test_read_noise_and_offset_in_the_dark() -> None:
    cfg = CameraConfig(read_noise_e=3.0, read_noise_spread_rel=0.0, gain_adu_per_e=2.0)
    rng = np.random.default_rng(1)
    dark = np.zeros((256, 256), np.float32)
    a = expose(cfg, dark, rng, exposure_ms=1.0).astype(np.float64)
    b = expose(cfg, dark, rng, exposure_ms=1.0).astype(np.float64)
    sigma_adu = np.sqrt(np.var(a - b) / 2 - 1 / 12)
    assert sigma_adu / cfg.gain_adu_per_e == pytest.approx(3.0, rel=0.03)
    assert a.mean() + 0.5 == pytest.approx(cfg.offset_adu, abs=0.3)


def test_mean_signal_is_qe_times_photons() -> None:
    cfg = CameraConfig(dark_e_per_s=0.0)
    rng = np.random.default_rng(2)
    photons = 500.0
    img = expose(cfg, np.full((128, 128), photons, np.float32), rng).astype(np.float64)
    electrons = (img.mean() + 0.5 - cfg.offset_adu) / cfg.gain_adu_per_e
    assert electrons == pytest.approx(cfg.qe * photons, rel=0.01)


def test_saturation_at_full_well_and_bit_depth() -> None:
    rng = np.random.default_rng(3)
    cfg = CameraConfig(full_well_e=10_000, gain_adu_per_e=2.0, offset_adu=100)
    img = expose(cfg, np.full((64, 64), 1e6, np.float32), rng)
    # full well clips the electrons; read noise still jitters the last ADU
    assert np.median(img) == pytest.approx(10_000 * 2.0 + 100, abs=8)
    cfg12 = CameraConfig(bit_depth=12, gain_adu_per_e=2.0)
    img12 = expose(cfg12, np.full((64, 64), 1e5, np.float32), rng)
    assert img12.max() == 4095 and (img12 == 4095).mean() > 0.99


def test_emccd_excess_noise_factor_is_two() -> None:
    cfg = EMCCD_REFERENCE.model_copy(update={"dark_e_per_s": 0.0})
    g_total = cfg.em_gain * cfg.gain_adu_per_e  # ADU per photoelectron
    rng = np.random.default_rng(4)
    for photons in (20.0, 80.0):
        flat = np.full((256, 256), photons, np.float32)
        a = expose(cfg, flat, rng).astype(np.float64)
        b = expose(cfg, flat, rng).astype(np.float64)
        var_signal = np.var(a - b) / 2 - (cfg.read_noise_e * cfg.gain_adu_per_e) ** 2 - 1 / 12
        n_e = cfg.qe * photons
        f2 = var_signal / (g_total**2 * n_e)
        assert f2 == pytest.approx(2.0, rel=0.05)
        # mean: G·QE·photons
        assert (a.mean() + 0.5 - cfg.offset_adu) == pytest.approx(g_total * n_e, rel=0.02)


def test_scmos_maps_are_fixed_by_the_map_seed() -> None:
    cfg = CameraConfig()
    m1, m2 = cfg.maps((32, 32)), CameraConfig().maps((32, 32))
    np.testing.assert_array_equal(m1.offset_adu, m2.offset_adu)
    other = CameraConfig(map_seed=7).maps((32, 32))
    assert not np.array_equal(m1.offset_adu, other.offset_adu)


def test_bad_camera_fields_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match="qe"):
        CameraConfig(qe=1.5)
    with pytest.raises(ValueError, match="bit_depth"):
        CameraConfig(bit_depth=20)


@pytest.mark.parametrize("lam", [0.4, 3.7, 16.4, 300.0])
def test_shot_noise_follows_the_poisson_distribution(lam: float) -> None:
    from scipy import stats

    from smartscope.simulators.camera import shot_noise

    rng = np.random.default_rng(9)
    img = np.full((512, 512), lam, np.float32)
    img[:40, :40] += 25.0  # a sparse bright patch on the uniform floor
    x = shot_noise(img, rng)
    floor = x[40:, :].ravel()
    k = np.arange(int(lam + 8 * np.sqrt(lam) + 10))
    observed = np.bincount(floor.astype(np.int64), minlength=k.size)[: k.size]
    expected = stats.poisson.pmf(k, lam) * floor.size
    keep = expected > 20
    chi2 = float(np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep]))
    assert chi2 < stats.chi2.ppf(0.999, keep.sum() - 1)
    patch = x[:40, :40]
    assert patch.mean() == pytest.approx(lam + 25.0, rel=0.02)
    assert patch.var() == pytest.approx(lam + 25.0, rel=0.15)
