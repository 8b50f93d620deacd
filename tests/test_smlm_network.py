"""DECODE-class network: loss, decoding, simulator data, a few training steps to a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from smartscope.engines.bundle import load_bundle
from smartscope.engines.networks.smlm import SMLMNet, SMLMNetConfig
from smartscope.engines.networks.smlm_outputs import OUTPUT_CHANNELS
from smartscope.models.smlm.decode import decode_outputs
from smartscope.models.smlm.network import DecodeLoss
from smartscope.models.smlm.train import SimSpec, simulate_windows, train_smlm


def _maps(h: int, w: int, emitters: list[tuple[float, float, float]]) -> np.ndarray:
    """Ideal output maps for emitters (x_px, y_px, photons)."""
    out = np.zeros((8, h, w), np.float32)
    out[4] = 10.0
    out[5:7] = 0.1
    out[7] = 50.0
    for x, y, n in emitters:
        c, r = round(x), round(y)
        out[0, r, c] = 0.97
        out[1, r, c] = x - c
        out[2, r, c] = y - r
        out[3, r, c] = n
    return out


def test_decode_outputs_positions_units_and_threshold() -> None:
    maps = _maps(32, 32, [(5.3, 7.8, 1000.0), (20.0, 20.45, 500.0)])
    # an emitter split over two pixels counts once (3x3 summed probability)
    maps[0, 12, 12] = maps[0, 12, 13] = 0.45
    t = decode_outputs(maps, frame_index=3, pixel_nm=100.0)
    assert len(t) == 3 and set(t.frame.tolist()) == {3}
    order = np.argsort(t.photons)
    got = t.xy_nm()[order]
    np.testing.assert_allclose(got[1], [(20.0 + 0.5) * 100, (20.45 + 0.5) * 100], atol=1e-3)
    np.testing.assert_allclose(got[2], [(5.3 + 0.5) * 100, (7.8 + 0.5) * 100], atol=1e-3)
    assert np.allclose(t.sigma_x_nm, 10.0) and np.all(t.prob <= 1.0)
    assert len(decode_outputs(maps, 0, 100.0, settings=None)) == 3
    with pytest.raises(ValueError, match="8, H, W"):
        decode_outputs(maps[:5], 0, 100.0)


def test_loss_prefers_the_truth() -> None:
    """The DECODE loss is lower for maps that put emitters where they are, with the right
    count, and lower still when the reported uncertainty matches the actual error."""
    loss = DecodeLoss(photon_scale_e=1000.0, input_scale_e=100.0)
    em = [(5.3, 7.8, 1000.0), (20.2, 11.6, 500.0)]
    xy = torch.tensor([[[5.3, 7.8], [20.2, 11.6]]])
    ph = torch.tensor([[1000.0, 500.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    bg = torch.full((1, 32, 32), 10.0)
    good = torch.from_numpy(_maps(32, 32, em))[None]
    shifted = torch.from_numpy(_maps(32, 32, [(x + 0.6, y, n) for x, y, n in em]))[None]
    missing = torch.from_numpy(_maps(32, 32, em[:1]))[None]
    lg = loss(good, xy, ph, mask, bg)["loss"]
    assert lg < loss(shifted, xy, ph, mask, bg)["loss"]
    assert lg < loss(missing, xy, ph, mask, bg)["loss"]
    bad_bg = good.clone()
    bad_bg[:, 4] = 40.0
    assert loss(good, xy, ph, mask, bg)["bg"] < loss(bad_bg, xy, ph, mask, bg)["bg"]


def test_network_shapes_and_ranges() -> None:
    net = SMLMNet(SMLMNetConfig(base_width=4, depth=2)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 48))
    assert out.shape == (2, len(OUTPUT_CHANNELS), 32, 48)
    assert float(out[:, 0].min()) >= 0 and float(out[:, 0].max()) <= 1
    assert float(out[:, 1:3].abs().max()) <= 1
    assert float(out[:, 3:].min()) > 0


def test_simulated_windows_match_their_ground_truth() -> None:
    spec = SimSpec(
        tile_px=32,
        density_per_um2=(0.5, 0.5),
        photons=(5000, 5000),
        bg_photons=(10, 10),
        n_aberrations=1,
        emccd_fraction=0.0,
        z_nm=(0, 0),
    )
    x, gts, bgs, emccd = simulate_windows(6, spec, seed=3)
    assert x.shape == (6, 3, 32, 32) and bgs.shape == (6, 32, 32) and not any(emccd)
    n_gt = sum(len(g["x_px"]) for g in gts)
    assert n_gt > 0
    # photons land where the ground truth says
    for i, g in enumerate(gts):
        for xp, yp, n in zip(g["x_px"], g["y_px"], g["photons"], strict=True):
            r, c = round(yp), round(xp)
            if n > 2000 and 2 <= r < 30 and 2 <= c < 30:
                assert x[i, 1, r - 1 : r + 2, c - 1 : c + 2].sum() > 9 * bgs[i].mean() + 0.3 * n


def test_few_training_steps_write_a_verified_bundle(tmp_path: Path) -> None:
    spec = SimSpec(tile_px=24)
    path = train_smlm(
        tmp_path / "smlm-tiny",
        max_steps=3,
        batch=2,
        seed=1,
        eval_windows=4,
        net_config=SMLMNetConfig(base_width=4, depth=2),
        spec=spec,
        threads=1,
        command="pytest",
        log_every=1,
    )
    b = load_bundle(path)
    assert b.manifest.task == "smlm" and b.manifest.outputs[0].channels == list(OUTPUT_CHANNELS)
    assert b.manifest.provenance.command == "pytest"
    assert b.manifest.metrics["train_steps"] == 3
    assert (Path(path) / "train_log.json").is_file()


def test_simulated_background_matches_its_target() -> None:
    spec = SimSpec(
        tile_px=32,
        density_per_um2=(0.03, 0.03),
        photons=(300, 300),
        bg_photons=(40, 40),
        n_aberrations=1,
        emccd_fraction=1.0,
    )
    x, _, bgs, emccd = simulate_windows(4, spec, seed=4)
    assert all(emccd)
    # photoelectrons from an EMCCD frame (gain divided out) average to the background target
    assert float(np.median(x)) == pytest.approx(float(bgs.mean()), rel=0.1)


def test_scmos_per_pixel_calibration_removes_fixed_pattern() -> None:
    from smartscope.models.smlm.localize_classical import camera_model_for
    from smartscope.simulators.camera import SCMOS_REFERENCE, expose

    rng = np.random.default_rng(0)
    frames = np.stack([expose(SCMOS_REFERENCE, np.full((32, 32), 200.0), rng) for _ in range(40)])
    nominal = camera_model_for(SCMOS_REFERENCE).to_electrons(frames).mean(0)
    mapped = camera_model_for(SCMOS_REFERENCE, (32, 32)).to_electrons(frames).mean(0)
    expected = SCMOS_REFERENCE.qe * 200.0
    assert float(mapped.mean()) == pytest.approx(expected, rel=0.01)
    # shot noise of a 40-frame mean is sqrt(164/40) ≈ 2 e⁻; the offset/gain maps add ~1.5 e⁻
    assert float(mapped.std()) < 0.85 * float(nominal.std())
    with pytest.raises(TypeError, match="CameraConfig"):
        camera_model_for("scmos")


def test_3d_network_outputs_z_and_its_loss_needs_it() -> None:
    cfg = SMLMNetConfig(base_width=4, depth=2, z_range_nm=(-500.0, 500.0))
    net = SMLMNet(cfg).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 16, 16))
    assert out.shape[1] == len(cfg.output_channels) == 10
    assert float(out[:, 8].min()) >= -550.1 and float(out[:, 8].max()) <= 550.1  # z, a little past the range
    assert float(out[:, 9].min()) > 0  # its uncertainty
    loss = DecodeLoss(cfg.photon_scale_e, cfg.input_scale_e)
    xy = torch.tensor([[[5.0, 6.0]]])
    args = (xy, torch.tensor([[1000.0]]), torch.ones(1, 1, dtype=torch.bool), torch.full((1, 16, 16), 10.0))
    with pytest.raises(ValueError, match="gt_z_nm"):
        loss(out, *args)
    # the true z is more likely than a wrong one
    maps = torch.from_numpy(_maps(16, 16, [(5.0, 6.0, 1000.0)]))
    maps3 = torch.cat([maps, torch.full((1, 16, 16), 200.0), torch.full((1, 16, 16), 30.0)])[None]
    right = loss(maps3, *args, gt_z_nm=torch.tensor([[200.0]]))["loc"]
    wrong = loss(maps3, *args, gt_z_nm=torch.tensor([[350.0]]))["loc"]
    assert right < wrong
    t = decode_outputs(maps3[0].numpy(), 0, 100.0)
    assert t.has_z and t.z_nm[0] == pytest.approx(200.0) and t.sigma_z_nm[0] == pytest.approx(30.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_cuda(tmp_path: Path) -> None:
    path = train_smlm(
        tmp_path / "smlm-cuda",
        max_steps=3,
        batch=2,
        eval_windows=4,
        net_config=SMLMNetConfig(base_width=4, depth=2),
        spec=SimSpec(tile_px=24),
        command="pytest",
        device="cuda",
    )
    assert load_bundle(path).manifest.metrics["train_steps"] == 3.0


def test_decode_can_average_the_pixels_that_see_one_emitter() -> None:
    from smartscope.models.smlm.decode import DecodeSettings

    maps = _maps(16, 16, [(5.4, 6.0, 1000.0)])  # peak pixel (5, 6) says x = 5.4
    maps[0, 6, 6], maps[1, 6, 6], maps[2, 6, 6] = 0.4, -0.5, 0.0  # its neighbour says x = 5.5
    maps[0, 7, 6], maps[1, 7, 6], maps[2, 7, 6] = 0.3, 0.9, 0.5  # another emitter's pixel: far off
    peak = decode_outputs(maps, 0, 100.0, DecodeSettings(average_3x3=False))
    avg = decode_outputs(maps, 0, 100.0)
    assert len(peak) == len(avg) == 1
    assert peak.x_nm[0] == pytest.approx(590.0)
    w1, w2 = 0.97, 0.4  # equal sigmas: probability weights
    assert avg.x_nm[0] == pytest.approx(((5.4 * w1 + 5.5 * w2) / (w1 + w2) + 0.5) * 100)
    assert avg.y_nm[0] == pytest.approx(650.0)


def test_training_can_continue_from_a_bundle(tmp_path: Path) -> None:
    spec = SimSpec(tile_px=24)
    kw = {"batch": 2, "eval_windows": 4, "spec": spec, "threads": 1, "command": "pytest", "log_every": 0}
    first = train_smlm(tmp_path / "a", max_steps=2, net_config=SMLMNetConfig(base_width=4), **kw)  # type: ignore[arg-type]
    second = train_smlm(
        tmp_path / "b",
        max_steps=1,
        net_config=SMLMNetConfig(base_width=4),
        init_bundle=first,
        **kw,  # type: ignore[arg-type]
    )
    notes = load_bundle(second).manifest.provenance.notes
    assert (
        f"fine-tuned from parent bundle {first.name}" in notes
        and load_bundle(first).manifest.architecture.weights_sha256 in notes
    )  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="init_bundle"):
        train_smlm(
            tmp_path / "c", max_steps=1, net_config=SMLMNetConfig(base_width=6), init_bundle=first, **kw
        )  # type: ignore[arg-type]


@pytest.mark.slow  # trains the shipped bundle's full width (a few steps)
def test_calibrated_training_fine_tunes_the_shipped_bundle_like_the_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train smlm --psf --camera`` starts from the shipped 2-D bundle (its width, its
    weights named in the provenance); ``--like`` takes the training ranges from the user's
    recording, whose name, sha256 and statistics the bundle records, never its folder."""
    import tifffile
    from typer.testing import CliRunner

    from smartscope.cli import app
    from smartscope.models import shipped_bundle
    from smartscope.models.smlm.calibrate import gaussian_psf
    from smartscope.models.smlm.localize_classical import CameraModel, render_spots
    from smartscope.simulators.camera_calibration import CameraCalibration
    from smartscope.simulators.psf_models import file_sha256

    monkeypatch.chdir(tmp_path)
    gaussian_psf(130.0, 100.0, 15).save("psf.npz")
    CameraCalibration(offset_adu=100.0, gain_adu_per_e=2.0, read_noise_e=1.2).save("cam.json")
    cam = CameraModel(offset_adu=100.0, e_per_adu=0.5, read_noise_e=1.2)
    rng = np.random.default_rng(3)
    frames = [
        render_spots((48, 48), *rng.uniform(4, 44, (2, 8)), np.full(8, 1500.0), 1.3, 25.0, cam, rng)
        for _ in range(12)
    ]
    tifffile.imwrite("rec.tif", np.stack(frames))
    runner = CliRunner()
    base = ["train", "smlm", "--psf", "psf.npz", "--camera", "cam.json"]
    tiny = ["--steps", "2", "--tile", "24", "--batch", "2", "--eval-windows", "4", "--threads", "1"]
    out = runner.invoke(app, [*base, "--like", "rec.tif", *tiny, "--out", "tuned"])
    assert out.exit_code == 0, out.output
    assert "fine-tuning smlm-decode-2d-user" in out.output
    man = load_bundle(tmp_path / "tuned").manifest
    parent = load_bundle(shipped_bundle("smlm-decode-2d-user")).manifest
    assert man.architecture is not None and parent.architecture is not None
    assert man.architecture.params == parent.architecture.params
    notes = man.provenance.notes
    assert "fine-tuned from parent bundle smlm-decode-2d-user" in notes
    assert parent.architecture.weights_sha256 in notes
    assert f"like recording rec.tif sha256={file_sha256(tmp_path / 'rec.tif')}" in man.provenance.data
    # the threshold was chosen on windows rendered in the recording's own ranges, not the training's
    trained_on = man.provenance.data.split("on the fly: ")[1].split("; ranges from")[0]
    chosen_on = man.provenance.data.split("threshold chosen on ")[1]
    assert "photons=(" in chosen_on and "photons=(" in trained_on and chosen_on != trained_on
    cal = man.calibration
    # 8 emitters of 1500 photons per 23 µm² frame on 25 photons/px
    assert cal["like_photons_p50"] == pytest.approx(1500.0, rel=0.25)
    assert cal["like_bg_p50"] == pytest.approx(25.0, rel=0.2)
    assert 0.2 < cal["like_density_per_um2_p50"] <= 8 / 23.04 * 1.05
    assert str(tmp_path) not in (tmp_path / "tuned" / "engine.json").read_text()
    # the parent's shape is the default; another one needs --from-scratch
    out = runner.invoke(app, [*base, "--width", "8", *tiny, "--out", "x"])
    assert out.exit_code == 1 and "--width 8" in out.output and "--from-scratch" in out.output
    out = runner.invoke(app, ["train", "smlm", "--psf", "psf.npz", "--like", "rec.tif", *tiny, "--out", "y"])
    assert out.exit_code == 1 and "--like: needs --camera" in out.output
