"""The shipped learned Zernike estimator bundle on the virtual microscope (MMCore)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from smartscope.config import ModalAOConfig
from smartscope.controllers.ao import MARECHAL_RAD, modal_correct, residual_rms_rad
from smartscope.engines.bundle import load_bundle
from smartscope.models import shipped_bundle
from smartscope.models.ao.data import MODES
from smartscope.models.ao.stage import LearnedZernikeEstimator
from smartscope.scenarios.ao import random_aberration
from smartscope.simulators.harness import AberratedMirror

BUNDLE = shipped_bundle("ao-zernike-small")


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


def test_bundle_manifest_declares_the_modes_and_held_out_error() -> None:
    b = load_bundle(BUNDLE)
    assert b.manifest.task == "aberration"
    assert b.manifest.outputs[0].channels == [f"Z{j}" for j in MODES]
    assert (
        b.manifest.metrics["heldout_rms_error_rad"] < 0.5 * b.manifest.metrics["heldout_rms_aberration_rad"]
    )


def test_one_step_correction_then_modal_refinement(beads_core: Any) -> None:
    est = LearnedZernikeEstimator(BUNDLE)
    try:
        a = random_aberration(4242, (1.0, 1.0))
        h = AberratedMirror(beads_core, a)
        c1 = est.correct(h)
        assert h.images == 3
        one_step = residual_rms_rad(h.total(c1))
        assert one_step < 0.5 * residual_rms_rad(a)
        ref = modal_correct(h, ModalAOConfig(bias_rad=0.5, passes=2), start_rad=c1)
        assert residual_rms_rad(h.total(ref.correction_rad)) < MARECHAL_RAD
    finally:
        est.close()


def test_no_beads_is_a_clear_error() -> None:
    est = LearnedZernikeEstimator(BUNDLE)
    try:
        flat = np.full((64, 64), 100, np.uint16)
        with pytest.raises(ValueError, match="no beads"):
            est.estimate([flat, flat, flat])
    finally:
        est.close()
