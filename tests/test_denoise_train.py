"""Tiny training runs produce loadable bundles with metrics and provenance; data loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from smartscope.engines import Engine, load_bundle
from smartscope.engines.networks.unet import UNetConfig
from smartscope.models.cli import app
from smartscope.models.denoise.data import from_tiff_dir, simulate, split_heldout
from smartscope.models.denoise.train import DenoiseTrainConfig, train_denoise
from smartscope.models.train_common import FitConfig

TINY = {"depth": 1, "base_width": 4}


def _tiny(method: str, steps: int = 6, **kw) -> DenoiseTrainConfig:
    return DenoiseTrainConfig(
        method=method,  # type: ignore[arg-type]
        unet=UNetConfig(**TINY),
        fit=FitConfig(steps=steps, batch_size=4, val_every=3, seed=0),
        patch_px=32,
        val_patches=4,
        tile_px=64,
        overlap_px=16,
        eval_max_frames=2,
        **kw,
    )


def test_cli_n2v_on_simulator_writes_loadable_bundle(tmp_path: Path) -> None:
    out = tmp_path / "n2v"
    ck = tmp_path / "ck"
    args = [
        "denoise", "--method", "n2v", "--simulate", "lowlight", "--out", str(out),
        "--n-fields", "4", "--field-px", "64", "--steps", "6", "--val-every", "3",
        "--batch-size", "4", "--patch-px", "32", "--depth", "1", "--base-width", "4",
        "--tile-px", "64", "--overlap-px", "16", "--checkpoint-dir", str(ck), "--quiet",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    b = load_bundle(out)
    man = b.manifest
    assert man.task == "denoise" and man.provenance.method == "n2v"
    assert {"val_loss", "psnr_db", "ssim", "raw_psnr_db", "raw_ssim"} <= man.metrics.keys()
    assert not set(man.provenance.train_fovs) & set(man.provenance.heldout_fovs)
    assert (
        len(man.provenance.heldout_fovs) == 1
        and "denoise_pairs(n=1, seed=3, photons=40)" in man.provenance.data
    )
    assert man.provenance.seed == 0
    # the command is rebuilt from the parsed options, so it reproduces the run however invoked
    cmd = man.provenance.command
    assert cmd.startswith("smartscope train denoise --out ") and "--steps 6" in cmd and "--quiet" in cmd
    # the raw-frame PSNR recorded is the physics of the simulated data, not a constant
    assert 5 < man.metrics["raw_psnr_db"] < 40
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert meta["step"] == man.metrics["best_step"] and (ck / "weights.npz").is_file()
    # the bundle runs on a uint16 frame in camera units
    frame = np.random.default_rng(0).poisson(120, (96, 80)).astype(np.uint16)
    out_img = Engine.open(out, "onnxruntime").infer(frame)["denoised"]
    assert out_img.shape == (1, 96, 80) and np.isfinite(out_img).all()
    # `smartscope export` of the best checkpoint rebuilds the same engine
    from smartscope.engines.cli import app as engines_app

    res = CliRunner().invoke(engines_app, ["export", str(ck), "--out", str(tmp_path / "re")])
    assert res.exit_code == 0, res.output
    again = Engine.open(tmp_path / "re", "onnxruntime").infer(frame)["denoised"]
    np.testing.assert_allclose(again, out_img, rtol=1e-6, atol=1e-4)


def test_care_learns_on_simulated_pairs(tmp_path: Path) -> None:
    """A short CARE run beats the raw frames on held-out fields (PSNR vs ground truth)."""
    data = simulate("fixed20", n_fields=6, field_px=64, seed=1)
    cfg = DenoiseTrainConfig(
        method="care",
        unet=UNetConfig(depth=1, base_width=8),
        fit=FitConfig(steps=60, batch_size=8, val_every=20, seed=0, lr=3e-3),
        patch_px=32,
        val_patches=8,
        tile_px=64,
        overlap_px=16,
        eval_max_frames=2,
    )
    path, metrics = train_denoise(
        data, cfg, tmp_path / "care.zip", command="test", name="care-test", quiet=True
    )
    assert path.suffix == ".zip"
    man = load_bundle(path).manifest
    assert man.metrics == pytest.approx(metrics)
    assert metrics["psnr_db"] > metrics["raw_psnr_db"] + 2.0
    assert metrics["ssim"] > metrics["raw_ssim"]


def test_care_requires_targets() -> None:
    data = simulate("lowlight", n_fields=3, field_px=32, seed=0)
    data.clean = None
    with pytest.raises(ValueError, match="CARE needs paired"):
        train_denoise(data, _tiny("care"), "/nonexistent", command="x", name="x")


def test_tiff_folders_and_single_fov_spatial_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n2v_dir = tmp_path / "n2v"
    n2v_dir.mkdir()
    tifffile.imwrite(
        n2v_dir / "rec.tif", rng.poisson(50, (3, 64, 160)).astype(np.uint16), photometric="minisblack"
    )
    d = from_tiff_dir(n2v_dir, "n2v")
    assert d.names == ["rec.tif"] and d.noisy[0].shape == (3, 64, 160) and d.clean is None
    tr, va = split_heldout(d, 0.2, seed=0, min_px=32)
    assert tr.noisy[0].shape == (3, 64, 128) and va.noisy[0].shape == (3, 64, 32)
    assert "x 128:160" in va.names[0]
    path, metrics = train_denoise(d, _tiny("n2v"), tmp_path / "b", command="x", name="n2v-tiff", quiet=True)
    assert "psnr_db" not in metrics and metrics["val_loss"] > 0  # no ground truth for user data
    assert load_bundle(path).manifest.provenance.heldout_fovs == ["rec.tif[x 128:160]"]

    care = tmp_path / "care"
    (care / "low").mkdir(parents=True)
    (care / "high").mkdir()
    for i in range(2):
        tifffile.imwrite(
            care / "low" / f"f{i}.tif",
            rng.poisson(5, (2, 40, 40)).astype(np.uint16),
            photometric="minisblack",
        )
        tifffile.imwrite(care / "high" / f"f{i}.tif", rng.poisson(500, (40, 40)).astype(np.uint16))
    c = from_tiff_dir(care, "care")
    assert c.clean is not None and c.clean[0].shape == (2, 40, 40)
    (care / "high" / "f1.tif").unlink()
    with pytest.raises(ValueError, match=r"f1\.tif: no matching high-SNR file"):
        from_tiff_dir(care, "care")
    with pytest.raises(ValueError, match="CARE needs low/ with TIFFs"):
        from_tiff_dir(n2v_dir, "care")


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["denoise", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "exactly one of --data" in r.output
    r = CliRunner().invoke(app, ["denoise", "--simulate", "mars", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "unknown scenario 'mars'" in r.output
