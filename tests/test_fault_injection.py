"""Fault injection: whatever fails and whenever, the same invariants hold afterwards.

After every fault: the lasers are off, every stored frame is readable and logged,
``stored = analysed + skipped + failed``, the audit log has one final line per request, and
``metrics.json`` names what happened. Faults: a driver error at each of its calls, a camera
that stalls or never starts, kill -9 and SIGTERM/SIGHUP/double Ctrl-C at random moments, a
full disk, an apply that blocks while a fault comes, camera changes mid-run, a flood of
remote commands; and the safe state's latch: a fault during a batch applied behind a camera
that takes 1 s to stop and 1 s to start, the next channel preset of a multi-channel
time-lapse, a stop signal during start-up and while the run closes.

Every case runs against both drivers (``DRIVERS``: pymmcore-plus's core and pycromanager's
headless core, each on a real .cfg) through the ``rig`` fixture. Every case that writes frames
through a fault runs on each storage axis too (``storage``): OME-TIFF with direct I/O, OME-TIFF
through the page cache, and OME-Zarr; the CLI cases (a process each) pair the axes with the
drivers instead of multiplying them, to keep the suite short.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import tifffile

from smartscope import runner
from smartscope.actions import Action, ActionRequest, SetExposure, SetLaserPower, SetProperty
from smartscope.config import validate_config
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.drivers.installation import demo_config_path
from smartscope.drivers.mmcore import MMCoreDriver
from smartscope.frame import Frame
from smartscope.runner import run
from smartscope.storage import RunFolder, count_pages, read_jsonl, recover
from smartscope.storage.direct import direct_io_refusal
from smartscope.storage.writer import MAX_BATCH_FRAMES
from tests.conftest import (
    DATA,
    DRIVERS,
    LASERS,
    PowerSampler,
    Rig,
    assert_events_typed,
    cfg_dict,
    open_rig,
    spawn_cli_run,
    start_cli_run,
)

# the storage axes: OME-TIFF written past the page cache (O_DIRECT), through it, and OME-Zarr
STORAGE = [
    pytest.param({"io": "direct"}, id="tiff-direct"),
    pytest.param({"io": "buffered"}, id="tiff-buffered"),
    pytest.param({"format": "ome-zarr"}, id="zarr"),
]


@pytest.fixture(params=STORAGE)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The storage section's ``io`` / ``format`` for one axis (direct I/O where the
    temporary folder's file system takes it)."""
    mode: dict[str, Any] = request.param
    if mode.get("io") == "direct" and (why := direct_io_refusal(tmp_path)) is not None:
        pytest.skip(f"the temporary folder refuses direct I/O ({why})")
    return mode


def _laser_cfg(
    tmp_path: Path, rig: Rig | None = None, storage: dict[str, Any] | None = None, **over: Any
) -> Any:
    sections: dict[str, Any] = {
        "microscope": rig.microscope()
        if rig is not None
        else {"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
        "acquisition": {"exposure_ms": 2.0, "n_frames": 300, "lasers_mw": {"488": 5.0}},
        "watchdog": {"camera_stall_s": 0.5, "pipeline_stall_s": 0.5, "camera_start_s": 2.0},
    }
    sections.update(over)
    cfg = cfg_dict(tmp_path, **sections)
    cfg["storage"] = {**cfg["storage"], **(storage or {})}
    return validate_config(cfg)


def _raw_name(storage: dict[str, Any]) -> str:
    return "raw.ome.zarr" if storage.get("format") == "ome-zarr" else "raw.ome.tif"


def _zarr_data(path: Path) -> Any:
    """An OME-Zarr image's planes (t-major, then c, then z), read with tensorstore."""
    import tensorstore

    store = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "0")}}
    data = tensorstore.open(store).result().read().result()
    return data.reshape(-1, *data.shape[-2:])


def _zarr_planes_with_data(path: Path) -> int:
    """Planes of an OME-Zarr image that hold a frame (the plan's gaps read as zeros)."""
    import numpy as np

    return int(np.count_nonzero(_zarr_data(path).any(axis=(1, 2))))


def check_invariants(run_dir: Path, *, all_stored: bool = True) -> dict[str, Any]:
    """What must hold after any run, however it ended."""
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] in ("completed", "stopped", "failed") and m["reason"]
    frames = read_jsonl(run_dir / "frames.jsonl")
    pages = sum(count_pages(p)[0] for p in run_dir.glob("raw*.ome.tif"))
    pages += sum(_zarr_planes_with_data(p) for p in run_dir.glob("raw*.ome.zarr"))
    assert m["frames_stored"] == len(frames) == pages, (m["frames_stored"], len(frames), pages)
    if all_stored:
        assert m["frames_stored"] == m["frames_acquired"]
        assert m["frames_analysed"] + m["frames_skipped"] + m["frames_failed"] == m["frames_stored"]
    for tif in run_dir.glob("raw*.ome.tif"):
        with tifffile.TiffFile(tif) as t:
            assert t.is_ome
            n = len(t.pages)
            if n:
                t.pages[n - 1].asarray()  # type: ignore[union-attr]
    events = [e["event"] for e in assert_events_typed(run_dir)]
    assert events[0] == "start" and events[-1] == "stop" and "safe_state" in events
    records = read_jsonl(run_dir / "actions.jsonl")
    seqs = [r["seq"] for r in records]
    assert len(seqs) == len(set(seqs)), "one final audit line per request"
    assert all(r["verdict"] in ("applied", "clamped", "refused", "failed") for r in records)
    return m


class _Wiggle(ControllerBase):
    """Asks for a new 488 nm power every few frames, so faults can land during applies."""

    name = "wiggle"

    def update(self, obs: Observation) -> list[ActionRequest]:
        if obs.frame.index % 5:
            return []
        return [self.ask(SetLaserPower(laser="488", power_mw=1.0 + obs.frame.index % 4), "fault drill", obs)]


def _failing_driver(base: type[MMCoreDriver], hook: str, after: int) -> type[MMCoreDriver]:
    """The real driver over a real core, whose ``hook`` raises on its ``after``-th call."""

    calls = {"n": 0}

    def broken(self: Any, *args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise RuntimeError(f"injected: {hook} failed")
        return getattr(base, hook)(self, *args, **kw)

    return type(f"Failing_{hook}", (base,), {hook: broken})


@pytest.mark.parametrize(
    ("hook", "after"),
    [
        ("_do_pop", 40),
        ("_do_remaining", 60),
        ("_do_is_sequence_running", 10),
        ("_do_start_sequence", 0),  # the camera never starts
        ("_do_set_exposure", 0),  # at configure: the run never starts, nothing is written
    ],
)
def test_a_driver_error_at_any_call_ends_safe(
    rig: Rig, tmp_path: Path, hook: str, after: int, storage: dict[str, Any]
) -> None:
    cfg = _laser_cfg(tmp_path, rig, storage)
    rig.set("Laser488", "Voltage", 5.0)
    cls = _failing_driver(rig.driver_cls, hook, after)
    try:
        driver = rig.make(cfg, cls)
    except Exception as exc:  # failed while configuring: nothing ran, nothing written
        assert "injected" in str(exc)
        assert rig.get("Laser488", "Voltage") == 0.0  # what the .cfg had on went off
        return
    res = run(cfg, driver=driver, controllers=[_Wiggle()], report=False)
    assert res.status == "failed" and "injected" in res.reason
    assert rig.get("Laser488", "Voltage") == 0.0
    check_invariants(Path(res.run_dir))


def test_a_failing_property_write_is_a_failed_action_not_a_lost_run(rig: Rig, tmp_path: Path) -> None:
    cfg = _laser_cfg(
        tmp_path, rig, acquisition={"exposure_ms": 2.0, "n_frames": 100, "lasers_mw": {"488": 5.0}}
    )
    driver = rig.make(cfg, _failing_driver(rig.driver_cls, "_do_set_property", 2))
    res = run(cfg, driver=driver, controllers=[_Wiggle()], report=False)
    records = read_jsonl(Path(res.run_dir) / "actions.jsonl")
    assert any(r["verdict"] == "failed" and "injected" in r["note"] for r in records)
    check_invariants(Path(res.run_dir))


def test_a_stalled_camera_ends_safe(rig: Rig, tmp_path: Path, storage: dict[str, Any]) -> None:
    class Quiet(rig.driver_cls):  # type: ignore[name-defined,misc]
        def _do_remaining(self) -> int:
            return 0 if self._delivered >= 30 else int(super()._do_remaining())

    cfg = _laser_cfg(tmp_path, rig, storage)
    rig.set("Laser488", "Voltage", 5.0)
    res = run(cfg, driver=rig.make(cfg, Quiet), report=False)
    assert "camera stalled" in res.reason
    assert rig.get("Laser488", "Voltage") == 0.0
    check_invariants(Path(res.run_dir))


# ------------------------------------------------------------ the safe state is final


class _AskOnce(ControllerBase):
    """Asks for ``actions`` (one batch) at the first analysed frame from ``at_frame`` on."""

    def __init__(self, name: str, at_frame: int, *actions: Action) -> None:
        self.name, self.at_frame, self.actions = name, at_frame, actions
        self.asked = False

    def update(self, obs: Observation) -> list[ActionRequest]:
        if self.asked or obs.frame.index < self.at_frame:
            return []
        self.asked = True
        return [self.ask(a, f"{self.name}: test", obs) for a in self.actions]


def test_a_fault_during_an_apply_cannot_turn_light_back_on(rig: Rig, tmp_path: Path) -> None:
    cfg = _laser_cfg(tmp_path, rig)
    rig.set("Laser488", "Voltage", 5.0)
    entered, release = threading.Event(), threading.Event()

    class Blocking(rig.driver_cls):  # type: ignore[name-defined,misc]
        """The laser write of an apply hangs until released (a slow serial line); a 40 "mW"
        request on a 10 V device is clamped to 10."""

        def _apply_one(self, action: Any, state: Any) -> Any:
            if isinstance(action, SetLaserPower) and action.power_mw >= 9.0:
                entered.set()
                release.wait(20)
            return super()._apply_one(action, state)

    driver = rig.make(cfg, Blocking)
    result: dict[str, Any] = {}

    def go() -> None:
        result["res"] = run(
            cfg,
            driver=driver,
            controllers=[_AskOnce("ask_for_light", 5, SetLaserPower(laser="488", power_mw=40.0))],
            report=False,
        )

    t = threading.Thread(target=go)
    t.start()
    assert entered.wait(20), "the apply never started"
    # the acquisition thread is stuck in the apply: no frames, so the watchdog faults
    deadline = time.monotonic() + 10
    runs = list((tmp_path / "runs").iterdir())
    while time.monotonic() < deadline:
        events = [e["event"] for e in read_jsonl(runs[0] / "events.jsonl")]
        if "fault" in events:
            break
        time.sleep(0.05)
    assert rig.get("Laser488", "Voltage") == 0.0  # safe state on at once
    release.set()  # now the stuck apply would write its 10 V ...
    t.join(30)
    res = result["res"]
    assert res.status == "failed" and "camera stalled" in res.reason
    assert rig.get("Laser488", "Voltage") == 0.0  # ... but the latch refused it
    whys = [
        e.get("why", "") for e in read_jsonl(Path(res.run_dir) / "events.jsonl") if e["event"] == "safe_state"
    ]
    assert any("re-applied after it" in w for w in whys)
    check_invariants(Path(res.run_dir))


# --------------------------------------------------------------- signals and kill -9


@pytest.mark.parametrize(  # each signal on one storage axis and one driver (a CLI run each)
    ("signals", "seed", "driver", "storage"),
    [
        pytest.param(("SIGTERM",), 1, DRIVERS[0], {"io": "direct"}, id="SIGTERM-tiff-direct"),
        pytest.param(("SIGHUP",), 2, DRIVERS[1], {"io": "buffered"}, id="SIGHUP-tiff-buffered"),
        pytest.param(("SIGINT", "SIGINT"), 3, DRIVERS[0], {"format": "ome-zarr"}, id="SIGINT-SIGINT-zarr"),
        pytest.param(("SIGTERM",), 4, DRIVERS[1], {"io": "direct"}, id="SIGTERM-pycro-tiff-direct"),
    ],
    indirect=["storage"],
)
def test_stop_signals_end_like_ctrl_c(
    tmp_path: Path, signals: Sequence[str], seed: int, driver: str, storage: dict[str, Any]
) -> None:
    proc, run_dir = start_cli_run(tmp_path, lasers_mw={"488": 5.0}, driver=driver, storage=storage)
    time.sleep(random.Random(seed).uniform(0.0, 0.6))  # a random moment of the run
    for name in signals:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.01)  # the second Ctrl-C lands during the shutdown
    _, err = proc.communicate(timeout=90)
    first = getattr(signal, signals[0])
    assert proc.returncode == 128 + first, err.decode()
    assert "Traceback" not in err.decode()
    m = check_invariants(run_dir)
    assert m["status"] == "stopped" and m["signal"] == ("Ctrl-C" if first == signal.SIGINT else signals[0])
    events = read_jsonl(run_dir / "events.jsonl")
    assert any(e["event"] == "interrupt" for e in events)
    assert (run_dir / "report.html").is_file()


@pytest.mark.parametrize(
    ("seed", "driver", "storage"),
    [
        pytest.param(11, DRIVERS[0], {"io": "direct"}, id="tiff-direct"),
        pytest.param(12, DRIVERS[1], {"io": "buffered"}, id="tiff-buffered"),
        pytest.param(13, DRIVERS[0], {"format": "ome-zarr"}, id="zarr"),
    ],
    indirect=["storage"],
)
def test_kill_9_at_a_random_moment_then_recover(
    tmp_path: Path, seed: int, driver: str, storage: dict[str, Any]
) -> None:
    proc, run_dir = start_cli_run(tmp_path, lasers_mw={"488": 5.0}, driver=driver, storage=storage)
    time.sleep(random.Random(seed).uniform(0.0, 0.8))
    proc.kill()
    proc.wait(10)
    frames = read_jsonl(run_dir / "frames.jsonl")
    if storage.get("format") == "ome-zarr":
        image = run_dir / "raw.ome.zarr"
        on_disk = _zarr_planes_with_data(image)
        # every listed frame is on disk; at most one batch is on disk and not yet listed
        assert len(frames) <= on_disk <= len(frames) + MAX_BATCH_FRAMES
        data = _zarr_data(image)
        assert all(data[f["page"]].any() for f in frames)
        found = recover(run_dir)
        assert found["raw.ome.zarr"] >= len(frames)
        group = json.loads((image / "zarr.json").read_text())["attributes"]
        assert [m["index"] for m in group["ome_writers"]["frame_metadata"]] == [f["index"] for f in frames]
        assert group["ome"]["multiscales"][0]["axes"][0]["name"] == "t"
        return
    pages = count_pages(run_dir / "raw.ome.tif")[0]
    assert len(frames) <= pages <= len(frames) + MAX_BATCH_FRAMES  # a batch's pages precede its lines
    found = recover(run_dir)
    assert found["raw.ome.tif"] == pages
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape[0] == pages


# ---------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def _small_filesystem(path: Path, mb: int) -> Iterator[str | None]:
    """A real file system of about ``mb`` MiB at ``path``: ext4 on a loop device (it takes
    direct I/O), else tmpfs; None where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    image = path.parent / f"{path.name}.ext4"
    kind = None
    if shutil.which("mkfs.ext4"):
        with open(image, "wb") as fh:
            fh.truncate(mb << 20)
        made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True)
        if (
            made.returncode == 0
            and subprocess.run(["mount", "-o", "loop", str(image), str(path)], capture_output=True).returncode
            == 0
        ):
            kind = "ext4"
    if kind is None:
        ok = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)], capture_output=True
        )
        kind = "tmpfs" if ok.returncode == 0 else None
    try:
        yield kind
    finally:
        if kind is not None:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        image.unlink(missing_ok=True)


class _DiskFillsUp(RunFolder):
    """Where no small filesystem can be mounted: the disk is full after 20 frames."""

    def write_raw(self, frames: Sequence[Frame]) -> None:
        if frames and frames[-1].index >= 20:
            name = "raw.ome.zarr" if self.format == "ome-zarr" else "raw.ome.tif"
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / name))
        super().write_raw(frames)


def test_a_full_disk_ends_safe_with_every_written_frame_readable(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: dict[str, Any]
) -> None:
    with _small_filesystem(tmp_path / "small", 32) as mounted:
        root = tmp_path / "small" if mounted else tmp_path
        if not mounted:
            monkeypatch.setattr(runner, "RunFolder", _DiskFillsUp)
        if mounted and storage.get("io") == "direct" and direct_io_refusal(root) is not None:
            pytest.skip(f"the small {mounted} refuses direct I/O")
        cfg = _laser_cfg(
            tmp_path,
            rig,
            {"root": str(root / "runs"), "name": "full", **storage},
            watchdog={"camera_stall_s": 5.0},  # the disk, not a busy machine, ends this run
        )
        rig.set("Laser488", "Voltage", 5.0)
        res = run(cfg, driver=rig.make(cfg))
        run_dir = Path(res.run_dir)
        name = _raw_name(storage)
        assert res.status == "failed"
        assert "No space left on device" in res.reason and name in res.reason  # names file and error
        assert rig.get("Laser488", "Voltage") == 0.0
        m = check_invariants(run_dir, all_stored=False)
        assert m["frames_stored"] > 0 and m["frames_stored"] + m["frames_not_stored"] == m["frames_acquired"]
        if "io" in storage:
            assert m["storage_io"] == storage["io"]
        frames = read_jsonl(run_dir / "frames.jsonl")
        if storage.get("format") == "ome-zarr":  # every listed frame's plane is on disk
            data = _zarr_data(run_dir / name)
            assert all(data[f["page"]].any() for f in frames)
            assert recover(run_dir)[name] >= m["frames_stored"]
        else:
            assert recover(run_dir)[name] == m["frames_stored"]
            with tifffile.TiffFile(run_dir / name) as tif:
                assert tif.is_ome and tif.series[0].shape[0] == m["frames_stored"]
        shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------- camera changes mid-run


class _ChangeCamera(ControllerBase):
    name = "change_camera"

    def __init__(self) -> None:
        self.step = 0

    def update(self, obs: Observation) -> list[ActionRequest]:
        plan = {20: ("Binning", 2), 60: ("PixelType", "8bit")}
        for at, (prop, value) in plan.items():
            if self.step < len([a for a in plan if a <= at]) and obs.frame.index >= at:
                self.step += 1
                return [
                    self.ask(SetProperty(device="Camera", property=prop, value=value), "mid-run change", obs)
                ]
        return []


@pytest.mark.parametrize("driver", DRIVERS)
def test_camera_changes_mid_run_keep_every_frame(
    driver: str, tmp_path: Path, storage: dict[str, Any]
) -> None:
    with open_rig(driver, demo_config_path()) as demo:
        sections = cfg_dict(
            tmp_path,
            microscope={"driver": driver, "config_file": str(demo_config_path())},
            acquisition={"exposure_ms": 2.0, "n_frames": 150},
            pipeline={"stages": [{"kind": "stats"}]},
        )
        sections["storage"].update(storage)
        cfg = validate_config(sections)
        res = run(cfg, driver=demo.make(cfg), controllers=[_ChangeCamera()], report=False)
    assert res.status == "completed", res.reason
    run_dir = Path(res.run_dir)
    if storage.get("format") == "ome-zarr":
        files = sorted(p.name for p in run_dir.glob("raw*.ome.zarr"))
        assert files == ["raw.ome.zarr", "raw_001.ome.zarr", "raw_002.ome.zarr"]
        assert [_zarr_data(run_dir / f).dtype.name for f in files] == ["uint16", "uint16", "uint8"]
        assert sum(_zarr_planes_with_data(run_dir / f) for f in files) == 150
        check_invariants(run_dir)
        return
    files = sorted(p.name for p in run_dir.glob("raw*.ome.tif"))
    assert files == ["raw.ome.tif", "raw_001.ome.tif", "raw_002.ome.tif"]
    shapes = [count_pages(run_dir / f) for f in files]
    assert [s[1] for s in shapes] == [(512, 512), (256, 256), (256, 256)]
    assert [str(s[2]) for s in shapes] == ["uint16", "uint16", "uint8"]
    assert sum(s[0] for s in shapes) == 150
    check_invariants(run_dir)


# ------------------------------------------------------------------ remote is bounded


def test_a_flood_of_remote_commands_is_refused_and_audited(rig: Rig, tmp_path: Path) -> None:
    from smartscope.remote import Client, RemoteConfig, RemoteError
    from smartscope.remote.server import REFUSALS_IN_FULL, attach_server

    cfg = _laser_cfg(
        tmp_path, rig, acquisition={"exposure_ms": 2.0, "n_frames": 400, "lasers_mw": {"488": 1.0}}
    )
    holder: dict[str, Any] = {}

    def on_loop(loop: Any) -> None:
        holder["server"] = attach_server(
            loop, RemoteConfig(pub_port=0, control_port=0, max_commands_per_s=10)
        )

    driver = rig.make(cfg)
    t = threading.Thread(
        target=lambda: holder.setdefault("res", run(cfg, driver=driver, on_loop=on_loop, report=False))
    )
    t.start()
    while "server" not in holder:
        time.sleep(0.01)
    server = holder["server"]
    c = Client(control_port=server.control_port, pub_port=server.pub_port, timeout_s=10)
    refused = 0
    t0 = time.monotonic()
    try:
        for _ in range(60):
            try:
                c.override(SetLaserPower(laser="488", power_mw=1.0), reason="flood")
            except RemoteError as exc:
                assert "rate" in str(exc)
                refused += 1
    finally:
        elapsed = time.monotonic() - t0
        c.close()
        t.join(60)
        server.close()
    assert refused >= 30  # 10 per second, the rest refused
    run_dir = Path(holder["res"].run_dir)
    events = read_jsonl(run_dir / "events.jsonl")
    # refusals are counted, not written one line each: each second, the first few in full,
    # then one line with the count
    full = [e for e in events if e["event"] == "remote_command" and not e["accepted"]]
    counted = [e for e in events if e["event"] == "remote_refused"]
    assert all("per second" in e["note"] for e in full + counted)
    assert len(full) + sum(e["count"] for e in counted) == refused
    assert len(full) <= REFUSALS_IN_FULL * (int(elapsed) + 2) < refused
    check_invariants(run_dir)


# ------------------------------------------------------------- the safe state's latch


def safe_state_time(run_dir: Path, why: str = "fault") -> float:
    """Wall-clock time the first safe state whose reason starts with ``why`` was complete."""
    return next(
        e["t"]
        for e in read_jsonl(run_dir / "events.jsonl")
        if e["event"] == "safe_state" and e["why"].startswith(why)
    )


class SlowCamera:
    """A camera that takes ``RESTART_S`` to stop its sequence and as long to start it again
    (sCMOS cameras take up to seconds to re-arm), mixed into either driver."""

    RESTART_S = 1.0

    def _do_stop_sequence(self) -> None:
        time.sleep(self.RESTART_S)
        super()._do_stop_sequence()  # type: ignore[misc]

    def _do_start_sequence(self, n: int | None) -> None:
        time.sleep(self.RESTART_S)
        super()._do_start_sequence(n)  # type: ignore[misc]


def fault_during_a_slow_restart(rig: Rig, tmp_path: Path) -> tuple[Any, PowerSampler]:
    """One run whose fault comes 0.3 s into a batch that stops the camera (1 s), raises the
    laser and starts the camera again (1 s); the laser sampled every 2 ms throughout."""
    cfg = _laser_cfg(
        tmp_path,
        rig,
        watchdog={"camera_stall_s": 5.0, "pipeline_stall_s": 5.0, "camera_start_s": 5.0},
    )
    holder: dict[str, Any] = {}

    class Slow(SlowCamera, rig.driver_cls):  # type: ignore[name-defined,misc]
        def _do_stop_sequence(self) -> None:
            if "loop" in holder and not holder.get("fired"):
                holder["fired"] = True  # the watchdog's thread, say: a fault mid-apply
                threading.Timer(0.3, holder["loop"].fault, ["injected: a fault during the apply"]).start()
            super()._do_stop_sequence()

    driver = rig.make(cfg, Slow)
    with PowerSampler(lambda: rig.get("Laser488", "Voltage")) as light:
        res = run(
            cfg,
            driver=driver,
            controllers=[  # a camera change (it restarts) and more light, in one batch
                _AskOnce(
                    "raise_with_restart",
                    5,
                    SetExposure(exposure_ms=3.0),
                    SetLaserPower(laser="488", power_mw=9.0),
                )
            ],
            report=False,
            on_loop=lambda loop: holder.setdefault("loop", loop),
        )
    return res, light


def test_a_fault_during_a_slow_camera_restart_leaves_no_light(rig: Rig, tmp_path: Path) -> None:
    """F1: the batch under way when the fault came used to go on writing (the laser at 9 V
    for the second the camera took to start again); from the safe state on, nothing is."""
    res, light = fault_during_a_slow_restart(rig, tmp_path)
    run_dir = Path(res.run_dir)
    assert res.status == "failed" and "injected" in res.reason
    t_safe = safe_state_time(run_dir)
    after = light.after(t_safe)
    assert after and max(after) == 0.0  # 0 at every sample after the safe state ...
    assert light.samples[-1][0] - t_safe > 0.5  # ... through the rest of the camera's stop and on
    assert max(p for ts, p in light.samples if ts < t_safe) == pytest.approx(5.0)  # on before
    records = read_jsonl(run_dir / "actions.jsonl")
    raise_rec = next(r for r in records if r["request"]["action"]["kind"] == "laser_power")
    assert raise_rec["verdict"] in ("failed", "refused") and "safe state" in raise_rec["note"]
    skipped = [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "skipped_after_safe_state"]
    assert skipped  # what the latch refused is in the run's events
    check_invariants(run_dir)


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_next_channel_preset_cannot_turn_light_back_on(driver: str, tmp_path: Path) -> None:
    """N3: a multi-channel time-lapse; a fault comes from the analysis thread while the
    acquisition thread snaps channel after channel. The next preset (9 V) used to go on."""
    with open_rig(driver, DATA / "demo_laser_presets.cfg") as presets:
        cfg = validate_config(
            cfg_dict(
                tmp_path,
                microscope=presets.microscope(),
                acquisition={
                    "exposure_ms": 2.0,
                    "n_frames": 2000,
                    "channels": [
                        {"group": "Channel", "preset": "Bright"},
                        {"group": "Channel", "preset": "Dim"},
                    ],
                },
                pipeline={"stages": [{"kind": "fault", "at_frame": 20, "mode": "raise"}]},
                watchdog={"camera_stall_s": 2.0, "pipeline_stall_s": 2.0},
            )
        )
        with PowerSampler(lambda: presets.get("Laser488", "Voltage")) as light:
            res = run(cfg, driver=presets.make(cfg), report=False)
        run_dir = Path(res.run_dir)
        assert res.status == "failed" and "injected fault" in res.reason
        t_safe = safe_state_time(run_dir)
        after = light.after(t_safe)
        assert after and max(after) == 0.0
        assert max(p for ts, p in light.samples if ts < t_safe) == pytest.approx(9.0)
        assert presets.get("Laser488", "Voltage") == 0.0
        check_invariants(run_dir)


def test_a_plan_event_after_a_hung_stage_cannot_turn_light_back_on(tmp_path: Path) -> None:
    """N3 in an MDA plan (pymmcore-plus only: the pycromanager driver refuses plans): the
    focus stage hangs 2 s inside an event; the watchdog's fault comes meanwhile, and the rest
    of that event (its channel preset, 9 V; its snap) used to go on once the stage returned."""
    import useq

    from smartscope.drivers.mda import MDADriver

    with open_rig("pymmcore-plus", DATA / "demo_laser_presets.cfg") as presets:
        seq = useq.MDASequence(
            channels=["Bright", "Dim"],
            z_plan={"range": 2, "step": 1},
            time_plan={"interval": 0, "loops": 50},
            axis_order="tpzc",
        )
        cfg = validate_config(
            cfg_dict(
                tmp_path,
                microscope=presets.microscope(),
                acquisition={"exposure_ms": 2.0, "mda": seq.model_dump(mode="json", exclude_unset=True)},
                watchdog={"camera_stall_s": 0.5, "pipeline_stall_s": 2.0},
            )
        )
        core = presets.core
        moves = {"n": 0}
        move = core.setZPosition

        def hangs_once(*args: Any) -> None:
            move(*args)
            moves["n"] += 1
            if moves["n"] == 12:
                time.sleep(2.0)  # a stage that does not answer for 2 s once it has moved

        core.setZPosition = hangs_once
        try:
            driver = MDADriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=core)
            with PowerSampler(lambda: presets.get("Laser488", "Voltage")) as light:
                res = run(cfg, driver=driver, report=False)
        finally:
            del core.setZPosition
        run_dir = Path(res.run_dir)
        assert res.status == "failed" and "camera stalled" in res.reason, res.reason
        t_safe = safe_state_time(run_dir)
        after = light.after(t_safe)
        assert after and max(after) == 0.0
        assert max(p for ts, p in light.samples if ts < t_safe) == pytest.approx(9.0)
        skipped = [
            e["what"]
            for e in read_jsonl(run_dir / "events.jsonl")
            if e["event"] == "skipped_after_safe_state"
        ]
        assert any("setConfig" in w for w in skipped), skipped  # the preset, refused and audited
        check_invariants(run_dir)


def test_the_watchdog_allows_the_camera_start_time_at_every_restart(rig: Rig, tmp_path: Path) -> None:
    """N11: a camera that takes 1.5 s to stop and 1.5 s to start is accepted at the start
    (``camera_start_s``) and must be at a mid-run restart too, not called a stall."""
    cfg = _laser_cfg(
        tmp_path,
        rig,
        acquisition={"exposure_ms": 2.0, "n_frames": 60},
        watchdog={"camera_stall_s": 1.0, "pipeline_stall_s": 5.0, "camera_start_s": 4.0},
    )

    class Slow(SlowCamera, rig.driver_cls):  # type: ignore[name-defined,misc]
        RESTART_S = 1.5

    res = run(
        cfg,
        driver=rig.make(cfg, Slow),
        controllers=[_AskOnce("change_exposure", 10, SetExposure(exposure_ms=3.0))],
        report=False,
    )
    assert res.status == "completed", res.reason
    records = read_jsonl(Path(res.run_dir) / "actions.jsonl")
    assert [r["verdict"] for r in records if r["request"]["source"] == "change_exposure"] == ["applied"]
    check_invariants(Path(res.run_dir))


# ------------------------------------------------------ stop signals at every moment


@pytest.fixture
def stop_signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise in this (pytest's main) thread, as ``smartscope`` installs them."""
    from smartscope import signals as sig

    saved = {s: signal.getsignal(s) for s in sig.STOP_SIGNALS}
    sig.install()
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _sigterm_now() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1.0)  # the handler raises in this thread, here


def test_sigterm_while_the_driver_starts_ends_in_the_safe_state(
    rig: Rig, tmp_path: Path, stop_signals_raise: None
) -> None:
    """N12: SIGTERM after the start-up switched the laser on (lasers_mw) but before the run:
    the driver's start-up ends in the safe state, whichever step it was at."""
    cfg = _laser_cfg(tmp_path, rig)

    class SignalledDuringStartUp(rig.driver_cls):  # type: ignore[name-defined,misc]
        def _configure(self) -> None:
            super()._configure()
            assert rig.get("Laser488", "Voltage") == 5.0  # the start-up power is on
            _sigterm_now()

    with pytest.raises(KeyboardInterrupt):
        rig.make(cfg, SignalledDuringStartUp)
    assert rig.get("Laser488", "Voltage") == 0.0


def test_sigterm_before_the_loop_runs_names_the_start_up(
    rig: Rig, tmp_path: Path, stop_signals_raise: None
) -> None:
    from smartscope.signals import Interrupted

    cfg = _laser_cfg(tmp_path, rig)
    driver = rig.make(cfg)
    with pytest.raises(Interrupted) as info:
        run(cfg, driver=driver, report=False, on_loop=lambda loop: _sigterm_now())
    assert info.value.signum == signal.SIGTERM and info.value.during == "start-up"
    assert rig.get("Laser488", "Voltage") == 0.0


def test_sigterm_while_the_run_closes_finishes_the_closing_then_says_so(
    rig: Rig, tmp_path: Path, stop_signals_raise: None
) -> None:
    """SIGTERM once the loop is closing (safe state on, frames being written): the closing
    finishes, nothing is lost, and the result carries the signal (exit status 143)."""
    from smartscope.loop import ListenerBase

    class SignalWhileWriting(ListenerBase):
        def on_event(self, event: Any) -> None:
            if event.get("event") == "writing":
                _sigterm_now()

    cfg = _laser_cfg(
        tmp_path, rig, acquisition={"exposure_ms": 2.0, "n_frames": 40, "lasers_mw": {"488": 5.0}}
    )
    res = run(
        cfg, driver=rig.make(cfg), report=True, on_loop=lambda loop: loop.add_listener(SignalWhileWriting())
    )
    assert res.signal == signal.SIGTERM and res.signal_while_closing and res.exit_code == 143
    assert res.status == "completed"  # it had ended before the signal came
    m = check_invariants(Path(res.run_dir))
    assert m["signal"] == "SIGTERM" and m["frames_stored"] == 40
    assert rig.get("Laser488", "Voltage") == 0.0
    assert (Path(res.run_dir) / "report.html").is_file()


@pytest.mark.parametrize("driver", DRIVERS)
def test_sigterm_during_start_up_of_the_command_is_one_line_and_143(tmp_path: Path, driver: str) -> None:
    """The whole command: SIGTERM once the .cfg's device adapters are being loaded."""
    proc = spawn_cli_run(tmp_path, lasers_mw={"488": 5.0}, driver=driver)
    deadline = time.time() + 120
    while time.time() < deadline and "DemoCamera" not in Path(f"/proc/{proc.pid}/maps").read_text():
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == 143, text
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    started = (tmp_path / "runs").is_dir() and any((tmp_path / "runs").iterdir())
    if not started:  # the usual case: still starting, one line says so
        assert lines == [
            "error: stopped by SIGTERM during start-up: the safe state is on, the microscope released"
        ]
