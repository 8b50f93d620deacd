"""Calibrating a user's microscope: camera photon transfer, PSF from beads and from data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from smartscope.models.smlm.calibrate import (
    UserCalibration,
    calibrate_camera,
    calibrate_psf_beads,
    calibrate_psf_from_data,
)
from smartscope.models.smlm.localize_classical import camera_model_for, fit_psf_model
from smartscope.simulators.camera import EMCCD_REFERENCE, CameraConfig, expose
from smartscope.simulators.camera_calibration import CameraCalibration, load_camera
from smartscope.simulators.datasets import bead_zstack, camera_calibration_frames
from smartscope.simulators.optics import Optics, StampTable
from smartscope.simulators.psf_models import astigmatic_zernike

USER_CAMERA = CameraConfig(
    qe=0.8,
    read_noise_e=1.6,
    gain_adu_per_e=2.3,
    offset_adu=300.0,
    offset_spread_adu=3.0,
    read_noise_spread_rel=0.3,
    dark_e_per_s=0.0,
    map_seed=7,
)


def test_scmos_photon_transfer_recovers_the_camera(tmp_path: Path) -> None:
    maps = USER_CAMERA.maps((32, 32))
    dark, flats = camera_calibration_frames(USER_CAMERA, (32, 32), n_frames=100, maps=maps, seed=1)
    cal, est, rep = calibrate_camera(dark, flats, "scmos")
    assert cal.gain_adu_per_e == pytest.approx(2.3, rel=0.03)
    # mean dark level = offset − ½ (the ADC floors)
    assert cal.offset_adu == pytest.approx(np.median(maps.offset_adu) - 0.5, abs=0.3)
    assert cal.read_noise_e == pytest.approx(np.median(maps.read_noise_e), rel=0.1)
    assert rep["ptc_r2"] > 0.99 and est is not None
    # per-pixel offset and read-noise maps follow the sensor's
    assert np.corrcoef(est.offset_adu.ravel(), maps.offset_adu.ravel())[0, 1] > 0.95
    assert np.corrcoef(est.read_noise_e.ravel(), maps.read_noise_e.ravel())[0, 1] > 0.9
    # the file round-trips, maps included and hash-checked
    p = cal.save(tmp_path / "camera.json", est)
    back, back_maps = load_camera(p)
    assert back.gain_adu_per_e == cal.gain_adu_per_e and back_maps is not None
    np.testing.assert_allclose(back_maps.offset_adu, est.offset_adu, rtol=1e-6)
    mp = tmp_path / "camera_maps.npz"
    mp.write_bytes(mp.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ValueError, match="sha256"):
        load_camera(p)


UNIFORM = CameraConfig(
    qe=0.8,
    read_noise_e=1.3,
    gain_adu_per_e=2.3,
    offset_adu=300.0,
    offset_spread_adu=0.0,
    gain_spread_rel=0.0,
    read_noise_spread_rel=0.0,
    dark_e_per_s=0.0,
)
STRUCTURED = UNIFORM.model_copy(
    update={"offset_spread_adu": 3.0, "gain_spread_rel": 0.05, "read_noise_spread_rel": 0.3, "map_seed": 11}
)


def _raw_gain(dark: np.ndarray, flats: list[np.ndarray]) -> np.ndarray:
    """Each pixel's own photon-transfer slope, unshrunk (what the maps used to hold)."""
    d = dark.astype(np.float64)
    s = np.stack([f.astype(np.float64).mean(0) - d.mean(0) for f in flats])
    v = np.stack([f.astype(np.float64).var(0, ddof=1) - d.var(0, ddof=1) for f in flats])
    return np.asarray((s * v).sum(0) / (s * s).sum(0))


@pytest.mark.parametrize("frames", [100, 1000])
def test_a_uniform_camera_gets_no_per_pixel_maps(frames: int) -> None:
    """The spread of per-pixel estimates from a uniform camera is estimation noise: every map
    is dropped (with how many frames it would take to see a real spread), and photoelectrons
    come out of one offset and one gain, without the fixed pattern a noisy map adds."""
    shape = (32, 32)
    dark, flats = camera_calibration_frames(UNIFORM, shape, frames, (30.0, 100.0, 300.0), seed=frames)
    cal, maps, rep = calibrate_camera(dark, flats)
    assert maps is None and cal.shape is None
    assert [m.name for m in rep["maps"]] == ["offset", "read_noise", "gain"]
    assert not any(m.kept for m in rep["maps"])
    gain = rep["maps"][2]
    # what a map from these frames would have been: noise of about sqrt(2/(T-1)) per flat
    assert gain.noise == pytest.approx(100 * math.sqrt(2 / (frames - 1)), rel=0.5)
    assert gain.frames_needed > frames and gain.spread_upper < gain.noise
    assert rep["summary"].count("uniform") == 3 and "\n" not in rep["summary"]
    assert cal.source["maps"][2]["kept"] is False and cal.source["summary"] == rep["summary"]
    assert cal.gain_adu_per_e == pytest.approx(2.3, rel=0.03)
    # a flat at 60 e⁻, 40 frames averaged: its spatial spread is shot noise only (~1.2 e⁻),
    # where the raw per-pixel gain of these frames adds its own error times 60 e⁻
    rng = np.random.default_rng(5)
    test = np.stack([expose(UNIFORM, np.full(shape, 75.0, np.float32), rng) for _ in range(40)])
    e = camera_model_for(cal, maps=maps).to_electrons(test).mean(0)
    raw = ((test - dark.mean(0)) / _raw_gain(dark, flats)).mean(0)
    assert float(e.std()) < 1.3 * math.sqrt(60.0 / 40)
    if frames == 100:
        assert float(raw.std()) > 3 * float(e.std())


@pytest.mark.parametrize("frames", [100, 1000])
def test_a_structured_camera_keeps_what_the_frames_can_see(frames: int) -> None:
    """Offsets (3 ADU spread) and read noise (30 %) differ far more than 100 frames can blur:
    both kept, close to every pixel's truth. The 5 % gain spread is under the per-pixel
    noise of 100 frames (~8 %): shrunk toward the global gain, so the map is better than
    both the raw estimate and no map; 1000 frames resolve most of it."""
    shape = (32, 32)
    true = STRUCTURED.maps(shape)
    dark, flats = camera_calibration_frames(
        STRUCTURED, shape, frames, (30.0, 100.0, 300.0), maps=true, seed=frames + 1
    )
    cal, maps, rep = calibrate_camera(dark, flats)
    assert maps is not None
    offset, read, gain = rep["maps"]
    assert offset.kept and read.kept and gain.kept
    assert offset.spread == pytest.approx(3.0, rel=0.15) and offset.reliability > 0.95
    assert read.spread == pytest.approx(30.0, rel=0.2)
    assert gain.spread == pytest.approx(5.0, rel=0.35)

    def rms(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean(a**2)))

    assert rms(maps.offset_adu - (true.offset_adu - 0.5)) < 1.5 * offset.noise
    assert rms(maps.read_noise_e / true.read_noise_e - 1) < 0.12 * (100 / frames) ** 0.5
    g_err = rms(maps.gain_adu_per_e / true.gain_adu_per_e - 1)
    raw_err = rms(_raw_gain(dark, flats) / true.gain_adu_per_e - 1)
    flat_err = rms(cal.gain_adu_per_e / true.gain_adu_per_e - 1)
    assert g_err < raw_err and g_err < flat_err
    if frames == 100:
        assert gain.reliability < 0.5 and gain.frames_needed > 1000
    else:
        assert gain.reliability > 0.6 and g_err < 0.6 * flat_err
    assert "gain per pixel" in rep["summary"]


def test_emccd_photon_transfer_accounts_for_excess_noise() -> None:
    cam = EMCCD_REFERENCE.model_copy(update={"read_noise_e": 20.0})
    dark, flats = camera_calibration_frames(
        cam, (16, 16), n_frames=150, flat_photons=(5.0, 10.0, 20.0, 40.0), seed=2
    )
    cal, maps, _ = calibrate_camera(dark, flats, "emccd", em_gain=cam.em_gain)
    assert maps is None and cal.emccd
    # total ADU per photoelectron = gain × EM gain, recovered with F² = 2 taken out
    assert cal.total_gain_adu_per_e == pytest.approx(cam.gain_adu_per_e * cam.em_gain, rel=0.08)
    with pytest.raises(ValueError, match="em_gain"):
        calibrate_camera(dark, flats, "emccd")


def test_camera_calibration_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="dark"):
        calibrate_camera(np.zeros((1, 4, 4)), [np.zeros((3, 4, 4))])
    with pytest.raises(ValueError, match="flat 1"):
        calibrate_camera(np.zeros((3, 4, 4)), [np.zeros((3, 5, 4))])
    with pytest.raises(ValueError, match="saturation"):
        calibrate_camera(np.zeros((3, 4, 4)), [np.full((3, 4, 4), 65535)])
    with pytest.raises(ValueError, match="em_gain"):
        CameraCalibration(kind="emccd", offset_adu=100, gain_adu_per_e=0.02, read_noise_e=50)


def test_simulated_frames_with_a_calibration_convert_back_to_photoelectrons() -> None:
    """calibration → simulator camera → ADU → localizer camera model gives the photons back."""
    maps = USER_CAMERA.maps((32, 32))
    dark, flats = camera_calibration_frames(USER_CAMERA, (32, 32), n_frames=60, maps=maps, seed=3)
    cal, est, _ = calibrate_camera(dark, flats, "scmos")
    sim_cfg, sim_maps = cal.sim_config(), cal.sim_maps(est)
    rng = np.random.default_rng(0)
    frames = np.stack(
        [expose(sim_cfg, np.full((32, 32), 50.0, np.float32), rng, maps=sim_maps) for _ in range(50)]
    )
    e = camera_model_for(cal, maps=est).to_electrons(frames)
    assert e.mean() == pytest.approx(50.0, rel=0.01)


@pytest.fixture(scope="module")
def astig_beads() -> tuple[np.ndarray, list[float]]:
    zr = astigmatic_zernike(1.0)
    b = bead_zstack(
        z_step_nm=40.0,
        z_range_nm=(-600.0, 600.0),
        size_px=84,
        spacing_px=28,
        zernike_rad=zr,
        camera=USER_CAMERA,
        tilt_nm=0.0,
        seed=5,
    )
    return b.frames, list(zr)


def test_bead_calibration_recovers_the_pupil_psf(astig_beads: tuple[np.ndarray, list[float]]) -> None:
    frames, zr = astig_beads
    cam = camera_model_for(USER_CAMERA)
    psf, rep = calibrate_psf_beads(frames, 40.0, 100.0, cam, roi_px=17, z_range_nm=(-500.0, 500.0))
    assert psf.is_3d and psf.z_range_nm[0] >= -520 and psf.z_range_nm[1] <= 520
    assert rep.n_emitters == 9
    # the model explains every bead down to shot noise
    assert np.nanmedian(rep.reduced_chi2) < 1.6
    assert rep.gaussian_z is not None
    sx, sy = rep.gaussian_z.sigmas_nm(np.array([-400.0, 400.0]))
    assert sx[0] > sy[0] and sy[1] > sx[1]  # the elongation swaps through focus
    # noise-free pupil images of emitters at known z fit back to that z with the spline
    st = StampTable(Optics(), zr, dz_um=0.005)
    for z in (-300.0, 0.0, 250.0):
        img = st.render((17, 17), np.array([8.2]), np.array([7.9]), np.array([2e5]), np.array([z * 1e-3]))
        fit = fit_psf_model(img[None].astype(np.float64) + 5.0, np.zeros((1, 17, 17)), psf)
        assert fit.z_nm is not None and fit.z_nm[0] == pytest.approx(z, abs=30.0)
        assert fit.x_px[0] == pytest.approx(7.9, abs=0.1) and fit.y_px[0] == pytest.approx(8.2, abs=0.1)


def test_bead_calibration_refuses_a_stack_without_isolated_beads() -> None:
    with pytest.raises(ValueError, match="no isolated bright bead"):
        calibrate_psf_beads(np.full((9, 40, 40), 100, np.uint16), 50.0, 100.0)
    with pytest.raises(ValueError, match="z_step_nm"):
        calibrate_psf_beads(np.zeros((9, 40, 40)), 0.0, 100.0)


@pytest.fixture(scope="module")
def sparse_smlm() -> tuple[np.ndarray, np.ndarray]:
    """30 sparse SMLM frames of exact pupil PSFs (16 sub-pixel phases) and that PSF."""
    o = Optics()
    st = StampTable(o, phases=16)
    rng = np.random.default_rng(2)
    frames = []
    for _ in range(30):
        n = 12
        img = np.full((96, 96), 20.0, np.float32)
        st.render((96, 96), rng.uniform(8, 88, n), rng.uniform(8, 88, n), rng.uniform(1500, 4000, n), out=img)
        frames.append(expose(USER_CAMERA, img, rng))
    truth = st.render((13, 13), np.array([6.0]), np.array([6.0]), np.array([1.0]))
    return np.stack(frames), truth / truth.sum()


def test_psf_from_isolated_emitters_in_smlm_data(sparse_smlm: tuple[np.ndarray, np.ndarray]) -> None:
    """Without beads: a 2-D PSF averaged from the data's own isolated emitters matches the
    pupil PSF the data were made with (within 3 % of its peak) and explains them down to
    shot noise (reduced χ² near 1)."""
    frames, truth = sparse_smlm
    psf, rep = calibrate_psf_from_data(frames, 100.0, camera_model_for(USER_CAMERA, (96, 96)), roi_px=13)
    assert not psf.is_3d and rep.n_emitters >= 40
    assert rep.reduced_chi2[0] < 1.25
    assert np.abs(psf.values[0] - truth).max() < 0.03 * truth.max()
    # an Airy-like pupil PSF: the spline explains emitters it never saw better than a Gaussian
    assert rep.choice is not None and rep.choice.chosen == "spline" and psf.meta["model"] == "spline"
    assert rep.choice.gain_per_emitter > 5 * rep.choice.gain_se and rep.choice.heldout_emitters >= 20


def test_psf_from_data_keeps_the_gaussian_when_the_spline_does_not_beat_it(tmp_path: Path) -> None:
    """Gaussian emitters: a spline averaged from a few dozen of them only adds noise, so the
    held-out likelihood keeps the Gaussian it started from; the file holds that Gaussian and
    the classical localizer fits it as one."""
    from smartscope.models.smlm.localize_classical import (
        CameraModel,
        ClassicalConfig,
        ClassicalLocalizer,
        gaussian_sigma_nm,
        render_spots,
    )
    from smartscope.simulators.psf_models import load_psf

    cam = CameraModel(offset_adu=100.0, e_per_adu=0.5, read_noise_e=1.5)
    rng = np.random.default_rng(2)
    xs = [rng.uniform(8, 88, (2, 12)) for _ in range(30)]
    frames = np.stack(
        [render_spots((96, 96), x, y, rng.uniform(1500, 4000, 12), 1.3, 20.0, cam, rng) for x, y in xs]
    )
    psf, rep = calibrate_psf_from_data(frames, 100.0, cam, roi_px=13)
    assert rep.choice is not None and rep.choice.chosen == "gaussian"
    assert rep.choice.gain_per_emitter < 0 and rep.choice.sigma_nm == pytest.approx(130.0, rel=0.05)
    back = load_psf(psf.save(tmp_path / "psf.npz"))
    assert back.meta["model"] == "gaussian" and gaussian_sigma_nm(back) == pytest.approx(rep.choice.sigma_nm)
    loc = ClassicalLocalizer(ClassicalConfig(pixel_nm=100.0), cam, psf=back)
    assert loc.psf is None and loc.roi_px == 7 and loc.sigma_px == pytest.approx(rep.choice.sigma_nm / 100)
    # forced, the spline is still there for whoever wants it
    spline, rep2 = calibrate_psf_from_data(frames, 100.0, cam, roi_px=13, model="spline")
    assert spline.meta["model"] == "spline" and rep2.choice is not None and rep2.choice.chosen == "spline"


def test_calibrate_psf_from_data_cli(sparse_smlm: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    import tifffile
    from typer.testing import CliRunner

    from smartscope.cli import app

    frames, _ = sparse_smlm
    tifffile.imwrite(tmp_path / "stack.tif", frames)
    cam = CameraCalibration(offset_adu=USER_CAMERA.offset_adu - 0.5, gain_adu_per_e=2.3, read_noise_e=1.6)
    cam.save(tmp_path / "camera.json")
    runner = CliRunner()
    args = [
        "calibrate",
        "psf",
        "--from-data",
        str(tmp_path / "stack.tif"),
        "--camera",
        str(tmp_path / "camera.json"),
    ]
    out = runner.invoke(app, [*args, "--roi-px", "13", "--out", str(tmp_path / "psf2d.npz")])
    assert out.exit_code == 0, out.output
    assert (
        "2-D" in out.output and (tmp_path / "psf2d.png").is_file() and (tmp_path / "psf2d_fit.json").is_file()
    )
    # bad input: one clear line naming the problem
    out = runner.invoke(app, ["calibrate", "psf", "--out", str(tmp_path / "x.npz")])
    assert out.exit_code == 1 and "BEADS" in out.output
    out = runner.invoke(
        app, ["calibrate", "psf", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "x.npz")]
    )
    assert out.exit_code == 1 and "--z-step-nm" in out.output
    out = runner.invoke(
        app, ["calibrate", "camera", "--dark", str(tmp_path / "nope.tif"), "--flats", "a.tif"]
    )
    assert out.exit_code == 1 and "nope.tif does not exist" in out.output


def test_user_calibration_load_records_hashes(
    tmp_path: Path, astig_beads: tuple[np.ndarray, list[float]]
) -> None:
    frames, _ = astig_beads
    psf, _ = calibrate_psf_beads(frames, 40.0, 100.0, camera_model_for(USER_CAMERA), roi_px=17)
    p = psf.save(tmp_path / "psf.npz")
    c = CameraCalibration(offset_adu=300, gain_adu_per_e=2.3, read_noise_e=1.6).save(tmp_path / "cam.json")
    cal = UserCalibration.load(p, c)
    assert cal.psf is not None and cal.camera is not None and cal.camera_maps is None
    assert len(cal.psf_sha256) == 64 and cal.camera_file == "cam.json"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"offset_adu": 1, "gain_adu_per_e": -1, "read_noise_e": 1}))
    with pytest.raises(ValueError, match="gain_adu_per_e"):
        UserCalibration.load(None, bad)


def test_recording_statistics_set_the_training_and_validation_ranges(tmp_path: Path) -> None:
    """``train smlm --like``: a dim, high-background recording (800 photons on 60 /px, 0.4
    emitters/µm²) is measured as such; the training ranges cover it with room for what the
    classical fit misses, the validation ranges are the recording's own, and the numbers
    name the file, never its folder."""
    import tifffile

    from smartscope.models.smlm.localize_classical import CameraModel, render_spots
    from smartscope.models.smlm.recording import recording_stats
    from smartscope.simulators.psf_models import file_sha256

    cam = CameraModel(offset_adu=100.0, e_per_adu=0.5, read_noise_e=1.2)
    rng = np.random.default_rng(4)
    n = 9  # 0.4 /µm² on 48 × 48 px of 100 nm
    frames = np.stack(
        [
            render_spots((48, 48), *rng.uniform(4, 44, (2, n)), np.full(n, 800.0), 1.3, 60.0, cam, rng)
            for _ in range(16)
        ]
    )
    path = tmp_path / "dim.tif"
    tifffile.imwrite(path, frames)
    s = recording_stats(path, frames, cam, 100.0, max_frames=8)
    assert s.file == "dim.tif" and s.sha256 == file_sha256(path) and str(tmp_path) not in s.describe()
    assert s.frames_total == 16 and s.frames_sampled == 8
    assert s.photons[1] == pytest.approx(800.0, rel=0.25) and s.bg[1] == pytest.approx(60.0, rel=0.1)
    assert s.density[0] <= s.density[1] <= s.density[2] <= n / 23.04 * 1.05
    train, val = s.training_ranges(), s.validation_ranges()
    for key, truth in (("photons", 800.0), ("bg_photons", 60.0), ("density_per_um2", n / 23.04)):
        lo, hi = train[key]
        assert lo < truth < hi and lo <= val[key][0] and val[key][1] <= hi
    assert val["photons"][1] < 3000.0 and val["bg_photons"][0] > 30.0  # not a bright, clean data set
    assert s.calibration_fields()["like_photons_p50"] == s.photons[1]
    # a recording without emitters cannot set ranges: one line naming the file and the reason
    blank = np.full((4, 48, 48), 130, np.uint16)
    with pytest.raises(ValueError, match=r"--like dim.tif: only 0 localizations in 4 frames"):
        recording_stats(path, blank, cam, 100.0)
