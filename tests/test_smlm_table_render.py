"""Localization tables (CSV / ThunderSTORM round trips), rendering and drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smartscope.models.smlm.render import (
    correct_drift,
    estimate_drift,
    render_gaussian,
    render_histogram,
)
from smartscope.models.smlm.table import COLUMNS, THUNDERSTORM_HEADER, LocTable


def _table(n: int, seed: int = 0) -> LocTable:
    rng = np.random.default_rng(seed)
    return LocTable.from_columns(
        frame=rng.integers(0, 50, n),
        x_nm=rng.uniform(0, 5000, n),
        y_nm=rng.uniform(0, 4000, n),
        photons=rng.uniform(100, 5000, n),
        bg=rng.uniform(1, 50, n),
        sigma_x_nm=rng.uniform(5, 30, n),
        sigma_y_nm=rng.uniform(5, 30, n),
        prob=rng.uniform(0.5, 1, n),
        psf_sigma_nm=rng.uniform(100, 160, n),
    )


def test_native_csv_round_trip_is_exact(tmp_path: Path) -> None:
    t = _table(200)
    back = LocTable.read_csv(t.write_csv(tmp_path / "locs.csv"))
    for c in COLUMNS:
        np.testing.assert_array_equal(back.column(c), t.column(c))


def test_thunderstorm_round_trip(tmp_path: Path) -> None:
    t = _table(100, seed=1)
    p = t.write_thunderstorm_csv(tmp_path / "ts.csv")
    header = p.read_text().splitlines()[0]
    assert [h.strip('"') for h in header.split(",")] == list(THUNDERSTORM_HEADER)
    rows = p.read_text().splitlines()[1:]
    assert rows[0].split(",")[0] == "1" and int(rows[0].split(",")[1]) == t.frame[0] + 1  # 1-based
    back = LocTable.read_thunderstorm_csv(p)
    np.testing.assert_array_equal(back.frame, t.frame)
    for c in ("x_nm", "y_nm", "photons", "bg", "psf_sigma_nm"):
        np.testing.assert_allclose(back.column(c), t.column(c), atol=1e-6)
    unc = np.sqrt(0.5 * (t.sigma_x_nm**2 + t.sigma_y_nm**2))
    np.testing.assert_allclose(back.sigma_x_nm, unc, atol=1e-6)


def test_bad_files_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        LocTable.read_csv(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text('"id","frame","x [nm]"\n1,1,5\n')
    with pytest.raises(ValueError, match=r"y \[nm\]"):
        LocTable.read_thunderstorm_csv(bad)
    with pytest.raises(ValueError, match="x_nm"):
        LocTable.from_columns(
            frame=[0, 1],
            x_nm=[1.0],
            y_nm=[1, 2],
            photons=[1, 2],
            bg=[1, 2],
            sigma_x_nm=[1, 2],
            sigma_y_nm=[1, 2],
            prob=[1, 1],
        )


def test_rows_concat_select() -> None:
    t = _table(10)
    rows = t.to_rows()
    assert len(rows) == 10 and set(rows[0]) == set(COLUMNS)
    back = LocTable.from_rows(rows)
    np.testing.assert_array_equal(back.x_nm, t.x_nm)
    both = LocTable.concat([t, t.select(t.frame < 25)])
    assert len(both) == 10 + int((t.frame < 25).sum())


def test_renderings_conserve_counts() -> None:
    t = _table(3000, seed=2)
    hist = render_histogram(t, pixel_nm=20.0, extent_nm=(4000.0, 5000.0))
    assert hist.shape == (200, 250)
    assert hist.sum() == 3000
    # keep Gaussian kernels clear of the border: centres at least 4 sigma inside
    inner = t.select((t.x_nm > 200) & (t.x_nm < 4800) & (t.y_nm > 200) & (t.y_nm < 3800))
    g = render_gaussian(inner, pixel_nm=10.0, extent_nm=(4000.0, 5000.0))
    assert float(g.sum(dtype=np.float64)) == pytest.approx(len(inner), rel=1e-5)
    g2 = render_gaussian(inner, pixel_nm=10.0, extent_nm=(4000.0, 5000.0), sigma_nm=25.0)
    assert float(g2.sum(dtype=np.float64)) == pytest.approx(len(inner), rel=1e-5)
    # the Gaussian render's centroid equals the localizations' centroid
    _yy, xx = np.mgrid[: g2.shape[0], : g2.shape[1]]
    cx = float(((xx + 0.5) * g2).sum() / g2.sum()) * 10.0
    assert cx == pytest.approx(float(inner.x_nm.mean()), abs=0.5)


def test_drift_recovered_from_partial_renders() -> None:
    """Blinking emitters on fixed sites with a known linear + sinusoidal drift."""
    rng = np.random.default_rng(5)
    n_frames, sites = 2000, rng.uniform(500, 9500, (300, 2))
    frames = np.arange(n_frames)
    true_dx = 0.08 * frames  # 160 nm over the run
    true_dy = 40.0 * np.sin(frames / n_frames * np.pi)
    per_frame = 8
    f = np.repeat(frames, per_frame)
    s = rng.integers(0, len(sites), f.size)
    x = sites[s, 0] + true_dx[f] + rng.normal(0, 10, f.size)
    y = sites[s, 1] + true_dy[f] + rng.normal(0, 10, f.size)
    n = f.size
    ones = np.ones(n)
    t = LocTable.from_columns(
        frame=f,
        x_nm=x,
        y_nm=y,
        photons=1e3 * ones,
        bg=10 * ones,
        sigma_x_nm=10 * ones,
        sigma_y_nm=10 * ones,
        prob=ones,
    )
    d = estimate_drift(t, n_segments=10, pixel_nm=20.0, extent_nm=(10_000.0, 10_000.0))
    # drift is relative to the first segment's centre
    ref = d.segment_frames[0]
    exp_dx = np.interp(d.segment_frames, frames, true_dx) - np.interp(ref, frames, true_dx)
    exp_dy = np.interp(d.segment_frames, frames, true_dy) - np.interp(ref, frames, true_dy)
    assert np.max(np.abs(d.segment_dx_nm - exp_dx)) < 5.0
    assert np.max(np.abs(d.segment_dy_nm - exp_dy)) < 5.0
    corrected = correct_drift(t, d)
    resid = corrected.x_nm - sites[s, 0]
    assert np.std(resid) < 15.0 < np.std(x - sites[s, 0])
    with pytest.raises(ValueError, match="n_segments"):
        estimate_drift(t, n_segments=1)
