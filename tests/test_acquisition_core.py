"""The acquisition core on real cores: slow camera starts, storage off the acquisition
thread with a memory budget, and live actions attributed by timestamps."""

from __future__ import annotations

import gc
import itertools
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from pymmcore_plus import CMMCorePlus
from pymmcore_plus.seq_tester import decode_image

from smartscope import runner
from smartscope.actions import ActionRequest, SetLaserPower, SetLaserSequence, SetZ
from smartscope.config import validate_config
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.frame import Frame, now_s
from smartscope.runner import run
from smartscope.scenarios.base import virtual_cfg_file, virtual_lights
from smartscope.storage import RunFolder, count_pages, read_jsonl
from tests.conftest import ADAPTERS, DATA, LASERS, cfg_dict


def _driver(cfg, core, cls=PymmcorePlusDriver):  # type: ignore[no-untyped-def]
    return cls(cfg.microscope, cfg.acquisition, cfg.safe_state, core=core)


# ------------------------------------------------------------------ watchdog


class _SlowStart(PymmcorePlusDriver):
    """A camera that takes ``start_s`` to arm its sequence, as sCMOS cameras do (100 ms – 1 s)."""

    start_s = 1.0

    def _do_start_sequence(self, n: int | None) -> None:
        time.sleep(self.start_s)
        super()._do_start_sequence(n)


def test_a_camera_slow_to_start_is_not_a_stall(demo_core, tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            acquisition={"exposure_ms": 2.0, "n_frames": 40},
            watchdog={"camera_stall_s": 0.3},  # shorter than the start: the old watchdog faulted here
        )
    )
    res = run(cfg, driver=_driver(cfg, demo_core, _SlowStart), report=False)
    assert res.status == "completed", res.reason
    assert res.metrics["frames_stored"] == 40


def test_a_camera_that_never_starts_is_named(demo_core, tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            acquisition={"exposure_ms": 2.0, "n_frames": 40},
            watchdog={"camera_stall_s": 0.3, "camera_start_s": 0.4},
        )
    )
    res = run(cfg, driver=_driver(cfg, demo_core, _SlowStart), report=False)
    assert res.status == "failed"
    assert "camera stalled" in res.reason and "since the camera was started" in res.reason


# ------------------------------------------------------------------ storage


class _SlowDisk(RunFolder):
    """A disk that takes ``delay_s`` per raw frame (a busy NAS, a throttled drive)."""

    delay_s = 0.02

    def write_raw(self, frames: Sequence[Frame]) -> None:
        time.sleep(self.delay_s * len(frames))
        super().write_raw(frames)


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_SlowDisk]]:
    monkeypatch.setattr(runner, "RunFolder", _SlowDisk)
    yield _SlowDisk


def _dequeue_gaps_ms(run_dir: Path) -> list[float]:
    frames = read_jsonl(run_dir / "frames.jsonl")
    deq = [f["times"]["dequeued"] for f in frames]
    return [1e3 * (b - a) for a, b in itertools.pairwise(deq)]


def test_a_slow_disk_never_slows_the_acquisition_thread(demo_core, slow_disk, tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            acquisition={"exposure_ms": 2.0, "n_frames": 150},
            pipeline={"stages": [{"kind": "identity"}]},
            storage={"queue_mb": 512},
        )
    )
    res = run(cfg, driver=_driver(cfg, demo_core), report=False)
    assert res.status == "completed", res.reason
    m = res.metrics
    assert m["frames_stored"] == m["frames_acquired"] == 150
    # frames came off the camera faster than the disk could take them: an acquisition thread
    # that waited on the disk could not dequeue 150 frames in less than the disk's 150 x 20 ms
    # (judged against the disk's own time, not a wall-clock bound the machine's load moves)
    dequeue_span_ms = sum(_dequeue_gaps_ms(Path(res.run_dir)))
    assert dequeue_span_ms < 0.9 * 1e3 * slow_disk.delay_s * 150, dequeue_span_ms
    assert m["storage_queue_peak_mb"] > 1.0  # the queue absorbed the slow disk
    n, shape, _ = count_pages(Path(res.run_dir) / "raw.ome.tif")
    assert n == 150 and shape == (512, 512)


def test_a_full_writer_queue_ends_the_run_safely_with_every_frame_written(
    laser_core, slow_disk, tmp_path: Path
) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
            acquisition={"exposure_ms": 1.0, "n_frames": 2000, "lasers_mw": {"488": 5.0}},
            pipeline={"stages": [{"kind": "identity"}]},
            storage={"queue_mb": 16},  # 32 frames of 512² at 2 bytes
        )
    )
    res = run(cfg, driver=_driver(cfg, laser_core), report=False)
    m = res.metrics
    assert res.status == "failed" and "writer queue" in res.reason and "queue_mb" in res.reason
    assert float(laser_core.getProperty("Laser488", "Voltage")) == 0.0  # safe state
    # nothing taken off the camera was dropped: every frame acquired is on disk and logged
    assert m["frames_acquired"] == m["frames_stored"] < 2000
    assert m["frames_not_stored"] == 0
    run_dir = Path(res.run_dir)
    assert (
        count_pages(run_dir / "raw.ome.tif")[0]
        == m["frames_stored"]
        == len(read_jsonl(run_dir / "frames.jsonl"))
    )
    assert m["frames_analysed"] + m["frames_skipped"] + m["frames_failed"] == m["frames_stored"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "queue" in metrics["reason"]
    events = [e["event"] for e in read_jsonl(run_dir / "events.jsonl")]
    assert "fault" in events and "safe_state" in events


def test_wait_policy_lets_the_acquisition_wait_for_the_disk(demo_core, slow_disk, tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            acquisition={"exposure_ms": 2.0, "n_frames": 120},
            pipeline={"stages": [{"kind": "identity"}]},
            storage={"queue_mb": 16, "on_queue_full": "wait"},
        )
    )
    res = run(cfg, driver=_driver(cfg, demo_core), report=False)
    assert res.status == "completed", res.reason
    assert res.metrics["frames_stored"] == 120
    assert res.metrics["storage_queue_peak_mb"] <= 16 + 0.6  # one frame over at most


# --------------------------------------------------------------- live actions


@pytest.fixture
def seq_tester_z() -> Iterator[CMMCorePlus]:
    """SequenceTester camera and Z stage: each image encodes the Z position it was made at."""
    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([ADAPTERS])
    core.loadDevice("THub", "SequenceTester", "THub")
    core.initializeDevice("THub")
    for label in ("TCamera", "TZStage"):
        core.loadDevice(label, "SequenceTester", label)
        core.setParentLabel(label, "THub")
    core.setProperty("TCamera", "ImageMode", "MachineReadable")
    core.setProperty("TCamera", "ImageWidth", 64)
    core.setProperty("TCamera", "ImageHeight", 64)
    core.initializeDevice("TCamera")
    core.initializeDevice("TZStage")
    core.setCameraDevice("TCamera")
    core.setFocusDevice("TZStage")
    yield core
    if core.isSequenceRunning():
        core.stopSequenceAcquisition()
    core.unloadAllDevices()
    del core
    gc.collect()


class _MoveZAt(ControllerBase):
    name = "move_z"

    def __init__(self, at: int, z_um: float) -> None:
        self.at, self.z_um, self.done = at, z_um, False

    def update(self, obs: Observation) -> list[ActionRequest]:
        if self.done or obs.frame.index < self.at:
            return []
        self.done = True
        return [self.ask(SetZ(z_um=self.z_um), "test: move focus", obs)]


def _decoded(run_dir: Path) -> list[tuple[Any, int]]:
    """(Z position, camera frame number) each stored image encodes."""
    out = []
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        for page in tif.pages:
            info = decode_image(page.asarray())  # type: ignore[union-attr]
            (z,) = [
                s.value for s in info.current_state if (s.device, s.property) == ("TZStage", "ZPositionUm")
            ]
            out.append((z, info.camera_info.frame_num))
    return out


@pytest.mark.parametrize("mode", ["live", "exact"])
def test_focus_moves_with_the_stream_running_and_frames_say_which_had_it(
    seq_tester_z, tmp_path: Path, mode: str
) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"focus": "TZStage"},
            # SequenceTester is not paced: enough frames that the camera is still going when the
            # request (from the first analysed frame) is applied
            acquisition={"exposure_ms": 1.0, "n_frames": 20_000, "apply_mode": mode},
            pipeline={"stages": [{"kind": "identity"}]},
        )
    )
    res = run(cfg, driver=_driver(cfg, seq_tester_z), controllers=[_MoveZAt(0, 3.0)], report=False)
    assert res.status == "completed", res.reason
    run_dir = Path(res.run_dir)
    (rec,) = read_jsonl(run_dir / "actions.jsonl")
    first = rec["first_frame_index"]
    assert first is not None and 0 < first < 20_000
    frames = read_jsonl(run_dir / "frames.jsonl")
    decoded = _decoded(run_dir)
    assert len(decoded) == len(frames) == 20_000
    for f, (z, _) in zip(frames, decoded, strict=True):
        if f.get("transition"):
            continue  # exposed across the move: either position, never evidence
        claimed = f["state"].get("z_um")
        assert (z == 3.0) == (claimed == 3.0), (f["index"], z, claimed)
    assert decoded[first][0] == 3.0 and all(z == 3.0 for z, _ in decoded[first:])
    assert decoded[0][0] != 3.0
    frame_nums = [n for _, n in decoded]
    restarted = any(b != a + 1 for a, b in itertools.pairwise(frame_nums))
    # live: the camera's sequence ran on through the move; exact: it was stopped and restarted
    assert restarted == (mode == "exact")
    transitions = sum(bool(f.get("transition")) for f in frames)
    assert (transitions > 0) == (mode == "live")


def test_smartscope_run_holds_a_2048_sensor(tmp_path: Path) -> None:
    """The sCMOS size through the CLI, demo camera at 10 ms: no stall, every frame on disk."""
    import subprocess
    import sys

    import yaml

    cfg = cfg_dict(
        tmp_path,
        microscope={
            "startup": [
                {"device": "Camera", "property": "OnCameraCCDXSize", "value": 2048},
                {"device": "Camera", "property": "OnCameraCCDYSize", "value": 2048},
            ],
            "buffer_size_mb": 2048,
        },
        acquisition={"exposure_ms": 10.0, "n_frames": 100},
        pipeline={"stages": [{"kind": "stats"}]},
        watchdog={"camera_start_s": 60.0},  # a loaded CI machine may take seconds to start 2048²
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "smartscope.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "completed" and m["frames_stored"] == 100
    n, shape, _ = count_pages(run_dir / "raw.ome.tif")
    assert n == 100 and shape == (2048, 2048)
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape == (100, 2048, 2048)
        assert np.asarray(tif.pages[99].asarray()).std() > 0  # type: ignore[union-attr]


# ------------------------------------------------------- hardware-sequenced laser power


class _ArmSequence(ControllerBase):
    """Arms a 561 nm schedule at the first analysed frame, then (optionally) ends it with a
    plain power ``end_after`` frames later."""

    name = "pulse561"

    def __init__(self, powers: tuple[float, ...], end_after: int | None = None, end_mw: float = 2.0) -> None:
        self.powers, self.end_after, self.end_mw = powers, end_after, end_mw
        self.armed_at: int | None = None
        self.ended = False

    def update(self, obs: Observation) -> list[ActionRequest]:
        if self.armed_at is None:
            self.armed_at = obs.frame.index
            return [self.ask(SetLaserSequence(laser="561", powers_mw=self.powers), "test: pulse 561", obs)]
        if (
            self.end_after is not None
            and not self.ended
            and obs.frame.index >= self.armed_at + self.end_after
        ):
            self.ended = True
            return [self.ask(SetLaserPower(laser="561", power_mw=self.end_mw), "test: end the pulses", obs)]
        return []


def _virtual_cfg(tmp_path: Path, **sections: Any) -> Any:
    """The virtual microscope at 64², real time, with its sequenceable 561 nm laser."""
    cfg_file = virtual_cfg_file(
        tmp_path / "virtual.cfg", "cells", 0, 64, "RealTime", 0.0, 10.0, powers_mw={"561": 1.0}
    )
    microscope = {
        "config_file": str(cfg_file),
        "camera": "Camera",
        "lasers": {
            **virtual_lights(),
            "561": {"device": "Laser561", "wavelength_nm": 561, "max_power_mw": 50},
        },
    }
    return validate_config({"microscope": microscope, **sections})


def _virtual_run(tmp_path: Path, controllers: Sequence[ControllerBase], seconds: float = 3.0) -> Any:
    cfg = _virtual_cfg(
        tmp_path,
        acquisition={"exposure_ms": 10.0, "duration_s": seconds, "lasers_mw": {"561": 1.0}},
        pipeline={"stages": [{"kind": "identity"}]},
        limits={"laser_max_mw": {"561": 8.0}},
        storage={"root": str(tmp_path), "name": "seq"},
    )
    return run(cfg, report=False, controllers=list(controllers))


def test_a_laser_schedule_runs_frame_locked_and_every_frame_says_the_power_it_received(
    tmp_path: Path,
) -> None:
    """``SetLaserSequence`` on the virtual microscope's sequenceable 561 nm power: after one
    camera restart the hardware steps the schedule with every frame; the simulator's ground
    truth (the mean power during each exposure) matches what each frame records, the peak
    above the 8 mW limit is clamped, and a plain power afterwards ends the schedule."""
    ctl = _ArmSequence((0.0, 5.0, 12.0), end_after=60)
    res = _virtual_run(tmp_path, [ctl])
    assert res.status == "completed", res.reason
    run_dir = Path(res.run_dir)
    recs = read_jsonl(run_dir / "actions.jsonl")
    seq = next(r for r in recs if r["applied"] and r["applied"]["kind"] == "laser_sequence")
    assert seq["verdict"] == "clamped" and tuple(seq["applied"]["powers_mw"]) == (0.0, 5.0, 8.0)
    first = seq["first_frame_index"]
    end = next(r for r in recs if r["applied"] and r["applied"]["kind"] == "laser_power")
    frames = read_jsonl(run_dir / "frames.jsonl")
    claimed = [f["state"]["lasers"]["561"] for f in frames]
    truth = [float(f["mm"]["SimPowerMean_mW_561"]) for f in frames]
    assert claimed == pytest.approx(truth, abs=1e-6)  # not one frame claims a power it did not get
    assert not any(f.get("transition") for f in frames)  # arming and ending restart the camera
    pulsed = truth[first : end["first_frame_index"]]
    assert len(pulsed) >= 30
    assert pulsed == pytest.approx([(0.0, 5.0, 8.0)[k % 3] for k in range(len(pulsed))])
    assert set(truth[end["first_frame_index"] :]) == {2.0}


def test_a_schedule_the_device_cannot_hold_is_refused_by_the_driver(tmp_path: Path) -> None:
    from smartscope.simulators.devices import SEQUENCE_MAX_LENGTH

    res = _virtual_run(tmp_path, [_ArmSequence((1.0, 2.0) * SEQUENCE_MAX_LENGTH)], seconds=1.0)
    assert res.status == "completed", res.reason
    (rec,) = [
        r for r in read_jsonl(Path(res.run_dir) / "actions.jsonl") if r["request"]["source"] == "pulse561"
    ]
    assert rec["verdict"] == "failed" and "holds at most" in rec["note"], rec
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    assert {f["state"]["lasers"]["561"] for f in frames} == {1.0}
    assert {float(f["mm"]["SimPowerMean_mW_561"]) for f in frames} == {1.0}


def test_the_safe_state_stops_a_running_schedule(tmp_path: Path) -> None:
    """A fault while a schedule runs: the sequence is stopped before the power goes to 0,
    so no frame exposed after the safe state steps the laser back on."""
    cfg = _virtual_cfg(tmp_path, acquisition={"exposure_ms": 10.0, "n_frames": 400})
    drv = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state)
    drv.start(400)
    res = drv.apply([SetLaserSequence(laser="561", powers_mw=(5.0, 6.0))])
    assert res.first_frame_index is not None and res.restarted

    def frames(n: int) -> list[Frame]:
        got = [drv.next_frame(2.0) for _ in range(n)]
        return [f for f in got if f is not None]

    armed = [f for f in frames(res.first_frame_index + 6) if f.index >= res.first_frame_index]
    assert [f.state.lasers["561"] for f in armed] == [5.0, 6.0, 5.0, 6.0, 5.0, 6.0][: len(armed)]
    assert len(armed) >= 4
    drv.safe_state()
    t_safe = now_s()
    assert float(drv.core.getProperty("Laser561", "Power")) == 0.0
    later: list[Frame] = []
    deadline = time.monotonic() + 20
    while len(later) < 3 and time.monotonic() < deadline:  # frames exposed after the safe state
        later += [f for f in frames(5) if float(f.metadata["mm"]["ExposureStart_s"]) > t_safe]
    drv.close()
    assert len(later) >= 3
    assert [float(f.metadata["mm"]["SimPowerMean_mW_561"]) for f in later] == [0.0] * len(later)
