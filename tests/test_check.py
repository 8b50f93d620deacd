"""``smartscope check``: commissioning the demo, virtual and SequenceTester rigs, and what it
refuses (a wrong safety property, a camera slower to start than the watchdog allows, a disk
slower than the stream)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mm_test_adapters
import pytest
import yaml

from smartscope.check import CameraFigures, Status, WriteRate, check_rig, measure_write_rate
from smartscope.check.rig import _dark, _judge_disk
from smartscope.config import StorageConfig, validate_config
from smartscope.scenarios.base import virtual_lights
from tests.conftest import DATA, LASERS, cfg_dict

FAST = ("--seconds", "0.3", "--write-mb", "16")
VIRTUAL_SMALL = [  # keep the virtual camera quick: a 64-px sensor
    {"device": "Camera", "property": "SensorSize", "value": "64"},
]


def _check(tmp_path: Path, cfg: dict[str, Any], *extra: str) -> tuple[int, str, dict[str, Any]]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "smartscope.cli", "check", str(path), "--out", str(out), *FAST, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    report = json.loads(out.read_text()) if out.is_file() else {}
    return proc.returncode, proc.stdout + proc.stderr, report


RIGS = {
    "demo": {"config_file": "demo"},
    "virtual": {
        "config_file": "virtual",
        "startup": VIRTUAL_SMALL,
        # every light of the virtual microscope is declared (an undeclared one refuses the run)
        "lasers": {
            **virtual_lights(),
            "488": {"device": "Laser488", "wavelength_nm": 488, "max_power_mw": 20.0},
        },
    },
    "sequence_tester": {
        "config_file": str(DATA / "sequence_tester.cfg"),
        "adapter_paths": [mm_test_adapters.device_adapter_path()],
    },
}


@pytest.mark.parametrize("rig", list(RIGS))
def test_check_prints_its_table_and_check_json(tmp_path: Path, rig: str) -> None:
    cfg = cfg_dict(tmp_path, microscope=RIGS[rig], acquisition={"exposure_ms": 2.0, "n_frames": 50})
    code, out, report = _check(tmp_path, cfg)
    assert code == 0, out
    assert "checks" in out and "measured" in out and "write rate into storage.root" in out
    assert report["ok"] is True
    assert report["devices"] and all(d["label"] and d["type"] for d in report["devices"])
    cam = report["camera"]
    assert cam["fps"] > 0 and cam["buffer_frames"] > 0 and len(cam["first_frame_ms"]) == 3
    assert cam["width"] * cam["height"] * cam["bytes_per_pixel"] == cam["frame_bytes"]
    assert report["disk"]["mb_per_s"] > 0 and report["disk"]["bytes_written"] >= 16e6 * 0.9
    assert {f["subject"] for f in report["findings"]} >= {"camera start", "camera rate", "storage.root"}
    assert report["adapter_paths"]
    assert not any((tmp_path / "runs").glob("*")), "the write test left its folder behind"


def test_a_wrong_safety_property_fails_the_check(tmp_path: Path) -> None:
    cfg = cfg_dict(
        tmp_path,
        microscope={"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
        acquisition={"exposure_ms": 2.0, "n_frames": 50},
        safe_state={"properties": [{"device": "Laser488", "property": "Voltge", "value": "0"}]},
        limits={"allowed_values": {"Camera.Binning": ["1", "3"]}},
    )
    code, out, report = _check(tmp_path, cfg)
    assert code == 1, out
    assert "the run would fail" in out
    fails = {f["subject"]: f["detail"] for f in report["findings"] if f["status"] == "fail"}
    assert "Laser488 has no property 'Voltge'" in fails["safe_state.properties[0]"]
    assert "Camera.Binning='3' is not one of its values" in fails["limits.allowed_values['Camera.Binning']"]
    assert report["ok"] is False


def test_a_laser_ceiling_above_the_device_limit_fails(tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={
                "config_file": "virtual",
                "startup": VIRTUAL_SMALL,
                "lasers": {
                    **virtual_lights(),
                    "405": {"device": "Laser405", "wavelength_nm": 405, "max_power_mw": 80.0},
                },
            },
            acquisition={"exposure_ms": 2.0, "n_frames": 10},
        )
    )
    report = check_rig(cfg, seconds=0.2, write_mb=8)
    assert not report.ok
    bad = [f for f in report.findings if f.status is Status.FAIL]
    assert any("80 is above Laser405.Power's own upper limit 50" in f.detail for f in bad), bad


def test_a_camera_slower_to_start_than_the_watchdog_allows_fails(tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={
                "config_file": "virtual",
                "startup": [
                    *VIRTUAL_SMALL,
                    {"device": "Camera", "property": "SequenceStartCost_ms", "value": 400},
                ],
                "lasers": virtual_lights(),
            },
            acquisition={"exposure_ms": 2.0, "n_frames": 10},
            watchdog={"camera_start_s": 0.2},
        )
    )
    report = check_rig(cfg, seconds=0.2, write_mb=8)
    (start,) = [f for f in report.findings if f.subject == "camera start"]
    assert start.status is Status.FAIL and "watchdog.camera_start_s" in start.detail
    assert report.camera is not None and min(report.camera.first_frame_ms) >= 400


def test_the_check_switches_no_light_on(tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={
                "config_file": "virtual",
                "lasers": {"488": {"device": "Laser488", "wavelength_nm": 488, "max_power_mw": 20.0}},
                "startup": [*VIRTUAL_SMALL, {"device": "Laser488", "property": "Power", "value": 5}],
            },
            acquisition={"exposure_ms": 2.0, "lasers_mw": {"488": 5.0}},
        )
    )
    dark = _dark(cfg)
    assert dark.acquisition.lasers_mw == {}
    assert [(p.device, p.property) for p in dark.microscope.startup] == [("Camera", "SensorSize")]
    assert cfg.acquisition.lasers_mw == {"488": 5.0}  # the caller's config is untouched


def _figures(fps: float, shape: int = 2048) -> CameraFigures:
    return CameraFigures(
        "cam", shape, shape, 2, 10.0, 12.0, (150.0, 140.0, 160.0), fps, 100, 20.0, 400, False
    )


@pytest.mark.parametrize(
    ("fps", "n_frames", "disk_mb_s", "status", "says"),
    [
        (100.0, 1000, 2000.0, Status.OK, "this stream needs 839 MB/s"),
        (100.0, 1000, 900.0, Status.WARN, "less than 20 % to spare"),
        (100.0, 200, 540.0, Status.WARN, "storage.queue_mb (1024) lasts 3.6 s, the run (2.0 s) fits"),
        (100.0, 100_000, 540.0, Status.FAIL, "the disk takes 540 MB/s; this stream needs 839 MB/s"),
        (100.0, None, 540.0, Status.FAIL, "an open-ended run"),
    ],
)
def test_a_disk_slower_than_the_stream_is_judged_by_how_long_the_queue_lasts(
    tmp_path: Path, fps: float, n_frames: int | None, disk_mb_s: float, status: Status, says: str
) -> None:
    cfg = validate_config(cfg_dict(tmp_path, acquisition={"n_frames": n_frames}))
    from smartscope.check.rig import CheckReport

    report = CheckReport("x")
    _judge_disk(cfg, _figures(fps), WriteRate(disk_mb_s, 1, 1.0, 1), report)
    (finding,) = report.findings
    assert finding.status is status and says in finding.detail, finding.detail


def test_the_write_rate_goes_through_the_run_writer_and_cleans_up(tmp_path: Path) -> None:
    storage = StorageConfig(root=tmp_path / "runs")
    rate = measure_write_rate(storage, (128, 128), total_mb=4)
    n = int(4e6 // (128 * 128 * 2))
    assert rate.frames == n and rate.bytes_written == n * 128 * 128 * 2
    assert rate.mb_per_s > 0 and rate.seconds > 0
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_unwritable_storage_root_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = validate_config(
        cfg_dict(tmp_path, storage={"root": str(blocker / "runs")}, acquisition={"exposure_ms": 2.0})
    )
    report = check_rig(cfg, seconds=0.2, write_mb=8)
    (disk,) = [f for f in report.findings if f.subject == "storage.root"]
    assert disk.status is Status.FAIL and "cannot write into" in disk.detail


def test_check_through_pycromanagers_headless_core(tmp_path: Path) -> None:
    pytest.importorskip("pycromanager")
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"driver": "pycromanager", "pycromanager_mode": "headless", "config_file": "demo"},
            acquisition={"exposure_ms": 2.0, "n_frames": 10},
        )
    )
    report = check_rig(cfg, seconds=0.3, write_mb=8)
    assert report.ok, [f for f in report.findings if f.status is not Status.OK]
    assert report.camera is not None and report.camera.fps > 0 and report.camera.buffer_frames > 0
    assert {d.label for d in report.devices} >= {"Camera", "Z", "XY"}
