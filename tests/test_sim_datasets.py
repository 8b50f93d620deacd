"""Data sets from the simulator: units, seeding, and files on disk."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import typer
from typer.testing import CliRunner

from smartscope.errors import FormattedErrors
from smartscope.simulators.cli import simulate
from smartscope.simulators.datasets import denoise_pairs, smlm_frames, stain_pairs


def test_denoise_pairs_are_photoelectrons_with_poisson_statistics() -> None:
    noisy, clean = denoise_pairs(4, shape=(96, 96), seed=3, photons=30.0)
    assert noisy.shape == clean.shape == (4, 96, 96)
    assert noisy.dtype == clean.dtype == np.float32
    # unbiased: the noisy mean equals the clean mean (e⁻)
    assert noisy.mean() == pytest.approx(clean.mean(), rel=0.03)
    # var(noisy − clean) ≈ shot (= clean) + read noise² + quantisation + the sCMOS
    # fixed-pattern offset (σ 2 ADU = 1 e⁻ at 2 ADU/e⁻), all in e⁻²
    resid = (noisy - clean).ravel()
    expected_var = clean.mean() + 0.94**2 + 1 / (12 * 2.0**2) + (2.0 / 2.0) ** 2
    assert resid.var() == pytest.approx(expected_var, rel=0.1)
    # peak brightness follows `photons` (QE 0.82)
    assert np.percentile(clean, 99.9) == pytest.approx(0.82 * 30.0 * 1.02, rel=0.25)


def test_denoise_pairs_are_seeded_and_fields_differ() -> None:
    a_noisy, a_clean = denoise_pairs(3, shape=(64, 64), seed=7)
    b_noisy, b_clean = denoise_pairs(3, shape=(64, 64), seed=7)
    np.testing.assert_array_equal(a_noisy, b_noisy)
    np.testing.assert_array_equal(a_clean, b_clean)
    c_noisy, _ = denoise_pairs(3, shape=(64, 64), seed=8)
    assert not np.array_equal(a_noisy, c_noisy)
    assert not np.allclose(a_clean[0], a_clean[1])


def test_stain_pairs_align_label_free_and_fluorescence() -> None:
    lf, fl = stain_pairs(2, shape=(96, 96), seed=1)
    assert lf.shape == (2, 96, 96) and fl.shape == (2, 3, 96, 96)
    assert np.isfinite(lf).all() and (fl >= 0).all()


def test_smlm_frames_ground_truth_is_per_frame() -> None:
    frames, gt, _scene = smlm_frames(6, shape=(48, 48), seed=2)
    assert frames.shape == (6, 48, 48) and frames.dtype == np.uint16
    assert set(np.unique(gt["frame"])) <= set(range(6))
    assert (gt["photons"] > 0).all()
    assert (gt["x_nm"] >= 0).all() and (gt["x_nm"] <= 48 * 100).all()


def _run_cli(args: list[str]) -> None:
    app = typer.Typer()
    app.command()(simulate)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def test_simulate_writes_reproducible_ome_tiff_and_ground_truth(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        _run_cli(["smlm", "--frames", "5", "--out", str(out), "--size", "64", "--seed", "4"])
    raw = tifffile.imread(a / "raw.ome.tif")
    assert raw.shape == (5, 64, 64) and raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, tifffile.imread(b / "raw.ome.tif"))
    with tifffile.TiffFile(a / "raw.ome.tif") as tf:
        assert tf.is_ome and "PhysicalSizeX" in (tf.ome_metadata or "")
    rows = list(csv.DictReader((a / "localizations.csv").read_text().splitlines()))
    assert rows and {"frame", "x_nm", "y_nm", "photons"} <= set(rows[0])
    info = json.loads((a / "ground_truth.json").read_text())
    assert info["scenario"] == "smlm" and len(info["per_frame"]) == 5
    assert (a / "clean.tif").exists() and (a / "dose.csv").exists()


def test_simulate_cells_and_events(tmp_path: Path) -> None:
    _run_cli(["cells", "--frames", "2", "--out", str(tmp_path / "c"), "--size", "64"])
    raw = tifffile.imread(tmp_path / "c" / "raw.ome.tif")
    assert raw.shape == (2, 4, 64, 64)  # nuclei, mitochondria, membrane, label-free
    _run_cli(["events", "--frames", "3", "--out", str(tmp_path / "e"), "--size", "96"])
    ev = json.loads((tmp_path / "e" / "events.json").read_text())["events"]
    assert ev and all(e["onset_s"] < e["fission_s"] for e in ev)


def test_simulate_refuses_unknown_scenario(tmp_path: Path) -> None:
    app = typer.Typer(cls=FormattedErrors)  # as smartscope's app: a user's mistake is one line
    app.command("simulate")(simulate)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["simulate", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: scenario 'nope' is not one of"), result.output
