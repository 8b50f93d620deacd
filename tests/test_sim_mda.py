"""pymmcore-plus's own MDA runner on virtual_microscope.cfg, with no smartscope loop involved:
positions × z × channels × time deliver every frame at the right position, focus and light.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import useq
from pymmcore_plus.experimental.unicore import UniMMCore

from smartscope.simulators import get_virtual_microscope, virtual_config_path
from smartscope.simulators.microscope import FrameTruth

SOURCE = {"405": "405", "488": "488", "561": "561", "640": "640", "BF": "lamp"}


@pytest.fixture
def core() -> Iterator[UniMMCore]:
    c = UniMMCore()
    c.loadSystemConfiguration(str(virtual_config_path()))
    c.setProperty("Camera", "SensorSize", "64")
    yield c
    c.unloadAllDevices()
    del c
    gc.collect()


def run_mda(core: UniMMCore, seq: useq.MDASequence) -> list[tuple[np.ndarray, useq.MDAEvent, FrameTruth]]:
    """Run the plan; each frame with its event and the simulator's truth (taken as it arrives)."""
    vm = get_virtual_microscope(core)
    got: list[tuple[np.ndarray, useq.MDAEvent, FrameTruth]] = []

    def on_frame(img: np.ndarray, ev: useq.MDAEvent, meta: dict[str, Any]) -> None:
        md = meta.get("camera_metadata")
        if meta.get("hardware_triggered"):  # a sequence: the camera's metadata names the frame
            assert md is not None
            truth = vm.truth(int(md["SimFrame"]))
            assert md["SimStageX_um"] == f"{truth.stage_x_um:.4f}"
        else:  # snapImage images carry no metadata: the frame just snapped is the latest
            truth = vm.truth(vm.frame - 1)
        got.append((np.array(img), ev, dataclasses.replace(truth)))  # keeps its clean image

    core.mda.events.frameReady.connect(on_frame)
    core.mda.run(seq)
    return got


@pytest.mark.parametrize(
    ("pacing", "hardware_sequencing"),
    [("AsFastAsPossible", True), ("AsFastAsPossible", False), ("RealTime", True)],
)
def test_positions_z_channels_time_through_the_mda_runner(
    core: UniMMCore, pacing: str, hardware_sequencing: bool
) -> None:
    core.setProperty("Camera", "Pacing", pacing)
    core.mda.engine.use_hardware_sequencing = hardware_sequencing  # type: ignore[union-attr]
    seq = useq.MDASequence(
        stage_positions=[(0.0, 0.0, 0.0), (20.0, 5.0, 0.0), (-30.0, 40.0, 0.5)],
        z_plan=useq.ZRangeAround(range=2.0, step=1.0),
        channels=["488", "561"],
        time_plan=useq.TIntervalLoops(interval=0, loops=2),
        axis_order="tpgcz",
    )
    frames = run_mda(core, seq)
    assert [ev.index for _, ev, _ in frames] == [ev.index for ev in seq]
    sequenced = 0
    for img, ev, truth in frames:
        assert ev.x_pos is not None and ev.y_pos is not None and ev.z_pos is not None
        assert (truth.stage_x_um, truth.stage_y_um) == pytest.approx((ev.x_pos, ev.y_pos))
        assert truth.z_um == pytest.approx(ev.z_pos)
        assert truth.defocus_um == pytest.approx(-ev.z_pos, abs=0.006)  # no drift: defocus = −Z
        assert ev.channel is not None
        lit = {k: v for k, v in truth.power_mean_mw.items() if v > 0}
        assert lit == {SOURCE[ev.channel.config]: 10.0}
        assert img.shape == (64, 64) and truth.clean is not None
        sequenced += bool(truth.sequenced)
        if pacing == "RealTime":
            assert truth.exposure_end_s - truth.exposure_start_s == pytest.approx(0.010, abs=1e-6)
    # the engine ran each position's c × z block as one hardware-triggered sequence
    assert (sequenced == len(frames)) is hardware_sequencing
    by_index = {tuple(sorted(ev.index.items())): truth for _, ev, truth in frames}

    def clean(t: int, p: int, c: int, z: int) -> np.ndarray:
        tr = by_index[(("c", c), ("p", p), ("t", t), ("z", z))]
        assert tr.clean is not None
        return tr.clean.astype(np.float64).ravel()

    # each position sees its own cells; the same position looks the same at the next time point
    same = np.corrcoef(clean(0, 1, 1, 1), clean(1, 1, 1, 1))[0, 1]
    other = np.corrcoef(clean(0, 0, 1, 1), clean(0, 1, 1, 1))[0, 1]
    assert same > 0.98 and other < 0.6
    # and the z-plan goes through focus: the in-focus plane is the sharpest
    sharp = [float(np.abs(np.diff(clean(0, 0, 1, z).reshape(64, 64), axis=1)).mean()) for z in range(3)]
    assert sharp[1] > 1.2 * max(sharp[0], sharp[2])
