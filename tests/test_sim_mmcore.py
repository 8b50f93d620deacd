"""The virtual microscope through Micro-Manager: UniMMCore + virtual_microscope.cfg.

Properties set through the core must change the next frames as physics says.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pymmcore_plus.experimental.unicore import UniMMCore

from smartscope.simulators import get_virtual_microscope, virtual_config_path


@pytest.fixture
def vcore() -> Iterator[UniMMCore]:
    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))
    core.setProperty("Camera", "Pacing", "AsFastAsPossible")
    core.setProperty("Camera", "SensorSize", "128")
    yield core
    if core.isSequenceRunning():
        core.stopSequenceAcquisition()
    core.unloadAllDevices()
    del core
    gc.collect()


def acquire(core: UniMMCore, n: int) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Hardware-style sequence acquisition of n frames from the core's buffer."""
    core.startSequenceAcquisition(n, 0, True)
    out: list[tuple[np.ndarray, dict[str, Any]]] = []
    deadline = time.monotonic() + 60
    while len(out) < n and time.monotonic() < deadline:
        if core.getRemainingImageCount():
            img, md = core.popNextImageAndMD()
            out.append((np.array(img), dict(md)))
        else:
            time.sleep(0.0005)
    assert len(out) == n
    return out


def signal_e(core: UniMMCore, frames: list[tuple[np.ndarray, dict[str, Any]]]) -> float:
    """Mean photoelectrons per pixel above offset, from the camera's own calibration."""
    vm = get_virtual_microscope(core)
    cam = vm.camera
    mean_adu = float(np.mean([f.astype(np.float64).mean() for f, _ in frames]))
    g = cam.gain_adu_per_e * (cam.em_gain if cam.kind == "emccd" else 1.0)
    return (mean_adu + 0.5 - cam.offset_adu) / g


def test_cfg_loads_the_whole_virtual_microscope(vcore: UniMMCore) -> None:
    devs = set(vcore.getLoadedDevices())
    assert {"Camera", "Laser405", "Laser488", "Laser561", "Laser640", "Z", "Mirror"} <= devs
    assert vcore.getCameraDevice() == "Camera"
    assert vcore.getFocusDevice() == "Z"
    vcore.snapImage()
    img = vcore.getImage()
    assert img.shape == (128, 128) and img.dtype == np.uint16
    assert get_virtual_microscope(vcore).scenario == "cells"


def test_sequence_frames_carry_their_ground_truth(vcore: UniMMCore) -> None:
    vcore.setProperty("Camera", "Scenario", "smlm")
    frames = acquire(vcore, 12)
    vm = get_virtual_microscope(vcore)
    nums = [int(md["SimFrame"]) for _, md in frames]
    assert nums == list(range(12))
    cam = vm.camera
    for img, md in frames[5:]:
        truth = vm.truth(int(md["SimFrame"]))
        assert truth.emitters is not None and truth.clean is not None
        # the frame is a noisy realisation of that frame's expected photons
        measured = (img.astype(np.float64).mean() + 0.5 - cam.offset_adu) / cam.gain_adu_per_e
        expected = cam.qe * truth.clean.mean() + cam.dark_e_per_s * truth.exposure_ms * 1e-3
        assert measured == pytest.approx(expected, rel=0.02)


def test_laser_power_and_exposure_scale_the_photons_linearly(vcore: UniMMCore) -> None:
    vcore.setProperty("Laser561", "Power", 5.0)
    s1 = signal_e(vcore, acquire(vcore, 3))
    vcore.setProperty("Laser561", "Power", 10.0)
    s2 = signal_e(vcore, acquire(vcore, 3))
    vcore.setExposure(20.0)
    s3 = signal_e(vcore, acquire(vcore, 3))
    assert s2 / s1 == pytest.approx(2.0, rel=0.03)
    assert s3 / s2 == pytest.approx(2.0, rel=0.03)


def test_camera_saturates_at_full_well(vcore: UniMMCore) -> None:
    vcore.setProperty("Laser561", "Power", 200.0)
    vcore.setExposure(2000.0)
    img, _ = acquire(vcore, 1)[0]
    cam = get_virtual_microscope(vcore).camera
    maps = cam.maps(img.shape)
    # per pixel: full well × that pixel's gain + its offset (+ a few e⁻ of read noise)
    ceiling = np.minimum(cam.full_well_e * maps.gain_adu_per_e + maps.offset_adu, cam.max_adu)
    assert np.all(img <= ceiling + 10)
    assert (img > ceiling - 10).mean() > 0.05  # bright structures pile up at full well


def _bead_peaks(core: UniMMCore, n: int = 8) -> tuple[float, float]:
    """Mean background-subtracted bead peak (ADU) and the frame's mean signal (e⁻/px)."""
    frames = acquire(core, n)
    vm = get_virtual_microscope(core)
    assert vm.smlm is not None
    em = vm.smlm.emitters
    img = np.mean([f.astype(np.float64) for f, _ in frames], axis=0)
    peaks = []
    for x, y in zip(em.x_nm / 100 - 0.5, em.y_nm / 100 - 0.5, strict=True):
        cy, cx = round(y), round(x)
        if 14 <= cy < img.shape[0] - 14 and 14 <= cx < img.shape[1] - 14:
            patch = img[cy - 14 : cy + 15, cx - 14 : cx + 15]
            border = np.concatenate([patch[0], patch[-1], patch[1:-1, 0], patch[1:-1, -1]])
            peaks.append(patch[12:17, 12:17].max() - border.mean())
    return float(np.mean(peaks)), signal_e(core, frames)


def test_z_defocuses_beads_and_keeps_their_photons(vcore: UniMMCore) -> None:
    vcore.setProperty("Camera", "Scenario", "beads")
    p0, t0 = _bead_peaks(vcore)
    vcore.setPosition("Z", 0.4)
    p_up, t_up = _bead_peaks(vcore)
    vcore.setPosition("Z", -0.4)
    p_dn, t_dn = _bead_peaks(vcore)
    assert p_up < 0.6 * p0 and p_dn < 0.6 * p0
    assert p_up == pytest.approx(p_dn, rel=0.1)  # unaberrated: symmetric through focus
    # defocus spreads the light but keeps it: same photoelectrons per frame
    assert t_up == pytest.approx(t0, rel=0.02) and t_dn == pytest.approx(t0, rel=0.02)


def test_mirror_aberration_lowers_bead_peaks_by_the_strehl_ratio(vcore: UniMMCore) -> None:
    vcore.setProperty("Camera", "Scenario", "beads")
    p0, _ = _bead_peaks(vcore)
    a = 0.4
    vcore.setProperty("Mirror", "Z11", a)  # primary spherical, rad RMS
    assert get_virtual_microscope(vcore).zernike_rad[10] == pytest.approx(a)
    p1, _ = _bead_peaks(vcore)
    # Maréchal: S ≈ exp(−σ²) (pixel integration changes the ratio by < 0.5 %)
    assert p1 / p0 == pytest.approx(math.exp(-(a**2)), abs=0.03)
    vcore.setProperty("Mirror", "ZernikeVectorRad", "")
    p2, _ = _bead_peaks(vcore)
    assert p2 == pytest.approx(p0, rel=0.05)


def test_more_light_bleaches_faster_and_the_dose_ledger_adds_up(vcore: UniMMCore) -> None:
    vcore.setExposure(100.0)
    decay = {}
    for power in (40.0, 80.0):
        vcore.setProperty("Camera", "Seed", 1)  # fresh sample, clock at 0
        vcore.setProperty("Laser561", "Power", power)
        frames = acquire(vcore, 8)
        first, last = signal_e(vcore, frames[:1]), signal_e(vcore, frames[-1:])
        decay[power] = -math.log(last / first)
        vm = get_virtual_microscope(vcore)
        dose = sum(r["dose_mj_561"] for r in vm.ledger)
        assert dose == pytest.approx(8 * power * 100.0 * 1e-3)
    assert decay[80.0] == pytest.approx(2 * decay[40.0], rel=0.15)


def test_activation_laser_switches_on_more_emitters(vcore: UniMMCore) -> None:
    vcore.setProperty("Camera", "Scenario", "smlm")
    vcore.setProperty("Laser405", "Power", 0.0)
    vm = get_virtual_microscope(vcore)
    frames = acquire(vcore, 40)  # pump the initially-on dye into the dark state
    low = np.mean([len(vm.truth(int(md["SimFrame"])).emitters["x_nm"]) for _, md in frames[-15:]])
    vcore.setProperty("Laser405", "Power", 5.0)
    frames = acquire(vcore, 40)
    high = np.mean([len(vm.truth(int(md["SimFrame"])).emitters["x_nm"]) for _, md in frames[-15:]])
    assert high > 3 * max(low, 0.5)


def test_em_gain_and_roi_through_properties(vcore: UniMMCore) -> None:
    vcore.setProperty("Camera", "CameraMode", "EMCCD")
    offset = get_virtual_microscope(vcore).camera.offset_adu
    vcore.setProperty("Camera", "EMGain", 100)
    f1 = acquire(vcore, 2)
    vcore.setProperty("Camera", "EMGain", 200)
    f2 = acquire(vcore, 2)
    adu1 = np.mean([f.mean() for f, _ in f1]) - offset
    adu2 = np.mean([f.mean() for f, _ in f2]) - offset
    assert adu2 / adu1 == pytest.approx(2.0, rel=0.05)  # EM gain multiplies the signal
    vcore.setROI(8, 16, 64, 32)
    img, md = acquire(vcore, 1)[0]
    assert img.shape == (32, 64)
    assert get_virtual_microscope(vcore).truth(int(md["SimFrame"])).roi == (8, 16, 64, 32)


def test_focus_drift_property_moves_the_focal_plane(vcore: UniMMCore) -> None:
    vcore.setProperty("Camera", "Scenario", "beads")
    vcore.setProperty("Camera", "Interval_ms", 1000.0)  # 1 s of simulated time per frame
    vcore.setProperty("Z", "FocusDriftRate_um_per_s", 0.1)
    frames = acquire(vcore, 5)
    vm = get_virtual_microscope(vcore)
    drift = [vm.truth(int(md["SimFrame"])).focus_drift_um for _, md in frames]
    np.testing.assert_allclose(np.diff(drift), 0.1, rtol=1e-6)
    defocus = [vm.truth(int(md["SimFrame"])).defocus_um for _, md in frames]
    assert defocus[-1] == pytest.approx(drift[-1], abs=0.006)  # Z = 0: defocus = drift
