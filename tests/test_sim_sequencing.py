"""Hardware-sequenced laser power and focus on the virtual microscope, through UniMMCore.

A loaded and started property (or stage) sequence steps once per camera frame of a
sequence acquisition, at that frame's exposure start, as a TTL-triggered laser or piezo
would; the ground truth says which power / Z each frame received.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pymmcore_plus.experimental.unicore import UniMMCore

from smartscope.simulators import get_virtual_microscope, virtual_config_path
from smartscope.simulators.devices import SEQUENCE_MAX_LENGTH


@pytest.fixture
def core() -> Iterator[UniMMCore]:
    c = UniMMCore()
    c.loadSystemConfiguration(str(virtual_config_path()))
    c.setProperty("Camera", "SensorSize", "64")
    c.setProperty("Camera", "SequenceStartCost_ms", 0.0)
    yield c
    if c.isSequenceRunning():
        c.stopSequenceAcquisition()
    c.unloadAllDevices()
    del c
    gc.collect()


def acquire(core: UniMMCore, n: int) -> list[dict[str, Any]]:
    core.startSequenceAcquisition(n, 0, True)
    mds: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(mds) < n and time.monotonic() < deadline:
        if core.getRemainingImageCount():
            mds.append(dict(core.popNextImageAndMD()[1]))
        else:
            time.sleep(0.0005)
    assert len(mds) == n
    while core.isSequenceRunning():
        time.sleep(0.001)
    return mds


def test_laser_power_and_focus_declare_sequencing(core: UniMMCore) -> None:
    for laser in ("Laser405", "Laser488", "Laser561", "Laser640", "Lamp"):
        assert core.isPropertySequenceable(laser, "Power")
        assert core.getPropertySequenceMaxLength(laser, "Power") == SEQUENCE_MAX_LENGTH
    assert core.isStageSequenceable("Z")
    assert core.getStageSequenceMaxLength("Z") == SEQUENCE_MAX_LENGTH
    assert not core.isPropertySequenceable("Camera", "Exposure")
    with pytest.raises(ValueError, match="exceeds the maximum"):
        core.loadPropertySequence("Laser561", "Power", [1.0] * (SEQUENCE_MAX_LENGTH + 1))


@pytest.mark.parametrize("pacing", ["RealTime", "AsFastAsPossible"])
def test_power_sequence_steps_frame_locked(core: UniMMCore, pacing: str) -> None:
    vm = get_virtual_microscope(core)
    core.setProperty("Camera", "Pacing", pacing)
    core.setProperty("Laser561", "Power", 10.0)
    core.loadPropertySequence("Laser561", "Power", [0.0, 5.0, 0.0, 5.0, 0.0, 5.0])
    core.startPropertySequence("Laser561", "Power")
    mds = acquire(core, 10)  # longer than the sequence: it wraps (k mod len)
    truths = [vm.truth(int(md["SimFrame"])) for md in mds]
    received = [t.power_mean_mw["561"] for t in truths]
    assert received == [0.0, 5.0] * 5
    assert [t.sequenced["561"] for t in truths] == received
    assert all(t.power_constant["561"] for t in truths)  # applied at the exposure start
    assert [float(md["SimPowerMean_mW_561"]) for md in mds] == received
    # the camera saw it: dark frames (offset only) alternate with lit ones
    assert all(t.clean is not None for t in truths)
    means = [float(t.clean.mean()) for t in truths]  # type: ignore[union-attr]
    assert all(m == 0.0 for m in means[::2]) and all(m > 1.0 for m in means[1::2])
    dose = [t.dose_mj["561"] for t in truths]
    assert dose == pytest.approx([p * 10.0 * 1e-3 for p in received])


def test_sequence_restarts_at_its_first_step_and_stops(core: UniMMCore) -> None:
    vm = get_virtual_microscope(core)
    core.setProperty("Camera", "Pacing", "AsFastAsPossible")
    core.loadPropertySequence("Laser640", "Power", [1.0, 2.0, 3.0])
    core.startPropertySequence("Laser640", "Power")
    first = [vm.truth(int(md["SimFrame"])).power_mean_mw["640"] for md in acquire(core, 2)]
    core.startPropertySequence("Laser640", "Power")  # re-armed: step 0 again
    again = [vm.truth(int(md["SimFrame"])).power_mean_mw["640"] for md in acquire(core, 4)]
    assert first == [1.0, 2.0] and again == [1.0, 2.0, 3.0, 1.0]
    core.stopPropertySequence("Laser640", "Power")
    after = [vm.truth(int(md["SimFrame"])) for md in acquire(core, 3)]
    assert [t.power_mean_mw["640"] for t in after] == [1.0] * 3  # last value stays
    assert all(not t.sequenced for t in after)
    assert float(core.getProperty("Laser640", "Power")) == 1.0


def test_snaps_do_not_step_a_running_sequence(core: UniMMCore) -> None:
    vm = get_virtual_microscope(core)
    core.setProperty("Camera", "Pacing", "AsFastAsPossible")
    core.setProperty("Laser561", "Power", 7.0)
    core.loadPropertySequence("Laser561", "Power", [1.0, 2.0])
    core.startPropertySequence("Laser561", "Power")
    core.snapImage()
    assert vm.truth(vm.frame - 1).power_mean_mw["561"] == 7.0
    got = [vm.truth(int(md["SimFrame"])).power_mean_mw["561"] for md in acquire(core, 2)]
    assert got == [1.0, 2.0]


def test_z_sequence_steps_focus_per_frame(core: UniMMCore) -> None:
    vm = get_virtual_microscope(core)
    core.setProperty("Camera", "Scenario", "beads")
    zs = [-0.6, -0.3, 0.0, 0.3, 0.6]
    core.loadStageSequence("Z", zs)
    core.startStageSequence("Z")
    mds = acquire(core, 5)
    core.stopStageSequence("Z")
    truths = [vm.truth(int(md["SimFrame"])) for md in mds]
    assert [t.z_um for t in truths] == zs
    assert [t.sequenced["z"] for t in truths] == zs
    assert [float(md["SimZ_um"]) for md in mds] == zs
    # the beads are sharpest in the middle of the stack
    peaks = [float(t.clean.max()) for t in truths]  # type: ignore[union-attr]
    assert int(np.argmax(peaks)) == 2 and peaks[0] < 0.7 * peaks[2] and peaks[4] < 0.7 * peaks[2]


def test_bad_sequences_are_refused_with_the_target(core: UniMMCore) -> None:
    vm = get_virtual_microscope(core)
    with pytest.raises(ValueError, match=r"'561'.*>= 0"):
        vm.load_sequence("561", [1.0, -1.0])
    with pytest.raises(ValueError, match=r"'z'.*±1000"):
        vm.load_sequence("z", [0.0, 5000.0])
    with pytest.raises(ValueError, match="sequence target"):
        vm.load_sequence("999", [1.0])
    with pytest.raises(RuntimeError, match="no sequence loaded for '488'"):
        vm.start_sequence("488")
