"""Tiling: exact for pointwise maps, seamless for a U-Net on a smooth image."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from smartscope.engines import load_bundle
from smartscope.engines.backends import create_backend
from smartscope.engines.testing import make_test_bundle
from smartscope.engines.tiling import pad_to_multiple, ramp_weights, run_tiled, tile_starts


def test_tile_starts_cover_and_overlap() -> None:
    for size in (64, 65, 200, 257, 1000):
        starts = tile_starts(size, 64, 16)
        assert starts[0] == 0 and starts[-1] + 64 == max(size, 64)
        assert all(b - a <= 48 for a, b in itertools.pairwise(starts))
    w = ramp_weights(64, 16, True, True)
    assert w.min() > 0 and w[12:52].min() == 1.0 and w[:4].max() < 1e-5
    # two neighbours overlapping by exactly `overlap` hand over with weights summing to 1
    a = ramp_weights(64, 16, False, True)
    b = ramp_weights(64, 16, True, False)
    np.testing.assert_allclose(a[48:] + b[:16], 1.0, atol=1e-5)


def test_pointwise_map_is_reconstructed_exactly() -> None:
    """Blending is a partition of unity: a pointwise function is unchanged by tiling."""
    img = np.random.default_rng(0).standard_normal((2, 203, 317)).astype(np.float32)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": 3 * x + 1}

    out = run_tiled(run, img, tile=64, overlap=16, multiple=8)["y"]
    assert out.shape == img.shape
    np.testing.assert_allclose(out, 3 * img + 1, rtol=1e-5, atol=1e-5)


def test_pad_to_multiple() -> None:
    a = np.arange(30, dtype=np.float32).reshape(1, 5, 6)
    p, hw = pad_to_multiple(a, 4)
    assert p.shape == (1, 8, 8) and hw == (5, 6) and np.array_equal(p[:, :5, :6], a)


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("t") / "u", seed=21, depth=2, base_width=8)


def test_no_seam_on_smooth_image(unet: Path) -> None:
    """Tiled result matches the whole-frame result; tile borders show no step."""
    be = create_backend(load_bundle(unet), "onnxruntime")
    yy, xx = np.mgrid[0:256, 0:320].astype(np.float32)
    img = (np.sin(yy / 37.0) * np.cos(xx / 53.0) + 0.3 * np.sin((xx + yy) / 71.0))[None]
    whole = be.run(img[None])["denoised"][0, 0]
    tiled = run_tiled(be.run, img, tile=128, overlap=48, multiple=4)["denoised"][0]
    rng_out = float(whole.max() - whole.min())
    diff = np.abs(tiled - whole)
    assert diff.max() / rng_out < 0.02  # agreement everywhere, borders of tiles included
    # no seam: the step across tile borders is no larger than the image's own local steps
    starts = tile_starts(320, 128, 48)
    seam_cols = sorted({s for s in starts[1:]} | {s + 128 for s in starts[:-1]})
    step = np.abs(np.diff(tiled, axis=1))
    ref_step = np.abs(np.diff(whole, axis=1))
    inner = slice(8, -8)
    for c in seam_cols:
        assert step[inner, c - 1].max() <= ref_step[inner, c - 1].max() * 1.25 + 1e-3 * rng_out
    # and the hard-seam version (no overlap, no ramp) would fail the same check
    hard = run_tiled(be.run, img, tile=128, overlap=0, multiple=4)["denoised"][0]
    hard_step = np.abs(np.diff(hard, axis=1))
    assert max(hard_step[inner, c - 1].max() - ref_step[inner, c - 1].max() for c in (128,)) > 1e-3 * rng_out
