"""The multi-frame real-time denoiser: drifting recordings, network, training, runtime, stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from smartscope.config.stages import EngineStageConfig
from smartscope.engines import Engine, load_bundle
from smartscope.engines.networks import build_network
from smartscope.engines.networks.denoise import FastDenoiser, FastDenoiserConfig
from smartscope.engines.stage import EngineStage
from smartscope.frame import Frame
from smartscope.models.denoise.data import simulate
from smartscope.models.denoise.train import DenoiseTrainConfig, input_channels, train_denoise, window
from smartscope.models.train_common import FitConfig
from smartscope.simulators.camera import CameraConfig
from smartscope.simulators.datasets import denoise_sequences, drifting_frames


def test_drifting_frames_end_on_the_unshifted_field_and_move_by_the_velocity() -> None:
    rng = np.random.default_rng(0)
    big = rng.random((48, 48)).astype(np.float32) * 50 + 5
    noisy, clean = drifting_frames(big, 4, (32, 32), (1.0, -2.0), rng)
    cam = CameraConfig()
    assert noisy.shape == clean.shape == (4, 32, 32)
    # the last (current) frame is the centre crop, unshifted
    np.testing.assert_allclose(clean[-1], cam.qe * big[8:40, 8:40] + cam.dark_e_per_s * 0.01, rtol=1e-5)
    # one frame earlier the sample sat one velocity step back: integer shifts are exact
    np.testing.assert_allclose(clean[-2], clean[-1] * 0 + cam.qe * big[7:39, 10:42] + 0.005, rtol=1e-5)
    # each frame has its own noise around its truth
    assert not np.allclose(noisy[0] - clean[0], noisy[1] - clean[1])
    assert abs(float((noisy - clean).mean())) < 0.5
    with pytest.raises(ValueError, match="too small"):
        drifting_frames(big, 10, (32, 32), (1.0, 1.0), rng)


def test_denoise_sequences_and_scenario_data() -> None:
    noisy, clean = denoise_sequences(2, (32, 32), seed=3, photons=20, n_frames=3, max_speed_px=1.0)
    assert noisy.shape == clean.shape == (2, 3, 32, 32)
    data = simulate("lowlight", n_fields=3, field_px=32, seed=0, frames=3)
    assert [a.shape for a in data.noisy] == [(3, 32, 32)] * 3
    assert data.names[0].startswith("simseq-") and "n_frames=3" in data.description
    assert data.clean is not None and data.has_ground_truth


def test_window_repeats_the_first_frame_before_the_stream_fills() -> None:
    stack = np.arange(4)[:, None, None] * np.ones((4, 2, 2))
    assert window(stack, 3, 3)[:, 0, 0].tolist() == [1, 2, 3]
    assert window(stack, 0, 3)[:, 0, 0].tolist() == [0, 0, 0]
    assert input_channels(3) == ["fluorescence[t-2]", "fluorescence[t-1]", "fluorescence"]
    assert input_channels(1) == ["fluorescence"]


def test_fast_denoiser_shapes_and_registry() -> None:
    cfg = FastDenoiserConfig(frames=3, width=8, blocks=1, stride=4, coarse=True)
    net = FastDenoiser(cfg)
    assert net.size_multiple == 8
    x = torch.randn(2, 3, 32, 24)
    y = net(x)
    assert y.shape == (2, 1, 32, 24)
    # residual: with every weight zero the output is the current (last) frame
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    torch.testing.assert_close(net(x), x[:, -1:])
    rebuilt = build_network("denoise_fast", cfg.model_dump())
    assert isinstance(rebuilt, FastDenoiser) and rebuilt.config == cfg


def _tiny_fast(method: str, frames: int = 3, steps: int = 6) -> DenoiseTrainConfig:
    return DenoiseTrainConfig(
        method=method,  # type: ignore[arg-type]
        arch="fast",
        fast=FastDenoiserConfig(frames=frames, width=8, blocks=1),
        fit=FitConfig(steps=steps, batch_size=4, val_every=3, seed=0),
        patch_px=32,
        val_patches=4,
        tile_px=64,
        overlap_px=16,
        eval_max_frames=2,
    )


@pytest.mark.parametrize("method", ["care", "n2v"])
def test_multi_frame_bundle_trains_and_runs_on_both_backends(tmp_path: Path, method: str) -> None:
    data = simulate("lowlight", n_fields=5, field_px=64, seed=0, frames=3)
    path, metrics = train_denoise(
        data, _tiny_fast(method), tmp_path / method, command="t", name="t", quiet=True
    )
    man = load_bundle(path).manifest
    spec = man.inputs[0]
    assert spec.frames == 3 and spec.channels == input_channels(3)
    assert man.architecture is not None and man.architecture.name == "denoise_fast"
    assert metrics["heldout_frames_scored"] >= 1 and np.isfinite(metrics["psnr_db"])
    frames = np.random.default_rng(1).poisson(150, (3, 48, 40)).astype(np.float32)
    ort = Engine.open(path, "onnxruntime").infer(frames)["denoised"]
    pt = Engine.open(path, "torch").infer(frames)["denoised"]  # rebuilt from the architecture block
    assert ort.shape == (1, 48, 40)
    np.testing.assert_allclose(pt, ort, rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="expects 3 channel"):
        Engine.open(path, "onnxruntime").infer(frames[0])


def test_n2v_masks_only_the_current_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Earlier frames reach the network unmasked; the blind spot is in the last frame only."""
    import smartscope.models.denoise.train as tr

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_mask = tr.n2v_mask

    def spy(x: torch.Tensor, *a: object, **k: object) -> tuple[torch.Tensor, torch.Tensor]:
        out, mask = real_mask(x, *a, **k)  # type: ignore[arg-type]
        seen.append((x, mask))
        return out, mask

    monkeypatch.setattr(tr, "n2v_mask", spy)
    data = simulate("lowlight", n_fields=4, field_px=64, seed=0, frames=3)
    train_denoise(data, _tiny_fast("n2v", steps=3), tmp_path / "b", command="t", name="t", quiet=True)
    assert seen and all(x.shape[1] == 1 for x, _ in seen)


def test_engine_stage_feeds_a_multi_frame_engine_its_history(tmp_path: Path) -> None:
    data = simulate("lowlight", n_fields=4, field_px=64, seed=0, frames=3)
    path, _ = train_denoise(
        data, _tiny_fast("care", steps=3), tmp_path / "b", command="t", name="t", quiet=True
    )
    stage = EngineStage(EngineStageConfig(kind="engine", name="dn", bundle=str(path)))
    eng = stage.engine
    rng = np.random.default_rng(2)
    frames = [rng.poisson(120, (32, 32)).astype(np.uint16) for _ in range(4)]
    outs = [
        stage.process(Frame(index=i, image=f, camera_time_s=float(i)), {}).images["denoised"]
        for i, f in enumerate(frames)
    ]
    np.testing.assert_allclose(outs[0], eng.infer(np.stack([frames[0]] * 3))["denoised"][0], rtol=1e-5)
    np.testing.assert_allclose(
        outs[1], eng.infer(np.stack([frames[0], frames[0], frames[1]]))["denoised"][0], rtol=1e-5
    )
    np.testing.assert_allclose(outs[3], eng.infer(np.stack(frames[1:4]))["denoised"][0], rtol=1e-5)
    # a new frame shape (ROI change) starts the history over
    small = rng.poisson(120, (24, 24)).astype(np.uint16)
    out = stage.process(Frame(index=9, image=small, camera_time_s=9.0), {}).images["denoised"]
    np.testing.assert_allclose(out, eng.infer(np.stack([small] * 3))["denoised"][0], rtol=1e-5)
    stage.close()
    # `smartscope apply` feeds one frame at a time: it refuses the bundle instead of guessing
    import tifffile
    from typer.testing import CliRunner

    from smartscope.cli import app

    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, np.stack(frames))
    res = CliRunner().invoke(app, ["apply", str(path), str(src), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and "takes 3 consecutive frames" in res.output


def test_cli_trains_a_multi_frame_unet_and_rejects_bad_arch(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from smartscope.models.cli import app

    out = tmp_path / "u3"
    args = [
        "denoise", "--method", "care", "--simulate", "fixed20", "--frames", "3", "--out", str(out),
        "--n-fields", "3", "--field-px", "32", "--steps", "2", "--val-every", "2", "--batch-size", "2",
        "--patch-px", "32", "--depth", "1", "--base-width", "4", "--tile-px", "32", "--overlap-px", "8",
        "--quiet",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    man = load_bundle(out).manifest
    assert man.inputs[0].frames == 3 and man.architecture is not None
    assert man.architecture.name == "unet2d" and man.architecture.params["in_channels"] == 3
    assert "--frames 3" in man.provenance.command
    res = CliRunner().invoke(app, [*args[:-1], "--arch", "vit"])
    assert res.exit_code == 2 and "'vit' is not one of" in res.output  # typer checks the Literal
