"""Fault injection: whatever fails and whenever, the same invariants hold afterwards.

After every fault: the lasers are off, every stored frame is readable and logged,
``stored = analysed + skipped + failed``, the audit log has one final line per request, and
``metrics.json`` names what happened. Faults: a driver error at each of its calls, a camera
that stalls or never starts, kill -9 and SIGTERM/SIGHUP/double Ctrl-C at random moments, a
full disk, an apply that blocks while a fault comes, camera changes mid-run, a flood of
remote commands. Every case that writes frames runs on each storage axis (``storage``):
OME-TIFF with direct I/O, OME-TIFF through the page cache, and OME-Zarr.
"""

from __future__ import annotations

import contextlib
import errno
import json
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
from smartscope.actions import ActionRequest, SetLaserPower, SetProperty
from smartscope.config import validate_config
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.frame import Frame
from smartscope.runner import run
from smartscope.storage import RunFolder, count_pages, read_jsonl, recover
from smartscope.storage.direct import direct_io_refusal
from smartscope.storage.writer import MAX_BATCH_FRAMES
from tests.conftest import DATA, LASERS, cfg_dict, start_cli_run

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


def _laser_cfg(tmp_path: Path, storage: dict[str, Any] | None = None, **over: Any) -> Any:
    sections: dict[str, Any] = {
        "microscope": {"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
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
    events = [e["event"] for e in read_jsonl(run_dir / "events.jsonl")]
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


def _failing_driver(hook: str, after: int) -> type[PymmcorePlusDriver]:
    """The real driver over a real core, whose ``hook`` raises on its ``after``-th call."""

    calls = {"n": 0}

    def broken(self: Any, *args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise RuntimeError(f"injected: {hook} failed")
        return getattr(PymmcorePlusDriver, hook)(self, *args, **kw)

    return type(f"Failing_{hook}", (PymmcorePlusDriver,), {hook: broken})


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
    laser_core: Any, tmp_path: Path, hook: str, after: int, storage: dict[str, Any]
) -> None:
    cfg = _laser_cfg(tmp_path, storage)
    laser_core.setProperty("Laser488", "Voltage", 5.0)
    cls = _failing_driver(hook, after)
    try:
        driver = cls(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core)
    except Exception as exc:  # failed while configuring: nothing ran, nothing written
        assert "injected" in str(exc)
        return
    res = run(cfg, driver=driver, controllers=[_Wiggle()], report=False)
    assert res.status == "failed" and "injected" in res.reason
    assert float(laser_core.getProperty("Laser488", "Voltage")) == 0.0
    check_invariants(Path(res.run_dir))


def test_a_failing_property_write_is_a_failed_action_not_a_lost_run(laser_core: Any, tmp_path: Path) -> None:
    cfg = _laser_cfg(tmp_path, acquisition={"exposure_ms": 2.0, "n_frames": 100, "lasers_mw": {"488": 5.0}})
    driver = _failing_driver("_do_set_property", 2)(
        cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core
    )
    res = run(cfg, driver=driver, controllers=[_Wiggle()], report=False)
    records = read_jsonl(Path(res.run_dir) / "actions.jsonl")
    assert any(r["verdict"] == "failed" and "injected" in r["note"] for r in records)
    check_invariants(Path(res.run_dir))


def test_a_stalled_camera_ends_safe(laser_core: Any, tmp_path: Path, storage: dict[str, Any]) -> None:
    class Quiet(PymmcorePlusDriver):
        def _do_remaining(self) -> int:
            return 0 if self._delivered >= 30 else super()._do_remaining()

    cfg = _laser_cfg(tmp_path, storage)
    laser_core.setProperty("Laser488", "Voltage", 5.0)
    res = run(
        cfg, driver=Quiet(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core), report=False
    )
    assert "camera stalled" in res.reason
    assert float(laser_core.getProperty("Laser488", "Voltage")) == 0.0
    check_invariants(Path(res.run_dir))


# ------------------------------------------------------------ the safe state is final


class _BlockingApply(PymmcorePlusDriver):
    """The laser write of an apply hangs until released (a slow serial line)."""

    entered = threading.Event()
    release = threading.Event()

    def _apply_one(self, action: Any, state: Any) -> Any:
        if isinstance(action, SetLaserPower) and action.power_mw > 30:
            self.entered.set()
            self.release.wait(20)
        return super()._apply_one(action, state)


class _AskForLight(ControllerBase):
    name = "ask_for_light"

    def __init__(self) -> None:
        self.asked = False

    def update(self, obs: Observation) -> list[ActionRequest]:
        if self.asked or obs.frame.index < 5:
            return []
        self.asked = True
        return [self.ask(SetLaserPower(laser="488", power_mw=40.0), "more light", obs)]


def test_a_fault_during_an_apply_cannot_turn_light_back_on(laser_core: Any, tmp_path: Path) -> None:
    cfg = _laser_cfg(
        tmp_path,
        microscope={
            "config_file": str(DATA / "demo_laser.cfg"),
            "lasers": {"488": {**LASERS["488"], "max_power_mw": 10.0}},
        },
    )
    laser_core.setProperty("Laser488", "Voltage", 5.0)
    # a 40 "mW" request on a 10 V device is clamped to 10; lower the trigger to that
    _BlockingApply.entered.clear()
    _BlockingApply.release.clear()

    class Blocking(_BlockingApply):
        def _apply_one(self, action: Any, state: Any) -> Any:
            if isinstance(action, SetLaserPower) and action.power_mw >= 9.0:
                self.entered.set()
                self.release.wait(20)
            return PymmcorePlusDriver._apply_one(self, action, state)

    driver = Blocking(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core)
    result: dict[str, Any] = {}

    def go() -> None:
        result["res"] = run(cfg, driver=driver, controllers=[_AskForLight()], report=False)

    t = threading.Thread(target=go)
    t.start()
    assert Blocking.entered.wait(20), "the apply never started"
    # the acquisition thread is stuck in the apply: no frames, so the watchdog faults
    deadline = time.monotonic() + 10
    runs = list((tmp_path / "runs").iterdir())
    while time.monotonic() < deadline:
        events = [e["event"] for e in read_jsonl(runs[0] / "events.jsonl")]
        if "fault" in events:
            break
        time.sleep(0.05)
    assert float(laser_core.getProperty("Laser488", "Voltage")) == 0.0  # safe state on at once
    Blocking.release.set()  # now the stuck apply writes its 10 V ...
    t.join(30)
    res = result["res"]
    assert res.status == "failed" and "camera stalled" in res.reason
    assert float(laser_core.getProperty("Laser488", "Voltage")) == 0.0  # ... and it went off again
    whys = [
        e.get("why", "") for e in read_jsonl(Path(res.run_dir) / "events.jsonl") if e["event"] == "safe_state"
    ]
    assert any("re-applied after it" in w for w in whys)
    check_invariants(Path(res.run_dir))


# --------------------------------------------------------------- signals and kill -9


@pytest.mark.parametrize(  # each signal on one storage axis (a CLI run each: keep the suite short)
    ("signals", "seed", "storage"),
    [
        pytest.param(("SIGTERM",), 1, {"io": "direct"}, id="SIGTERM-tiff-direct"),
        pytest.param(("SIGHUP",), 2, {"io": "buffered"}, id="SIGHUP-tiff-buffered"),
        pytest.param(("SIGINT", "SIGINT"), 3, {"format": "ome-zarr"}, id="SIGINT-SIGINT-zarr"),
    ],
    indirect=["storage"],
)
def test_stop_signals_end_like_ctrl_c(
    tmp_path: Path, signals: Sequence[str], seed: int, storage: dict[str, Any]
) -> None:
    proc, run_dir = start_cli_run(tmp_path, lasers_mw={"488": 5.0}, storage=storage)
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
    ("seed", "storage"),
    [
        pytest.param(11, {"io": "direct"}, id="tiff-direct"),
        pytest.param(12, {"io": "buffered"}, id="tiff-buffered"),
        pytest.param(13, {"format": "ome-zarr"}, id="zarr"),
    ],
    indirect=["storage"],
)
def test_kill_9_at_a_random_moment_then_recover(tmp_path: Path, seed: int, storage: dict[str, Any]) -> None:
    proc, run_dir = start_cli_run(tmp_path, lasers_mw={"488": 5.0}, storage=storage)
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
    laser_core: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: dict[str, Any]
) -> None:
    with _small_filesystem(tmp_path / "small", 32) as mounted:
        root = tmp_path / "small" if mounted else tmp_path
        if not mounted:
            monkeypatch.setattr(runner, "RunFolder", _DiskFillsUp)
        if mounted and storage.get("io") == "direct" and direct_io_refusal(root) is not None:
            pytest.skip(f"the small {mounted} refuses direct I/O")
        cfg = _laser_cfg(
            tmp_path,
            {"root": str(root / "runs"), "name": "full", **storage},
            watchdog={"camera_stall_s": 5.0},  # the disk, not a busy machine, ends this run
        )
        laser_core.setProperty("Laser488", "Voltage", 5.0)
        res = run(
            cfg, driver=PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core)
        )
        run_dir = Path(res.run_dir)
        name = _raw_name(storage)
        assert res.status == "failed"
        assert "No space left on device" in res.reason and name in res.reason  # names file and error
        assert float(laser_core.getProperty("Laser488", "Voltage")) == 0.0
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


def test_camera_changes_mid_run_keep_every_frame(
    demo_core: Any, tmp_path: Path, storage: dict[str, Any]
) -> None:
    sections = cfg_dict(
        tmp_path,
        acquisition={"exposure_ms": 2.0, "n_frames": 150},
        pipeline={"stages": [{"kind": "stats"}]},
    )
    sections["storage"].update(storage)
    cfg = validate_config(sections)
    res = run(
        cfg,
        driver=PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=demo_core),
        controllers=[_ChangeCamera()],
        report=False,
    )
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


def test_a_flood_of_remote_commands_is_refused_and_audited(laser_core: Any, tmp_path: Path) -> None:
    from smartscope.remote import Client, RemoteConfig, RemoteError
    from smartscope.remote.server import attach_server

    cfg = _laser_cfg(tmp_path, acquisition={"exposure_ms": 2.0, "n_frames": 400, "lasers_mw": {"488": 1.0}})
    holder: dict[str, Any] = {}

    def on_loop(loop: Any) -> None:
        holder["server"] = attach_server(
            loop, RemoteConfig(pub_port=0, control_port=0, max_commands_per_s=10)
        )

    driver = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core)
    t = threading.Thread(
        target=lambda: holder.setdefault("res", run(cfg, driver=driver, on_loop=on_loop, report=False))
    )
    t.start()
    while "server" not in holder:
        time.sleep(0.01)
    server = holder["server"]
    c = Client(control_port=server.control_port, pub_port=server.pub_port, timeout_s=10)
    refused = 0
    try:
        for _ in range(60):
            try:
                c.override(SetLaserPower(laser="488", power_mw=1.0), reason="flood")
            except RemoteError as exc:
                assert "rate" in str(exc)
                refused += 1
    finally:
        c.close()
        t.join(60)
        server.close()
    assert refused >= 30  # 10 per second, the rest refused
    run_dir = Path(holder["res"].run_dir)
    audits = [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "remote_command"]
    assert sum(not e["accepted"] and "per second" in e["note"] for e in audits) == refused
    check_invariants(run_dir)
