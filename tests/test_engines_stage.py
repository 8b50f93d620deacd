"""EngineStage in a Pipeline on real Frames; the SNR estimate; the engines CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from smartscope.config import EngineStageConfig
from smartscope.engines import load_bundle
from smartscope.engines.cli import app
from smartscope.engines.stage import EngineStage, snr_estimate
from smartscope.engines.testing import make_test_bundle
from smartscope.frame import Frame, now_s
from smartscope.pipeline import FrameStatsStage, Pipeline, Stage


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("s") / "u", seed=4, tile_px=64, overlap_px=16)


def test_engine_stage_in_pipeline(bundle_path: Path) -> None:
    cfg = EngineStageConfig(name="denoise", bundle=bundle_path, backend="onnxruntime")
    stage = EngineStage(cfg)
    assert isinstance(stage, Stage)
    pipe = Pipeline([FrameStatsStage(), stage])
    rng = np.random.default_rng(0)
    for i in range(2):
        frame = Frame(index=i, image=rng.poisson(200, (150, 170)).astype(np.uint16), camera_time_s=now_s())
        res = pipe.run(frame)
        out = res["denoise"]
        img = out.images["denoised"]
        assert img.shape == (150, 170) and img.dtype == np.float32  # tiled: 150x170 > 64
        assert {"snr", "snr_db", "noise_adu", "denoised_mean"} <= out.values.keys()
        assert "stage:denoise" in frame.times and frame.times["stage:denoise"] >= frame.times["stage:stats"]
    # the stage's image equals the engine run directly on the same frame
    direct = stage.engine.infer(frame.image)["denoised"][0]
    np.testing.assert_array_equal(img, direct)
    pipe.close()


def test_stage_config_validation(bundle_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="bundle"):
        EngineStageConfig(bundle=tmp_path / "missing")
    with pytest.raises(ValidationError, match="extra"):
        EngineStageConfig(bundle=bundle_path, colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="backend"):
        EngineStageConfig(bundle=bundle_path, backend="tflite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not in the outputs"):
        EngineStage(EngineStageConfig(bundle=bundle_path, outputs=["nope"]))
    cfg = EngineStageConfig.model_validate({"kind": "engine", "bundle": str(bundle_path), "name": "dn"})
    assert cfg.kind == "engine" and cfg.name == "dn"


def test_snr_estimate_recovers_known_noise() -> None:
    """raw = clean + N(0, 5^2): with the clean image as the restoration, noise ~ 5 ADU."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:256, 0:256]
    clean = 100 + 400 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / (2 * 40.0**2))
    raw = clean + rng.normal(0, 5.0, clean.shape)
    est = snr_estimate(raw, clean)
    assert est["noise_adu"] == pytest.approx(5.0, rel=0.05)
    signal = np.percentile(clean, 99) - np.percentile(clean, 10)
    assert est["snr"] == pytest.approx(signal / 5.0, rel=0.05)
    assert est["snr_db"] == pytest.approx(20 * np.log10(est["snr"]))


def test_cli_engines_lists_and_flags_invalid(bundle_path: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "bundles"
    shutil.copytree(bundle_path, root / "good")
    shutil.copytree(bundle_path, root / "bad")
    (root / "bad" / "model.onnx").write_bytes(b"tampered")
    res = CliRunner().invoke(app, ["engines", str(root), "--json"])
    assert res.exit_code == 0, res.output
    rows = {Path(r["path"]).name: r for r in json.loads(res.output)}
    assert (
        rows["good"]["task"] == "denoise"
        and rows["good"]["onnx_sha256"] == load_bundle(bundle_path).onnx_sha256
    )
    assert "sha256" in rows["bad"]["error"]


def test_cli_compile_without_tensorrt(bundle_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        res = CliRunner().invoke(app, ["compile", str(bundle_path)])
        assert res.exit_code == 2 and "TensorRT unavailable" in res.output
    else:  # pragma: no cover - with TensorRT the GPU test covers compile
        pytest.skip("TensorRT is installed")


def test_cli_export_from_checkpoint(tmp_path: Path) -> None:
    """A training checkpoint (checkpoint.json + weights.npz) exports to a verified bundle."""
    import torch

    from smartscope.engines.export import CHECKPOINT_NAME
    from smartscope.engines.networks.unet import UNet2D, UNetConfig
    from smartscope.engines.testing import unet_manifest_fields
    from smartscope.engines.weights import save_state_npz

    torch.manual_seed(0)
    cfg = UNetConfig(depth=1, base_width=4)
    net = UNet2D(cfg)
    ck = tmp_path / "ck"
    ck.mkdir()
    save_state_npz(net, ck / "weights.npz")
    fields = unet_manifest_fields(
        name="ck",
        task="denoise",
        arch_params=cfg.model_dump(),
        input_channels=["raw"],
        output_channels=["raw"],
        output_name="denoised",
        tile_px=64,
        overlap_px=16,
    )
    (ck / CHECKPOINT_NAME).write_text(json.dumps({"manifest": fields, "weights_file": "weights.npz"}))
    res = CliRunner().invoke(app, ["export", str(ck), "--out", str(tmp_path / "b.zip")])
    assert res.exit_code == 0, res.output
    b = load_bundle(tmp_path / "b.zip")
    assert b.manifest.name == "ck" and b.manifest.opset == 17
    res = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "checkpoint.json" in res.output
