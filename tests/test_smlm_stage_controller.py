"""SMLM pipeline stage (classical + network wiring) and the 405 nm density controller."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from smartscope.actions import SetLaserPower
from smartscope.config import SMLMCameraConfig, SMLMDensityConfig, SMLMStageConfig
from smartscope.controllers.base import Controller, Observation
from smartscope.frame import DriverState, Frame
from smartscope.metrics import match_localizations
from smartscope.models.smlm.controller import SMLMDensityController
from smartscope.models.smlm.stage import SMLMStage
from smartscope.models.smlm.table import COLUMNS, LocTable
from smartscope.pipeline import Pipeline, Stage, StageOutput
from smartscope.simulators.samples import Emitters, Photophysics
from smartscope.simulators.scene import SMLMScene


def _grid_scene(seed: int) -> SMLMScene:
    rng = np.random.default_rng(seed)
    g = np.arange(6, 64, 10) * 100.0
    n = g.size**2
    em = Emitters(
        x_nm=np.repeat(g, g.size) + rng.uniform(0, 100, n),
        y_nm=np.tile(g, g.size) + rng.uniform(0, 100, n),
        z_nm=np.zeros(n),
        structure_id=np.zeros(n, np.int64),
    )
    pp = Photophysics(k_off_per_s_per_mw=0.0, k_bleach_per_s_per_mw=0.0)  # always on
    return SMLMScene((64, 64), seed=seed, emitters=em, photophysics=pp)


def _stage_for(scene: SMLMScene, **kw: object) -> SMLMStage:
    cam = scene.camera
    camcfg = SMLMCameraConfig(
        offset_adu=cam.offset_adu, gain_adu_per_e=cam.gain_adu_per_e, read_noise_e=cam.read_noise_e
    )
    return SMLMStage(SMLMStageConfig(camera=camcfg, psf_sigma_nm=100.0, **kw))  # type: ignore[arg-type]


def test_classical_stage_on_simulator_frames(tmp_path: Path) -> None:
    """Every emitter of the pupil-PSF simulator is found, errors ~ reported CRLB."""
    scene = _grid_scene(1)
    stage = _stage_for(scene, render_every=2, output_dir=tmp_path)
    assert isinstance(stage, Stage)
    pipe = Pipeline([stage])
    errs, unc = [], []
    for i in range(4):
        img, gt = scene.step(0.0)
        out = pipe.run(Frame(index=i, image=img, camera_time_s=0.0))["smlm"]
        n = len(gt["x_nm"])
        assert out.values["n_localizations"] == n == len(out.rows)
        assert out.values["density_per_um2"] == pytest.approx(n / (6.4 * 6.4))
        assert set(out.rows[0]) == set(COLUMNS)
        assert ("superres" in out.images) == (i % 2 == 1)
        tab = LocTable.from_rows(out.rows)
        gxy = np.stack([gt["x_nm"], gt["y_nm"]], 1)
        ip, ig = match_localizations(tab.frame, tab.xy_nm(), gt["frame"], gxy)
        assert ip.size == n
        errs.append(tab.xy_nm()[ip] - gxy[ig])
        unc.append(np.stack([tab.sigma_x_nm[ip], tab.sigma_y_nm[ip]], 1))
    e, u = np.concatenate(errs), np.concatenate(unc)
    # pupil PSF fitted with a Gaussian: within 25 % of the reported CRLB, unbiased to 1 nm
    assert float(np.sqrt((e**2).mean()) / np.sqrt((u**2).mean())) == pytest.approx(1.0, abs=0.25)
    assert np.all(np.abs(e.mean(0)) < 1.0)
    assert out.images["superres"].sum() == 4 * n  # histogram render holds every localization
    pipe.close()
    for name in ("localizations.csv", "localizations_thunderstorm.csv", "superres_gaussian.tif"):
        assert (tmp_path / name).is_file()
    assert len(LocTable.read_csv(tmp_path / "localizations.csv")) == 4 * n


def test_stage_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="bundle"):
        SMLMStageConfig(method="network")
    with pytest.raises(ValidationError, match="does not exist"):
        SMLMStageConfig(method="network", bundle=tmp_path / "missing")
    with pytest.raises(ValidationError, match="roi_px"):
        SMLMStageConfig(roi_px=8)
    with pytest.raises(ValidationError, match="extra"):
        SMLMStageConfig(threshold=3)  # type: ignore[call-arg]


def test_network_stage_wiring(tmp_path: Path) -> None:
    """An (untrained) DECODE bundle through the engine runtime: the stage feeds frames
    (t-1, t, t+1) in photoelectrons and labels rows with frame t, one frame late."""
    from smartscope.engines.export import export_bundle
    from smartscope.engines.networks.smlm import ARCHITECTURE, SMLMNet, SMLMNetConfig
    from smartscope.engines.networks.smlm_outputs import OUTPUT_CHANNELS

    torch.manual_seed(0)
    cfg = SMLMNetConfig(base_width=4, depth=2)
    net = SMLMNet(cfg).eval()
    with torch.no_grad():
        net.unet.head.bias[0].fill_(2.0)  # type: ignore[index]  # many detections, so rows exist
    bundle = export_bundle(
        net,
        tmp_path / "b",
        manifest_fields={
            "name": "smlm-test",
            "task": "smlm",
            "inputs": [{"name": "frames", "channels": ["t-1", "t", "t+1"]}],
            "outputs": [{"name": "out", "channels": list(OUTPUT_CHANNELS)}],
            "normalization": {"kind": "affine", "offset_adu": 0.0, "scale_adu": cfg.input_scale_e},
            "pixel_size_um": 0.1,
            "tile": {"size_px": 64, "overlap_px": 8, "multiple_px": 4},
            "architecture": {"name": ARCHITECTURE, "params": cfg.model_dump(), "weights_sha256": "0" * 64},
            "provenance": {"command": "test", "data": "none"},
        },
    )
    scene = _grid_scene(2)
    stage = _stage_for(scene, method="network", bundle=bundle, backend="onnxruntime")
    frames = [scene.step(0.0)[0] for _ in range(3)]
    outs = [stage.process(Frame(index=i, image=f, camera_time_s=0.0), {}) for i, f in enumerate(frames)]
    # frame 0 arrives: nothing yet; frame 1: rows of frame 0; frame 2: rows of frame 1
    assert outs[0].values == {}
    assert outs[1].values["localized_frame"] == 0 and outs[2].values["localized_frame"] == 1
    assert {r["frame"] for r in outs[2].rows} == {1}
    # the stage's window equals the torch module on the same photoelectrons
    e = [stage.camera.to_electrons(f).astype(np.float32) for f in frames]
    with torch.no_grad():
        ref = net(torch.from_numpy(np.stack(e)[None] / cfg.input_scale_e))[0].numpy()
    out = stage.engine.infer(np.stack(e))["out"]  # type: ignore[union-attr]
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))
    flushed = stage.flush()
    assert flushed is not None and set(flushed.frame.tolist()) <= {2}
    stage.close()


# ---------------------------------------------------------------------------- controller


class BleachingPool:
    """Minimal activation/bleaching model: active emitters per frame
    A = N_off · (1 − exp(−k·P)), observed as Poisson counts; each active emitter bleaches
    with probability beta (so the pool shrinks and the needed power rises)."""

    def __init__(self, n: int, k_per_mw: float, beta: float, area_um2: float, seed: int):
        self.n, self.k, self.beta, self.area = float(n), k_per_mw, beta, area_um2
        self.rng = np.random.default_rng(seed)

    def frame(self, power_mw: float) -> float:
        mean_active = self.n * (1 - math.exp(-self.k * power_mw))
        count = self.rng.poisson(mean_active)
        self.n = max(self.n - self.beta * count, 0.0)
        return count / self.area


def _obs(i: int, density: float, power: float, stage: str = "smlm") -> Observation:
    frame = Frame(index=i, image=np.zeros((2, 2), np.uint16), camera_time_s=0.0)
    res = {stage: StageOutput(values={"density_per_um2": density})}
    return Observation(frame, res, DriverState(exposure_ms=10.0, lasers={"405": power}))


def _run(ctl: SMLMDensityController, pool: BleachingPool, frames: int, power: float):
    dens, powers = [], []
    for i in range(frames):
        d = pool.frame(power)
        dens.append(d)
        powers.append(power)
        for req in ctl.update(_obs(i, d, power)):
            assert isinstance(req.action, SetLaserPower) and req.action.laser == "405"
            assert req.source == "smlm_density" and "density_per_um2_ema" in req.evidence
            power = req.action.power_mw
    return np.array(dens), np.array(powers), power


def test_controller_holds_density_as_pool_bleaches() -> None:
    cfg = SMLMDensityConfig(
        target_density_per_um2=0.5, min_power_mw=0.01, max_power_mw=100, initial_power_mw=0.1
    )
    ctl = SMLMDensityController(cfg)
    assert isinstance(ctl, Controller)
    pool = BleachingPool(n=20000, k_per_mw=2e-4, beta=0.05, area_um2=100.0, seed=0)
    dens, powers, _ = _run(ctl, pool, 3000, 0.1)
    after = dens[500:]
    smooth = np.convolve(after, np.ones(20) / 20, mode="valid")
    assert np.mean(after) == pytest.approx(0.5, rel=0.05)
    assert np.mean(np.abs(smooth / 0.5 - 1) <= 0.2) > 0.95
    assert pool.n < 0.8 * 20000  # the pool did bleach ...
    assert powers[-1] > 1.2 * powers[500]  # ... and the power rose to compensate
    # rate limit: no change bigger than max_step_ratio
    ratio = powers[1:] / powers[:-1]
    assert ratio.max() <= cfg.max_step_ratio + 1e-9 and ratio.min() >= 1 / cfg.max_step_ratio - 1e-9
    assert powers.max() <= cfg.max_power_mw and powers.min() >= cfg.min_power_mw


def test_controller_anti_windup_and_outside_clamps() -> None:
    cfg = SMLMDensityConfig(
        target_density_per_um2=1.0,
        max_power_mw=10.0,
        min_power_mw=0.1,
        initial_power_mw=1.0,
        update_every=1,
        smoothing_frames=1,
    )
    ctl = SMLMDensityController(cfg)
    power = 1.0
    for i in range(200):  # unreachable target: saturates at max, integrator must not wind up
        for r in ctl.update(_obs(i, 0.01, power)):
            power = r.action.power_mw  # type: ignore[union-attr]
    assert power == pytest.approx(10.0)
    assert ctl.integrator is not None and ctl.integrator <= math.log(10.0) + 1e-9
    # density now far too high: the power must come down immediately (no unwinding delay)
    reqs = ctl.update(_obs(200, 10.0, power))
    assert reqs and reqs[0].action.power_mw < power  # type: ignore[union-attr]
    # safety clamped our request to 2 mW: the controller continues from 2 mW, not its wish
    ctl2 = SMLMDensityController(cfg)
    reqs = ctl2.update(_obs(0, 0.01, 1.0))  # error ln(20): rate-limited step
    assert reqs[0].action.power_mw == pytest.approx(1.5)  # type: ignore[union-attr]
    reqs = ctl2.update(_obs(1, 0.01, 1.2))  # applied value differs from the 1.5 mW request
    assert reqs[0].action.power_mw <= 1.2 * 1.5 + 1e-9  # type: ignore[union-attr]
    assert reqs[0].evidence["power_before_mw"] == pytest.approx(1.2)


def test_controller_ignores_missing_values_and_validates() -> None:
    ctl = SMLMDensityController(SMLMDensityConfig(target_density_per_um2=0.3, update_every=1))
    frame = Frame(index=0, image=np.zeros((2, 2), np.uint16), camera_time_s=0.0)
    assert (
        ctl.update(
            Observation(frame, {"smlm": StageOutput()}, DriverState(exposure_ms=10.0, lasers={"405": 1.0}))
        )
        == []
    )
    assert ctl.update(Observation(frame, {}, DriverState(exposure_ms=10.0, lasers={"405": 1.0}))) == []
    with pytest.raises(KeyError, match="405"):
        ctl.update(
            _obs(1, 0.3, 1.0)
            if False
            else Observation(
                Frame(index=1, image=np.zeros((2, 2), np.uint16), camera_time_s=0.0),
                {"smlm": StageOutput(values={"density_per_um2": 0.1})},
                DriverState(exposure_ms=10.0, lasers={"488": 1.0}),
            )
        )
    with pytest.raises(ValidationError, match="min_power_mw"):
        SMLMDensityConfig(target_density_per_um2=0.3, min_power_mw=5, max_power_mw=1)
    with pytest.raises(ValidationError, match="target_density_per_um2"):
        SMLMDensityConfig(target_density_per_um2=0)


def test_localize_command_on_a_recorded_stack(tmp_path: Path) -> None:
    import tifffile
    import typer
    from typer.testing import CliRunner

    from smartscope.errors import FormattedErrors
    from smartscope.models.smlm.cli import localize_cmd

    scene = _grid_scene(5)
    frames, gts = zip(*(scene.step(0.0) for _ in range(5)), strict=True)
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, np.stack(frames))
    app = typer.Typer(cls=FormattedErrors)  # as smartscope's app: a user's mistake is one line
    app.command("localize")(localize_cmd)
    app.command("other")(lambda: None)
    res = CliRunner().invoke(app, ["localize", str(tif), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    tab = LocTable.read_thunderstorm_csv(tmp_path / "out" / "localizations_thunderstorm.csv")
    assert len(tab) == sum(len(g["x_nm"]) for g in gts)
    assert sorted(set(tab.frame.tolist())) == [0, 1, 2, 3, 4]
    bad = CliRunner().invoke(app, ["localize", str(tmp_path / "none.tif"), "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "does not exist" in bad.output
