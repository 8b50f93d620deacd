"""The SMLM workflow a lab runs on its own microscope, end to end at tiny sizes:

beads (a z-stack through Micro-Manager: the virtual microscope's bead scenario, a
cylindrical lens as a Z6 mirror shape) and dark/lamp frames → ``smartscope calibrate
psf`` / ``calibrate camera`` → ``smartscope train smlm --psf --camera`` (a few steps) →
``smartscope localize`` offline on a recorded stack (network and classical 3-D) and live
in ``smartscope run``; a bundle trained on another camera is refused unless forced.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from pymmcore_plus.experimental.unicore import UniMMCore
from typer.testing import CliRunner

from smartscope.cli import app
from smartscope.models.smlm.table import LocTable
from smartscope.simulators import virtual_config_path
from smartscope.simulators.camera_calibration import CameraCalibration

runner = CliRunner()
SENSOR = 64


@pytest.fixture(scope="module")
def vcore() -> Iterator[UniMMCore]:
    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))
    core.setProperty("Camera", "Pacing", "AsFastAsPossible")
    core.setProperty("Camera", "SensorSize", str(SENSOR))
    yield core
    core.unloadAllDevices()
    del core
    gc.collect()


def _snap(core: UniMMCore, n: int) -> np.ndarray:
    out = []
    for _ in range(n):
        core.snapImage()
        out.append(np.array(core.getImage()))
    return np.stack(out)


def _lights_off(core: UniMMCore) -> None:
    for dev in ("Laser405", "Laser488", "Laser561", "Laser640", "Lamp"):
        core.setProperty(dev, "Power", 0.0)


@pytest.fixture(scope="module")
def recorded(vcore: UniMMCore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the user records on the rig, as TIFF files."""
    d = tmp_path_factory.mktemp("rig")
    core = vcore
    # camera: dark frames (all light off) and static lamp frames at three powers
    core.setProperty("Camera", "Scenario", "cells")
    _lights_off(core)
    tifffile.imwrite(d / "dark.tif", _snap(core, 40))
    for i, mw in enumerate((0.5, 1.5, 4.0)):
        core.setProperty("Lamp", "Power", mw)
        tifffile.imwrite(d / f"flat{i + 1}.tif", _snap(core, 40))
    # beads: the focus steps up through them, cylindrical lens in the path
    core.setProperty("Camera", "Scenario", "beads")
    _lights_off(core)
    core.setProperty("Laser640", "Power", 100.0)
    core.setProperty("Mirror", "Z6", 1.0)
    stack = []
    for z_um in np.arange(-0.45, 0.451, 0.05):
        core.setPosition("Z", float(z_um))
        stack.append(_snap(core, 1)[0])
    core.setPosition("Z", 0.0)
    tifffile.imwrite(d / "beads.tif", np.stack(stack))
    # an SMLM acquisition to localize offline
    core.setProperty("Camera", "Scenario", "smlm")
    core.setProperty("Laser640", "Power", 100.0)
    core.setProperty("Laser405", "Power", 5.0)
    tifffile.imwrite(d / "smlm.tif", _snap(core, 8))
    core.setProperty("Mirror", "Z6", 0.0)
    return d


@pytest.fixture(scope="module")
def calibrated(recorded: Path) -> Path:
    d = recorded
    out = runner.invoke(
        app,
        ["calibrate", "camera", "--dark", str(d / "dark.tif"), "--flats", str(d / "flat1.tif"),
         str(d / "flat2.tif"), str(d / "flat3.tif"), "--out", str(d / "camera.json")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    out = runner.invoke(
        app,
        ["calibrate", "psf", str(d / "beads.tif"), "--z-step-nm", "50", "--camera", str(d / "camera.json"),
         "--roi-px", "15", "--z-min-nm", "-400", "--z-max-nm", "400", "--out", str(d / "psf.npz")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    out = runner.invoke(
        app,
        ["train", "smlm", "--psf", str(d / "psf.npz"), "--camera", str(d / "camera.json"), "--steps", "2",
         "--from-scratch", "--width", "4", "--tile", "24", "--batch", "2", "--eval-windows", "4",
         "--threads", "1", "--out", str(d / "bundle")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    return d


def test_camera_and_psf_calibration_files(calibrated: Path) -> None:
    d = calibrated
    cam = CameraCalibration.model_validate_json((d / "camera.json").read_text())
    # the virtual sCMOS: 2 ADU/e⁻, offset 100 ADU (mean dark level 99.5), 0.9 e⁻ read noise
    assert cam.gain_adu_per_e == pytest.approx(2.0, rel=0.1)
    assert cam.offset_adu == pytest.approx(99.5, abs=0.5)
    assert (
        cam.shape == (SENSOR, SENSOR) and (d / "camera_maps.npz").is_file() and (d / "camera.png").is_file()
    )
    fit = json.loads((d / "psf_fit.json").read_text())
    assert fit["n_emitters"] == 4 and fit["gaussian_z"] is not None
    assert (d / "psf.png").is_file()


def test_trained_bundle_records_the_calibration(calibrated: Path) -> None:
    from smartscope.engines.bundle import load_bundle
    from smartscope.simulators.psf_models import file_sha256

    man = load_bundle(calibrated / "bundle").manifest
    assert man.outputs[0].channels[-2:] == ["z", "sz"]
    cal = man.calibration
    assert cal["camera_calibrated"] == 1.0 and cal["camera_gain_adu_per_e"] == pytest.approx(2.0, rel=0.1)
    assert 0 < cal["threshold"] < 1 and cal["z_min_nm"] < 0 < cal["z_max_nm"]
    assert man.pixel_size_um == pytest.approx(0.1)
    assert file_sha256(calibrated / "psf.npz") in man.provenance.data
    assert "--psf" in man.provenance.command


def test_localize_offline_network_and_classical_3d(calibrated: Path) -> None:
    d = calibrated
    for args, folder in (
        (
            ["--method", "network", "--bundle", str(d / "bundle"), "--psf", str(d / "psf.npz"), "--refine"],
            "net",
        ),
        (["--psf", str(d / "psf.npz")], "classical"),
        (["--psf", str(d / "psf.npz"), "--psf-model", "gaussian_z"], "gaussz"),
    ):
        out = runner.invoke(
            app,
            [
                "localize",
                str(d / "smlm.tif"),
                "--camera-file",
                str(d / "camera.json"),
                "--out",
                str(d / folder),
                *args,
            ],
        )
        assert out.exit_code == 0, out.output
        assert "with z" in out.output or "0 localizations" in out.output
    ts = (d / "classical" / "localizations_thunderstorm.csv").read_text().splitlines()[0]
    assert '"z [nm]"' in ts
    tab = LocTable.read_csv(d / "classical" / "localizations.csv")
    assert len(tab) > 10 and tab.has_z
    # the smlm scenario's emitters lie within ±100 nm of the focal plane
    assert np.median(np.abs(tab.z_nm)) < 150
    assert (d / "classical" / "superres_z.png").is_file()
    # the calibrated Gaussian-z model finds the same emitters at nearly the same z
    gz = LocTable.read_csv(d / "gaussz" / "localizations.csv")
    assert len(gz) > 0.8 * len(tab) and np.median(np.abs(gz.z_nm)) < 200


def test_bundle_for_another_camera_is_refused_unless_forced(calibrated: Path) -> None:
    d = calibrated
    cam = CameraCalibration.model_validate_json((d / "camera.json").read_text())
    other = cam.model_copy(
        update={"gain_adu_per_e": cam.gain_adu_per_e * 1.5, "maps_file": None, "shape": None}
    )
    other.save(d / "other_camera.json")
    args = ["localize", str(d / "smlm.tif"), "--method", "network", "--bundle", str(d / "bundle")]
    out = runner.invoke(app, [*args, "--camera-file", str(d / "other_camera.json"), "--out", str(d / "x")])
    assert out.exit_code == 1
    assert "camera gain_adu_per_e: data" in out.output and "bundle" in out.output and "force" in out.output
    out = runner.invoke(
        app, [*args, "--pixel-size-um", "0.13", "--camera-file", str(d / "camera.json"), "--out", "y"]
    )
    assert out.exit_code == 1 and "pixel size: data 130 nm, bundle 100 nm" in out.output
    out = runner.invoke(
        app, [*args, "--camera-file", str(d / "other_camera.json"), "--force", "--out", str(d / "forced")]
    )
    assert out.exit_code == 0, out.output


def test_live_run_with_the_calibration(calibrated: Path, tmp_path: Path) -> None:
    """``smartscope run`` on the virtual microscope (astigmatic, smlm scenario): the
    classical 3-D stage with the PSF and camera files localizes in x, y, z live; the
    network stage (a 2-step bundle: it finds little) runs on the same frames."""
    from smartscope.config.scenarios import SMLMScenario
    from smartscope.scenarios.smlm import run_config

    cfg = run_config(SMLMScenario(n_frames=20, seed=3), tmp_path)
    cfg["microscope"]["startup"] = [
        {"device": "Camera", "property": "Scenario", "value": "smlm"},
        {"device": "Camera", "property": "SensorSize", "value": SENSOR},
        {"device": "Mirror", "property": "Z6", "value": 1.0},
        {"device": "Laser405", "property": "Power", "value": 10.0},
    ]
    cfg["controllers"] = []
    # 100 ms frames: the 3-D spline fit of a frame (and its first-call set-up) fits between
    # frames, so the analysis sees most frames even on a loaded 2-core machine
    cfg["acquisition"]["exposure_ms"] = 100.0
    cal = {"camera_file": str(calibrated / "camera.json")}
    cfg["pipeline"] = {
        "stages": [
            {"kind": "smlm", "name": "smlm", "psf_file": str(calibrated / "psf.npz"), **cal},
            {
                "kind": "smlm",
                "name": "smlm_net",
                "method": "network",
                "bundle": str(calibrated / "bundle"),
                "backend": "onnxruntime",
                "output_dir": str(tmp_path / "net"),
                **cal,
            },
        ]
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = runner.invoke(app, ["run", str(path)])
    assert out.exit_code == 0, out.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "net"]
    tab = LocTable.read_csv(run_dir / "outputs" / "localizations.csv")
    assert len(tab) > 10 and tab.has_z and np.median(np.abs(tab.z_nm)) < 150
    assert (tmp_path / "net" / "localizations.csv").is_file()
    rows = [json.loads(line) for line in (run_dir / "analysis.jsonl").read_text().splitlines()]
    assert any("smlm_net" in json.dumps(r) for r in rows)
