"""Samples and photophysics against their configured rates and geometry."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage

from smartscope.simulators.samples import (
    FocusDrift,
    Photophysics,
    PhotophysicsState,
    fission_points,
    label_free,
    make_cells,
    make_emitters,
    splat_tubes,
)
from smartscope.simulators.scene import CellScene, SMLMScene


def _run(pp: Photophysics, n: int, frames: int, dt_s: float, exc: float, act: float, seed=0):
    st = PhotophysicsState.initial(n, pp)
    rng = np.random.default_rng(seed)
    on_state, on_time, alive = [], [], []
    for _ in range(frames):
        frac = st.step(pp, dt_s, exc, act, rng)
        on_state.append(np.mean(st.state == 1))
        on_time.append(frac.mean())
        alive.append(np.mean(st.state != 2))
    return np.array(on_state), np.array(on_time), np.array(alive)


def test_stationary_on_fraction_is_kon_over_kon_plus_koff() -> None:
    pp = Photophysics(
        k_act_spont_per_s=0.5,
        k_act_per_s_per_mw405=1.0,
        k_off_per_s_per_mw=0.05,
        k_bleach_per_s_per_mw=0.0,
        start_on=False,
    )
    exc, act, dt = 100.0, 2.0, 0.01  # k_on = 2.5 /s, k_off = 5 /s
    on_state, on_time, _ = _run(pp, 20_000, 300, dt, exc, act)
    k_on, k_off = 0.5 + 1.0 * act, 0.05 * exc
    expected = k_on / (k_on + k_off)
    assert on_state[150:].mean() == pytest.approx(expected, rel=0.03)
    # time-averaged on fraction within frames is the same stationary probability
    assert on_time[150:].mean() == pytest.approx(expected, rel=0.03)


def test_bleaching_time_matches_the_rate_and_scales_with_power() -> None:
    pp = Photophysics(
        k_act_spont_per_s=0.0,
        k_act_per_s_per_mw405=0.0,
        k_off_per_s_per_mw=0.0,
        k_bleach_per_s_per_mw=0.02,
        start_on=True,
    )
    dt = 0.01
    for exc in (50.0, 100.0):
        _, _, alive = _run(pp, 20_000, 200, dt, exc, 0.0, seed=int(exc))
        t = dt * np.arange(1, 201)
        tau_fit = -1 / np.polyfit(t, np.log(alive), 1)[0]
        assert tau_fit == pytest.approx(1 / (0.02 * exc), rel=0.03)


def test_bleaching_under_blinking_runs_at_rate_times_on_fraction() -> None:
    pp = Photophysics(
        k_act_spont_per_s=2.0,
        k_act_per_s_per_mw405=0.0,
        k_off_per_s_per_mw=0.08,
        k_bleach_per_s_per_mw=0.002,
        start_on=False,
    )
    dt, exc = 0.01, 100.0  # k_on 2, k_off 8, k_bl 0.2 → effective ≈ k_bl·k_on/(k_on+k_off+k_bl)
    _, _, alive = _run(pp, 20_000, 600, dt, exc, 0.0, seed=3)
    t = dt * np.arange(1, 601)
    k_eff = -np.polyfit(t[100:], np.log(alive[100:]), 1)[0]
    k_on, k_leave, k_bl = 2.0, 0.08 * exc + 0.002 * exc, 0.002 * exc
    # slow mode of the three-state chain (eigenvalue), ≈ k_bl · p_on
    tr, det = k_on + k_leave, k_on * k_bl
    expected = (tr - math.sqrt(tr * tr - 4 * det)) / 2
    assert k_eff == pytest.approx(expected, rel=0.05)


def test_activation_rate_rises_linearly_with_405_power() -> None:
    pp = Photophysics(
        k_act_spont_per_s=0.1, k_act_per_s_per_mw405=0.5, k_off_per_s_per_mw=1.0, start_on=False
    )
    dt, n = 0.01, 50_000
    for p405 in (0.0, 4.0, 10.0):
        st = PhotophysicsState.initial(n, pp)
        st.step(pp, dt, 0.0, p405, np.random.default_rng(5))
        k = 0.1 + 0.5 * p405
        assert np.mean(st.state == 1) == pytest.approx(1 - math.exp(-k * dt), rel=0.08, abs=3e-4)


def test_smlm_ground_truth_photons_are_in_the_image_where_the_emitters_are() -> None:
    sc = SMLMScene((64, 64), seed=2, structure="rings")
    gt = sc.advance(activation_mw=0.0)
    img = sc.photons_image(gt)
    bg = sc.background_per_ms_per_mw * sc.excitation_mw * sc.exposure_ms
    inner = (gt["x_nm"] > 800) & (gt["x_nm"] < 5600) & (gt["y_nm"] > 800) & (gt["y_nm"] < 5600)
    # all emitters start on: total signal equals the ground-truth photons (edges aside)
    total = img.sum() - bg * img.size
    assert total == pytest.approx(gt["photons"].sum(), rel=0.03)
    assert inner.any()
    # photons of a full-frame-on emitter = rate × power × exposure
    full = gt["on_fraction"] == 1.0
    expected = sc.pp.photons_per_ms_per_mw * sc.excitation_mw * sc.exposure_ms
    np.testing.assert_allclose(gt["photons"][full], expected)


def test_smlm_isolated_emitter_is_centred_on_its_ground_truth() -> None:
    from smartscope.simulators.samples import Emitters

    em = Emitters(
        x_nm=np.array([1234.0, 4321.0]),
        y_nm=np.array([2345.0, 3456.0]),
        z_nm=np.zeros(2),
        structure_id=np.zeros(2, np.int32),
    )
    sc = SMLMScene((64, 64), seed=0, emitters=em, background_per_ms_per_mw=0.0)
    gt = sc.advance(0.0)
    img = sc.photons_image(gt)
    for x, y in zip(em.x_nm, em.y_nm, strict=True):
        cy, cx = int(y / 100), int(x / 100)
        patch = img[cy - 6 : cy + 7, cx - 6 : cx + 7]
        yy, xx = np.mgrid[cy - 6 : cy + 7, cx - 6 : cx + 7]
        # pixel i spans [i·a, (i+1)·a): centre at (i + 0.5)·a
        assert ((patch * xx).sum() / patch.sum() + 0.5) * 100 == pytest.approx(x, abs=5)
        assert ((patch * yy).sum() / patch.sum() + 0.5) * 100 == pytest.approx(y, abs=5)


def test_structures_have_their_geometry() -> None:
    rings = make_emitters("rings", (20_000.0, 20_000.0), seed=1)
    for sid in np.unique(rings.structure_id)[:20]:
        sel = rings.structure_id == sid
        if sel.sum() < 6:
            continue
        x, y = rings.x_nm[sel], rings.y_nm[sel]
        # algebraic circle fit (missing corners bias a plain centroid)
        a = np.column_stack([2 * x, 2 * y, np.ones_like(x)])
        (cx, cy, c), *_ = np.linalg.lstsq(a, x**2 + y**2, rcond=None)
        assert math.sqrt(c + cx**2 + cy**2) == pytest.approx(55, abs=8)
    fil = make_emitters("filaments", (20_000.0, 20_000.0), seed=1, density_per_um=40)
    sel = fil.structure_id == 0
    step = np.hypot(np.diff(fil.x_nm[sel]), np.diff(fil.y_nm[sel]))
    assert np.median(step) == pytest.approx(25, rel=0.4)  # 40 labels per µm


def test_cell_channels_come_from_one_geometry() -> None:
    g = make_cells((128, 128), 0.1, seed=4)
    inside = g.cell_label > 0
    assert g.density["nuclei"][~inside].max() < 1e-3  # nuclei only inside cells
    assert (
        g.density["mitochondria"][g.nucleus_mask].mean()
        < 0.2 * max(g.density["mitochondria"][inside & ~g.nucleus_mask].mean(), 1e-6) + 0.05
    )
    # phase of the same geometry (Δn·t as documented in label_free)
    opd = (
        0.03 * g.thickness_um
        + 0.01 * g.nucleus_mask * g.thickness_um
        + 0.006 * np.clip(g.density["mitochondria"], 0, 1)
    )
    phi = 2 * np.pi * opd / 0.55
    # positive phase contrast: I ≈ a − b·(φ − low-pass φ), denser objects darker
    pc = label_free(g, "phase")
    hp = phi - ndimage.gaussian_filter(phi, 15)
    assert np.corrcoef(pc.ravel(), hp.ravel())[0, 1] < -0.6
    # defocused brightfield obeys transport of intensity: I ≈ 1 − (λz/2π)·∇²φ (z > 0)
    bf = label_free(g, "brightfield", defocus_um=1.0)
    lap = ndimage.gaussian_laplace(phi, 1.5)
    assert np.corrcoef(bf.ravel(), lap.ravel())[0, 1] < -0.4
    # a field without cells is the uniform background, 1, in both label-free modes
    empty = dataclasses.replace(
        g, thickness_um=np.zeros_like(g.thickness_um), nucleus_mask=np.zeros_like(inside)
    )
    zero_mito = np.zeros_like(g.thickness_um)
    for mode in ("phase", "brightfield"):
        flat = label_free(empty, mode, mito_density=zero_mito)
        np.testing.assert_allclose(flat, 1.0, atol=1e-4)


def test_fluorescence_is_linear_in_power_and_exposure() -> None:
    sc = CellScene((64, 64), seed=1)
    a = sc.photons("mitochondria", 5.0, 10.0)
    np.testing.assert_allclose(sc.photons("mitochondria", 10.0, 10.0), 2 * a, rtol=1e-5)
    np.testing.assert_allclose(sc.photons("mitochondria", 5.0, 30.0), 3 * a, rtol=1e-5)


def test_fission_constricts_then_cuts_the_tube_at_the_site() -> None:
    sc = CellScene((128, 128), seed=3, events=True, duration_s=30.0)
    assert sc.events
    ev = sc.events[0]
    y, x = round(ev.y_px), round(ev.x_px)

    tube = sc.geom.mito_id == ev.tube_id

    def at_site(t: float) -> float:
        """Density of the event's own tube around the site (other tubes may cross it)."""
        py, px, w = fission_points(sc.geom, sc.events, t)
        d = splat_tubes(sc.shape, py[tube], px[tube], w[tube], sc.geom.mito_sigma_px)
        return float(d[y - 1 : y + 2, x - 1 : x + 2].mean())

    before = at_site(ev.onset_s - 0.5)
    mid = at_site(0.5 * (ev.onset_s + ev.fission_s))
    after = at_site(ev.fission_s + 3.0)
    assert before > 0.2
    assert mid < before
    assert after < 0.35 * before
    # nothing changes before the onset
    first = min(e.onset_s for e in sc.events)
    py, px, w = fission_points(sc.geom, sc.events, first - 1e-3)
    assert np.all(w == 1)
    np.testing.assert_array_equal(py, sc.geom.mito_y)
    np.testing.assert_array_equal(px, sc.geom.mito_x)


def test_focus_drift_creeps_at_its_rate() -> None:
    d = FocusDrift(rate_um_per_s=0.01)
    assert float(d.offset_um(100.0)) == pytest.approx(1.0)
    w = FocusDrift(wander_um=0.1, wander_tau_s=10.0, seed=2)
    vals = w.offset_um(np.linspace(0, 2000, 4001))
    assert vals.std() == pytest.approx(0.1, rel=0.5)
    np.testing.assert_allclose(w.offset_um(3.0), w.offset_um(3.0))  # deterministic


def test_render_emitters_conserves_photons_and_defocus_spreads_them() -> None:
    from smartscope.simulators.scene import render_emitters

    x, y = np.array([3050.0, 3420.0]), np.array([3010.0, 3280.0])
    ph = np.array([1000.0, 2500.0])
    img = render_emitters((64, 64), x, y, ph, background=2.0)
    assert img.sum() == pytest.approx(3500 + 2.0 * 64 * 64, rel=1e-4)
    blurred = render_emitters((64, 64), x, y, ph, z_nm=np.array([600.0, 600.0]))
    assert blurred.sum() == pytest.approx(3500, rel=1e-3)
    assert blurred.max() < 0.5 * (img - 2.0).max()
