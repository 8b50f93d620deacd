"""The learned Zernike estimator: training path, symmetries it relies on, shipped bundle on
the virtual microscope (MMCore)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smartscope.controllers.ao import MARECHAL_RAD, residual_rms_rad
from smartscope.engines.bundle import load_bundle
from smartscope.engines.networks.ao_outputs import MODES
from smartscope.models import shipped_bundle
from smartscope.models.ao.data import DIVERSITY_RAD, INPUT_PX, center_windows, single_image_set
from smartscope.models.ao.stage import LearnedZernikeEstimator, biased
from smartscope.models.ao.train import dihedral, train_bundle
from smartscope.scenarios.ao import random_aberration
from smartscope.simulators.harness import AberratedMirror
from smartscope.simulators.optics import Optics, psf_2d

BUNDLE = shipped_bundle("ao-zernike-small")
OPTICS = Optics(na=1.4, n_immersion=1.518, wavelength_nm=670, pixel_size_um=0.1)


@pytest.fixture(scope="module")
def beads_core() -> Iterator[Any]:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from smartscope.simulators import virtual_config_path

    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))
    core.setProperty("Camera", "Scenario", "beads")
    core.setProperty("Camera", "SensorSize", "128")
    core.setProperty("Camera", "Seed", "7")  # not a training seed
    core.setProperty("Camera", "Pacing", "AsFastAsPossible")
    core.setExposure(50)
    yield core
    core.unloadAllDevices()


def _aberration(seed: int) -> np.ndarray:
    a = np.zeros(11)
    a[3:11] = np.random.default_rng(seed).normal(size=8) * 0.4
    return a


def _psf(c: np.ndarray, diversity: float) -> np.ndarray:
    cd = c.copy()
    cd[3] += diversity
    return psf_2d(OPTICS, 33, cd)


def test_bundle_manifest_declares_the_modes_and_held_out_errors() -> None:
    b = load_bundle(BUNDLE)
    m = b.manifest
    assert m.task == "aberration"
    assert m.inputs[0].channels == ["defocus_plus"]
    assert m.outputs[0].channels == [f"Z{j}" for j in MODES]
    assert m.architecture is not None and m.architecture.name == "zernike_cnn"
    assert m.metrics["heldout_one_step_rms_error_rad"] < 0.5 * m.metrics["heldout_rms_aberration_rad"]
    assert m.metrics["closed_loop_3_steps_below_marechal"] >= 0.9


def test_three_one_image_steps_correct_a_1_rad_aberration(beads_core: Any) -> None:
    est = LearnedZernikeEstimator(BUNDLE)
    try:
        a = random_aberration(4242, (1.0, 1.0))
        h = AberratedMirror(beads_core, a)
        c1 = est.correct(h, steps=1)
        assert h.images == 1
        assert residual_rms_rad(h.total(c1)) < 0.7 * residual_rms_rad(a)
        c3 = est.correct(h, start_rad=c1, steps=2)
        assert h.images == 3
        assert residual_rms_rad(h.total(c3)) < MARECHAL_RAD
    finally:
        est.close()


def test_no_beads_is_a_clear_error() -> None:
    est = LearnedZernikeEstimator(BUNDLE)
    try:
        with pytest.raises(ValueError, match="no beads"):
            est.estimate(np.full((64, 64), 100, np.uint16))
    finally:
        est.close()


def test_the_bias_is_added_to_the_defocus_mode() -> None:
    c = biased(np.array([0.0, 0.0, 0.0, 0.3, 0.1]))
    assert c.size == 11 and c[3] == pytest.approx(0.3 + DIVERSITY_RAD) and c[4] == 0.1


@pytest.mark.parametrize(
    ("flip_x", "flip_y", "transpose"),
    [(True, False, False), (False, True, False), (False, False, True), (True, True, True)],
)
def test_crop_symmetries_map_to_the_modes_training_claims(
    flip_x: bool, flip_y: bool, transpose: bool
) -> None:
    """The training augmentation's mode signs and swaps: a flipped or transposed image of
    the simulator's PSF is the image of the transformed aberration."""
    a = _aberration(3)
    x, y = dihedral(
        _psf(a, DIVERSITY_RAD)[None, None], a[None, 3:11].astype(np.float32), flip_x, flip_y, transpose
    )
    b = np.zeros(11)
    b[3:11] = y[0]
    assert not np.allclose(y[0], a[3:11])  # the transformation does change the modes
    np.testing.assert_allclose(x[0, 0], _psf(b, DIVERSITY_RAD), atol=1e-6 * float(x.max()))


def test_the_minus_bias_image_turned_is_a_plus_bias_image_of_the_negated_wavefront() -> None:
    """What :func:`single_image_set` relies on to use the −δ images as training samples."""
    a = _aberration(5)
    stack = np.stack([_psf(a, 0.0), _psf(a, DIVERSITY_RAD), _psf(a, -DIVERSITY_RAD)])[None]
    xs, ys = single_image_set(stack, a[None, 3:11])
    np.testing.assert_allclose(xs[0], _psf(a, DIVERSITY_RAD))
    np.testing.assert_allclose(xs[1], _psf(-a, DIVERSITY_RAD), atol=1e-6 * float(xs.max()))
    np.testing.assert_allclose(ys[1], -a[3:11])


def test_windows_are_centred_on_the_bead_and_normalised() -> None:
    crops = np.zeros((2, 32, 32), np.float32)
    crops[0, 13:16, 18:21] = 5.0  # a bead 2–3 px off-centre
    crops[1, 16, 16] = 1.0
    w = center_windows(crops)
    assert w.shape == (2, INPUT_PX, INPUT_PX)
    np.testing.assert_allclose(w.sum(axis=(1, 2)), INPUT_PX)
    grid = np.arange(INPUT_PX)
    for k in range(2):
        cy = float((w[k].sum(axis=1) * grid).sum() / w[k].sum())
        cx = float((w[k].sum(axis=0) * grid).sum() / w[k].sum())
        assert abs(cy - (INPUT_PX - 1) / 2) <= 0.5 and abs(cx - (INPUT_PX - 1) / 2) <= 0.5, (k, cy, cx)


def test_tiny_training_run_makes_a_bundle_both_backends_run(tmp_path: Path) -> None:
    """Same code path as ``smartscope train zernike``: simulated chunks (cached), training
    with the augmentations, export, the closed-loop check; the torch backend rebuilds the
    registered architecture from the bundle and agrees with ONNX Runtime."""
    from smartscope.engines.backends.torch_backend import build_torch_module
    from smartscope.engines.runtime import Engine

    out = tmp_path / "ao-tiny"
    cache = tmp_path / "cache"
    metrics = train_bundle(
        out, n_train=2, n_val=1, epochs=1, width=4, command="test", data_cache=cache, closed_loop_trials_n=1
    )
    assert sorted(p.name for p in cache.iterdir()) == ["chunk1000_n2_rms2.npz", "chunk200000_n1_rms2.npz"]
    b = load_bundle(out)
    assert b.manifest.architecture is not None and b.manifest.architecture.name == "zernike_cnn"
    assert b.manifest.metrics["heldout_one_step_rms_error_rad"] == pytest.approx(
        metrics["heldout_one_step_rms_error_rad"]
    )
    assert b.manifest.metrics["closed_loop_3_steps_trials"] == 1.0
    x = np.random.default_rng(0).random((5, 1, INPUT_PX, INPUT_PX), dtype=np.float32)
    eng = Engine.open(out, "onnxruntime")
    try:
        ort = np.asarray(next(iter(eng.backend.run(x).values())))
    finally:
        eng.close()
    import torch

    with torch.no_grad():
        ref = build_torch_module(b)(torch.from_numpy(x)).numpy()
    assert ort.shape == (5, len(MODES), 1, 1)
    np.testing.assert_allclose(ort, ref, atol=1e-4)


def test_a_bundle_for_other_inputs_is_refused_naming_the_channels(tmp_path: Path) -> None:
    from torch import nn

    from smartscope.engines.export import export_bundle

    net = nn.Sequential(nn.Conv2d(3, len(MODES), 32))
    fields = {
        "name": "old",
        "task": "aberration",
        "inputs": [{"name": "bead_crops", "channels": ["in_focus", "defocus_plus", "defocus_minus"]}],
        "outputs": [{"name": "zernike_rad", "channels": [f"Z{j}" for j in MODES]}],
        "tile": {"size_px": 32, "overlap_px": 0, "multiple_px": 8},
        "provenance": {"command": "test", "data": "none"},
    }
    export_bundle(net, tmp_path / "old", manifest_fields=fields)
    with pytest.raises(ValueError, match=r"defocus_plus.*retrain"):
        LearnedZernikeEstimator(tmp_path / "old")
