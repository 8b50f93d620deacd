"""SMLM metrics: Mortensen bound and SMLM Challenge matching/scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smartscope.metrics import match_localizations, mortensen_crlb_nm, smlm_scores


def test_mortensen_worked_example() -> None:
    # Mortensen 2010 example: sigma = a = 100 nm, N = 1000, b = 10 photons/px -> MLE bound ≈ 4.1 nm
    assert mortensen_crlb_nm(100, 100, 1000, 10, "mle") == pytest.approx(4.1, abs=0.05)


def test_mortensen_limits_and_orderings() -> None:
    sa2 = 100**2 + 100**2 / 12
    # no background: MLE reaches the photon limit sigma_a / sqrt(N); LS gets 16/9 of the variance
    assert mortensen_crlb_nm(100, 100, 1000, 0) == pytest.approx(math.sqrt(sa2 / 1000), rel=1e-9)
    assert mortensen_crlb_nm(100, 100, 1000, 0, "ls") == pytest.approx(
        math.sqrt(sa2 / 1000 * 16 / 9), rel=1e-9
    )
    # EMCCD excess noise doubles the variance
    assert mortensen_crlb_nm(100, 100, 1000, 10, emccd=True) == pytest.approx(
        math.sqrt(2) * mortensen_crlb_nm(100, 100, 1000, 10), rel=1e-9
    )
    # MLE beats LS, more photons beat fewer, more background hurts
    assert mortensen_crlb_nm(100, 100, 1000, 10) < mortensen_crlb_nm(100, 100, 1000, 10, "ls")
    assert mortensen_crlb_nm(100, 100, 4000, 10) < mortensen_crlb_nm(100, 100, 1000, 10)
    assert mortensen_crlb_nm(100, 100, 1000, 50) > mortensen_crlb_nm(100, 100, 1000, 10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sigma_nm": 0}, "sigma_nm"),
        ({"photons": -5}, "photons"),
        ({"bg_photons_per_px": -1}, "bg_photons_per_px"),
        ({"method": "median"}, "method"),
    ],
)
def test_mortensen_bad_input_names_field(kwargs: dict, field: str) -> None:
    args = {"sigma_nm": 100.0, "pixel_nm": 100.0, "photons": 1000.0, "bg_photons_per_px": 10.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        mortensen_crlb_nm(**args)


# (pred frames, pred xy, gt frames, gt xy, expected tp, fp, fn, expected rmse)
CASES = [
    # perfect match
    ([0, 0], [[0, 0], [1000, 0]], [0, 0], [[0, 0], [1000, 0]], 2, 0, 0, 0.0),
    # a 3-4-5 offset on one of two, the other exact
    ([0, 0], [[30, 40], [1000, 0]], [0, 0], [[0, 0], [1000, 0]], 2, 0, 0, math.sqrt(50**2 / 2)),
    # right place, wrong frame: no match across frames
    ([1], [[0, 0]], [0], [[0, 0]], 0, 1, 1, float("nan")),
    # beyond 250 nm: not matched; 249 nm: matched
    ([0, 0], [[251, 0], [5000, 249]], [0, 0], [[0, 0], [5000, 0]], 1, 1, 1, 249.0),
    # one-to-one: two predictions near one truth -> one TP, one FP
    ([0, 0], [[10, 0], [0, 20]], [0], [[0, 0]], 1, 1, 0, 10.0),
    # Hungarian beats greedy: nearest-first pairs p0-g1 (190 nm) and strands p1;
    # the one-to-one optimum matches both (p0-g0 210 nm, p1-g1 200 nm)
    ([0, 0], [[210, 0], [600, 0]], [0, 0], [[0, 0], [400, 0]], 2, 0, 0, math.sqrt((210**2 + 200**2) / 2)),
    # empty predictions
    ([], [], [0, 3], [[0, 0], [1, 1]], 0, 0, 2, float("nan")),
]


@pytest.mark.parametrize(("pf", "pxy", "gf", "gxy", "tp", "fp", "fn", "rmse"), CASES)
def test_smlm_scores_table(pf, pxy, gf, gxy, tp, fp, fn, rmse) -> None:
    s = smlm_scores(pf, pxy, gf, gxy)
    assert (s["tp"], s["fp"], s["fn"]) == (tp, fp, fn)
    ji = tp / (tp + fp + fn)
    assert s["jaccard"] == pytest.approx(ji)
    if math.isnan(rmse):
        assert math.isnan(s["rmse_lat_nm"]) and math.isnan(s["efficiency"])
    else:
        assert s["rmse_lat_nm"] == pytest.approx(rmse)
        assert s["efficiency"] == pytest.approx(100 - math.sqrt((100 - 100 * ji) ** 2 + rmse**2))


def test_efficiency_known_value() -> None:
    # JI = 1/2 (1 TP, 1 FN), RMSE = 30 nm -> E = 100 - sqrt(50^2 + 30^2) = 41.69
    s = smlm_scores([0], [[30, 0]], [0, 0], [[0, 0], [2000, 0]])
    assert s["efficiency"] == pytest.approx(100 - math.sqrt(50**2 + 30**2))
    assert s["bias_x_nm"] == pytest.approx(30.0)


def test_match_indices_and_bad_shapes() -> None:
    ip, ig = match_localizations([0, 1, 1], [[0, 0], [5, 5], [500, 500]], [1, 1], [[490, 500], [0, 0]])
    assert sorted(zip(ip.tolist(), ig.tolist(), strict=True)) == [(1, 1), (2, 0)]
    with pytest.raises(ValueError, match="pred_xy_nm"):
        match_localizations([0], [[0, 0, 0]], [0], [[0, 0]])
    with pytest.raises(ValueError, match="gt_frame"):
        match_localizations([0], [[0, 0]], [0, 1], [[0, 0]])
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="tolerance_nm"):
        match_localizations([0], rng.normal(size=(1, 2)), [0], [[0, 0]], tolerance_nm=0)


# --------------------------------------------------------------------------- 3-D scores
# (pred xyz, gt xyz, tp, fp, fn, rmse_lat, rmse_ax)
CASES_3D = [
    # exact in 3-D
    ([[0, 0, 100]], [[0, 0, 100]], 1, 0, 0, 0.0, 0.0),
    # lateral 30/40 and axial 120: matched, both errors reported
    ([[30, 40, 220]], [[0, 0, 100]], 1, 0, 0, 50.0, 120.0),
    # within 250 nm laterally but 501 nm away in z: no match (axial gate)
    ([[0, 0, 601]], [[0, 0, 100]], 0, 1, 1, float("nan"), float("nan")),
    # 499 nm axially: matched
    ([[0, 0, 599]], [[0, 0, 100]], 1, 0, 0, 0.0, 499.0),
]


@pytest.mark.parametrize(("pxyz", "gxyz", "tp", "fp", "fn", "lat", "ax"), CASES_3D)
def test_smlm_scores_3d_table(pxyz, gxyz, tp, fp, fn, lat, ax) -> None:
    s = smlm_scores([0] * len(pxyz), pxyz, [0] * len(gxyz), gxyz)
    assert (s["tp"], s["fp"], s["fn"]) == (tp, fp, fn)
    if math.isnan(lat):
        assert math.isnan(s["rmse_ax_nm"]) and math.isnan(s["efficiency"])
        return
    ji = tp / (tp + fp + fn)
    assert s["rmse_lat_nm"] == pytest.approx(lat) and s["rmse_ax_nm"] == pytest.approx(ax)
    e_lat = 100 - math.sqrt((100 - 100 * ji) ** 2 + lat**2)
    e_ax = 100 - math.sqrt((100 - 100 * ji) ** 2 + (0.5 * ax) ** 2)
    assert s["efficiency_lat"] == pytest.approx(e_lat) and s["efficiency_ax"] == pytest.approx(e_ax)
    assert s["efficiency"] == pytest.approx(0.5 * (e_lat + e_ax))
    assert s["rmse_vol_nm"] == pytest.approx(math.hypot(lat, ax))


def test_3d_matching_prefers_the_axially_closer_truth() -> None:
    # two truths at the same x, y but different z: each prediction takes its own z
    ip, ig = match_localizations([0, 0], [[0, 0, 410], [0, 0, -390]], [0, 0], [[0, 0, -400], [0, 0, 400]])
    assert sorted(zip(ip.tolist(), ig.tolist(), strict=True)) == [(0, 1), (1, 0)]
    with pytest.raises(ValueError, match="3 columns"):
        smlm_scores([0], [[0, 0, 0]], [0], [[0, 0]])
    with pytest.raises(ValueError, match="axial_tolerance_nm"):
        match_localizations([0], [[0, 0, 0]], [0], [[0, 0, 0]], axial_tolerance_nm=0)


def test_fisher_crlb_reproduces_mortensen_for_a_gaussian() -> None:
    """The generic Fisher bound of the pixel-integrated Gaussian (x, y, N, bg) equals the
    Mortensen MLE formula within its approximation (a few %)."""
    from smartscope.metrics import fisher_crlb
    from smartscope.simulators.psf_models import GaussianZPSF

    g = GaussianZPSF((100.0, 0.0, 1e9, 0.0, 0.0), (100.0, 0.0, 1e9, 0.0, 0.0), pixel_nm=100.0, window=21)
    n, b = 1000.0, 10.0
    ev = g.evaluate(np.array([10.0]), np.array([10.0]), np.array([0.0]), 21)
    jac = np.stack([n * ev.dx, n * ev.dy, ev.psf, np.ones_like(ev.psf)], 1).reshape(1, 4, -1)
    crlb = fisher_crlb((b + n * ev.psf).reshape(1, -1), jac)
    assert crlb[0, 0] * 100 == pytest.approx(mortensen_crlb_nm(100, 100, n, b), rel=0.05)
    assert crlb[0, 0] == pytest.approx(crlb[0, 1])
    # EMCCD excess noise doubles the variance; read noise only adds
    assert fisher_crlb((b + n * ev.psf).reshape(1, -1), jac, excess_noise=2.0)[0, 0] == pytest.approx(
        math.sqrt(2) * crlb[0, 0]
    )
    assert fisher_crlb((b + n * ev.psf).reshape(1, -1), jac, read_var=4.0)[0, 0] > crlb[0, 0]
    with pytest.raises(ValueError, match="jacobian shape"):
        fisher_crlb(np.ones((1, 5)), np.ones((1, 2, 4)))
