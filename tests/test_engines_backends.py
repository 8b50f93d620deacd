"""Every available backend matches the FP32 torch reference on fresh random inputs.

Relative error = max |backend - reference| / max |reference|. Stated tolerances:
FP32 <= 1e-4, FP16 <= 1e-2, BF16 <= 3e-2 (8-bit mantissa vs FP16's 11).
TensorRT and CUDA tests skip where unavailable.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from smartscope.engines import Engine, load_bundle, select_backend
from smartscope.engines.backends import BackendUnavailable, available_backends, create_backend
from smartscope.engines.backends.torch_backend import build_torch_module
from smartscope.engines.testing import make_test_bundle

FP32_TOL = 1e-4
HALF_TOL = 1e-2
BF16_TOL = 3e-2


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("b") / "random", seed=11, in_channels=2, out_channels=3)


def _reference(bundle_path: Path, x: np.ndarray) -> np.ndarray:
    module = build_torch_module(load_bundle(bundle_path)).double()
    with torch.inference_mode():
        return module(torch.from_numpy(x).double()).float().numpy()


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


SHAPES = [(1, 2, 64, 64), (3, 2, 32, 96), (1, 2, 128, 48)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_fp32_parity_on_cpu(bundle_path: Path, backend: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(hash((backend, shape)) % 2**32)
    x = rng.standard_normal(shape).astype(np.float32)
    ref = _reference(bundle_path, x)
    be = create_backend(load_bundle(bundle_path), backend, device="cpu", precision="fp32")  # type: ignore[arg-type]
    out = be.run(x)["denoised"]
    assert out.shape == (shape[0], 3, shape[2], shape[3]) and out.dtype == np.float32
    assert _rel(out, ref) <= FP32_TOL


def test_bf16_torch_cpu_within_half_tolerance(bundle_path: Path) -> None:
    x = np.random.default_rng(5).standard_normal((2, 2, 64, 64)).astype(np.float32)
    ref = _reference(bundle_path, x)
    be = create_backend(load_bundle(bundle_path), "torch", device="cpu", precision="bf16")
    err = _rel(be.run(x)["denoised"], ref)
    assert 0 < err <= BF16_TOL  # really ran in reduced precision, and within tolerance


def test_auto_picks_best_available_and_reports(bundle_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = load_bundle(bundle_path)
    with caplog.at_level(logging.INFO, logger="smartscope.engines.backends"):
        be = select_backend(b, "auto")
    avail = available_backends()
    if avail["tensorrt"].startswith("ok"):
        assert be.name == "tensorrt"
    elif torch.cuda.is_available():
        assert be.name == "torch" and be.device.startswith("cuda")
    else:
        assert be.name == "onnxruntime"  # faster than eager torch on CPU
    assert "backend auto ->" in caplog.text and be.describe() in caplog.text


def test_unavailable_requests_fail_clearly(bundle_path: Path) -> None:
    b = load_bundle(bundle_path)
    with pytest.raises(BackendUnavailable, match="fp16 is GPU-only"):
        create_backend(b, "torch", device="cpu", precision="fp16")
    with pytest.raises(BackendUnavailable, match="FP32 graph only"):
        create_backend(b, "onnxruntime", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="CUDA is unavailable"):
            create_backend(b, "torch", device="cuda:0")
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend(b, "tflite")  # type: ignore[arg-type]


def test_engine_denormalizes_to_camera_units(bundle_path: Path) -> None:
    """Engine.infer = backend on (adu - offset)/scale, then * scale + offset."""
    eng = Engine.open(bundle_path, "onnxruntime")
    man = eng.manifest
    off, sc = man.normalization.offset_adu, man.normalization.scale_adu
    img = np.random.default_rng(2).integers(90, 400, (2, 64, 64)).astype(np.uint16)
    got = eng.infer(img)["denoised"]
    x = ((img.astype(np.float32) - off) / sc)[None]
    ref = _reference(bundle_path, x)[0]
    # output flagged denormalize in make_test_bundle
    assert np.allclose(got, ref * sc + off, rtol=1e-4, atol=1e-3 * sc)
    with pytest.raises(ValueError, match="expects 2 channel"):
        eng.infer(img[0])


def test_percentile_normalization_is_light_level_invariant(tmp_path: Path) -> None:
    """Per-frame percentile normalization: infer(k * a + b) == k * infer(a) + b."""
    path = make_test_bundle(tmp_path / "pct", seed=2, normalization="percentile")
    eng = Engine.open(path, "onnxruntime")
    a = np.random.default_rng(3).poisson(30, (96, 112)).astype(np.float32) + 100
    base = eng.infer(a)["denoised"]
    brighter = eng.infer(4 * a + 20)["denoised"]
    np.testing.assert_allclose(brighter, 4 * base + 20, rtol=1e-4, atol=1e-3 * float(np.ptp(base)) * 4)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_torch_cuda_half_parity(bundle_path: Path, precision: str) -> None:
    x = np.random.default_rng(8).standard_normal((2, 2, 128, 128)).astype(np.float32)
    ref = _reference(bundle_path, x)
    b = load_bundle(bundle_path)
    for opts in ({}, {"cuda_graphs": True}):
        be = create_backend(b, "torch", device="cuda:0", precision=precision, **opts)  # type: ignore[arg-type]
        for _ in range(2):  # second call replays the captured graph
            tol = HALF_TOL if precision == "fp16" else BF16_TOL
            assert _rel(be.run(x)["denoised"], ref) <= tol


@pytest.mark.tensorrt
def test_tensorrt_fp16_parity_and_plan_cache(bundle_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from smartscope.engines.backends.tensorrt_backend import TensorRTBackend

    b = load_bundle(bundle_path)
    be = TensorRTBackend(b, precision="fp16", max_hw=256, max_batch=4, cache_dir=tmp_path)
    assert not be.plan_from_cache and be.plan_path.is_file()
    assert (tmp_path / "timing.cache").is_file()
    for shape in [(1, 2, 64, 64), (4, 2, 128, 96)]:
        x = np.random.default_rng(shape[0]).standard_normal(shape).astype(np.float32)
        assert _rel(be.run(x)["denoised"], _reference(bundle_path, x)) <= HALF_TOL
    again = TensorRTBackend(b, precision="fp16", max_hw=256, max_batch=4, cache_dir=tmp_path)
    assert again.plan_from_cache and again.plan_path == be.plan_path
    x = torch.randn(1, 2, 64, 64, device="cuda")
    out = again.run_tensor(x)["denoised"]
    assert out.is_cuda and out.shape == (1, 3, 64, 64)
