"""Sensorless modal AO on the virtual microscope: residual wavefront vs the known aberration."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smartscope.config import AOScenario, ModalAOConfig
from smartscope.controllers.ao import (
    MARECHAL_RAD,
    image_metric,
    log_parabola_optimum,
    modal_correct,
    residual_rms_rad,
)
from smartscope.scenarios import ao
from smartscope.simulators.harness import AberratedMirror
from smartscope.simulators.optics import Optics, strehl_ratio


@pytest.fixture
def beads_core() -> Iterator[Any]:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from smartscope.simulators import virtual_config_path

    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))
    core.setProperty("Camera", "Scenario", "beads")
    core.setProperty("Camera", "SensorSize", "128")
    core.setProperty("Camera", "Pacing", "AsFastAsPossible")
    core.setExposure(50)
    yield core
    core.unloadAllDevices()


def test_log_parabola_recovers_a_gaussian_optimum() -> None:
    x0, w = 0.37, 1.3
    m = [math.exp(-(((b - x0) / w) ** 2)) for b in (-0.8, 0.0, 0.8)]
    assert log_parabola_optimum(0.8, m[0], m[1], m[2], max_step=5.0) == pytest.approx(x0, abs=1e-9)
    # step bounded; non-concave samples go to the best sample
    assert log_parabola_optimum(0.8, m[0], m[1], m[2], max_step=0.1) == pytest.approx(0.1)
    assert log_parabola_optimum(1.0, 1.0, 0.5, 2.0, max_step=5.0) == 1.0


def test_metric_peaks_at_a_flat_wavefront(beads_core: Any) -> None:
    h = AberratedMirror(beads_core, [0.0] * 11)
    vals = []
    for amp in (-1.0, 0.0, 1.0):
        c = np.zeros(11)
        c[5] = amp  # Noll 6
        vals.append(image_metric(h(c)))
    assert vals[1] > vals[0] and vals[1] > vals[2]


def test_modal_ao_corrects_a_single_mode_below_marechal(beads_core: Any) -> None:
    a = np.zeros(11)
    a[6] = 1.0  # 1 rad RMS of coma (Noll 7)
    h = AberratedMirror(beads_core, a)
    cfg = ModalAOConfig()
    res = modal_correct(h, cfg)
    total = h.total(res.correction_rad)
    assert residual_rms_rad(total) < MARECHAL_RAD < residual_rms_rad(a)
    optics = Optics(na=1.4, n_immersion=1.518, wavelength_nm=670, pixel_size_um=0.1)
    assert strehl_ratio(optics, total) > 0.8 > strehl_ratio(optics, a)
    # passes of 2N+1 images, plus one image per backtrack (an update that made it worse)
    assert res.images == h.images
    n = cfg.passes * cfg.images_per_pass()
    assert n <= res.images <= n + cfg.max_backtracks * (cfg.passes - 1)
    assert np.all(np.abs(total) <= cfg.stroke_rad)


def test_stroke_limit_is_respected(beads_core: Any) -> None:
    a = np.zeros(11)
    a[4] = 1.0
    h = AberratedMirror(beads_core, a)
    cfg = ModalAOConfig(passes=1, stroke_rad=1.2, bias_rad=1.0, base_rad=tuple(a))
    res = modal_correct(h, cfg)
    assert np.all(np.abs(a + res.correction_rad) <= 1.2 + 1e-9)


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="bias_rad"):
        ModalAOConfig(bias_rad=4.0, stroke_rad=3.0)
    with pytest.raises(ValueError, match="modes"):
        ModalAOConfig(modes=(4, 4))


def test_live_loop_modal_ao_through_setmirror(tmp_path: Path) -> None:
    """The controller in the real loop: probes via SetMirror, waits for frames with them."""
    a = np.zeros(11)
    a[4] = 1.0  # astigmatism, Noll 5
    r = ao.run(AOScenario(aberration_rad=tuple(a.tolist()), ao={"passes": 2}), tmp_path)
    assert residual_rms_rad(r.final_rad) < MARECHAL_RAD
    n = ModalAOConfig().images_per_pass()
    assert 2 * n <= r.images <= 2 * n + ModalAOConfig().max_backtracks
    actions = [json.loads(x) for x in (Path(r.run_dir) / "actions.jsonl").read_text().splitlines()]
    assert all(x["request"]["action"]["kind"] == "mirror" for x in actions)
    assert any("metric" in x["request"]["evidence"] for x in actions)
