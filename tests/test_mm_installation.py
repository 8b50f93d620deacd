"""A .cfg whose adapter lives only in another Micro-Manager installation loads by discovery
(``MICROMANAGER_PATH``) and by setting (``microscope.mm_path``, ``microscope.adapter_paths``),
through both flavours, and fails with one line naming the adapter and every folder searched
without either."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from smartscope.config import MicroscopeConfig, validate_config
from smartscope.drivers import DriverError
from smartscope.drivers.installation import (
    adapter_names,
    adapter_search,
    mm_test_adapter_path,
    open_pycromanager_headless,
    open_pymmcore_plus,
)
from smartscope.runner import run
from tests.conftest import cfg_dict

ADAPTER = "SmartscopeRigCam"  # a name no Micro-Manager installation ships


@pytest.fixture
def installation(tmp_path: Path) -> Path:
    """An installation-like folder holding one adapter found nowhere else: mm-test-adapters'
    DemoCamera library under another adapter name."""
    (demo,) = [p for p in mm_test_adapter_path().iterdir() if "mmgr_dal_DemoCamera" in p.name]
    folder = tmp_path / "Micro-Manager-rig"
    folder.mkdir()
    shutil.copy(demo, folder / demo.name.replace("DemoCamera", ADAPTER))
    return folder


@pytest.fixture
def rig_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "rig.cfg"
    path.write_text(
        "# a lab's rig: its camera adapter is not one of the test adapters\n"
        f"Device,Camera,{ADAPTER},DCam\n"
        "Property,Core,Initialize,1\n"
        "Property,Core,Camera,Camera\n"
    )
    return path


@pytest.fixture
def no_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """pymmcore-plus's discovery as on a machine without that installation."""
    monkeypatch.delenv("MICROMANAGER_PATH", raising=False)


def _snaps(core: object) -> tuple[int, int]:
    core.snapImage()  # type: ignore[attr-defined]
    shape = core.getImage().shape  # type: ignore[attr-defined]
    return int(shape[0]), int(shape[1])


def _release(core: object) -> None:
    core.unloadAllDevices()  # type: ignore[attr-defined]
    del core
    gc.collect()


def test_the_folder_holds_an_adapter_the_test_adapters_do_not(installation: Path) -> None:
    assert ADAPTER in adapter_names([installation])
    assert ADAPTER not in adapter_names([mm_test_adapter_path()])


def test_loads_through_discovery(installation: Path, rig_cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROMANAGER_PATH", str(installation))
    m = MicroscopeConfig(config_file=str(rig_cfg))
    search = adapter_search(m)
    assert search.paths == (installation,)  # a lab's .cfg: no test adapters beside it
    core = open_pymmcore_plus(m)
    try:
        assert _snaps(core) == (512, 512)
        assert core.getDeviceLibrary("Camera") == ADAPTER  # type: ignore[attr-defined]
    finally:
        _release(core)


@pytest.mark.parametrize("setting", ["mm_path", "adapter_paths"])
def test_loads_through_the_setting(
    setting: str, installation: Path, rig_cfg: Path, no_discovery: None
) -> None:
    value = str(installation) if setting == "mm_path" else [str(installation)]
    m = MicroscopeConfig.model_validate({"config_file": str(rig_cfg), setting: value})
    assert installation in adapter_search(m).paths
    core = open_pymmcore_plus(m)
    try:
        assert _snaps(core) == (512, 512)
    finally:
        _release(core)


def test_fails_in_one_line_without_either(rig_cfg: Path, no_discovery: None) -> None:
    m = MicroscopeConfig(config_file=str(rig_cfg))
    with pytest.raises(DriverError) as err:
        open_pymmcore_plus(m)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"line 2 loads device 'Camera' from adapter '{ADAPTER}'" in msg
    for folder in adapter_search(m).paths:
        assert str(folder) in msg
    assert "microscope.mm_path" in msg and "microscope.adapter_paths" in msg


def test_a_setting_that_is_not_a_folder_is_named(tmp_path: Path, rig_cfg: Path) -> None:
    m = MicroscopeConfig(config_file=str(rig_cfg), mm_path=tmp_path / "nowhere")
    with pytest.raises(DriverError, match=r"microscope\.mm_path: .*nowhere is not a folder"):
        adapter_search(m)


def test_demo_and_virtual_add_the_test_adapters_beside_an_installation(
    installation: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROMANAGER_PATH", str(installation))
    for name in ("demo", "virtual"):
        paths = adapter_search(MicroscopeConfig(config_file=name)).paths
        assert [p.resolve() for p in paths] == [installation.resolve(), mm_test_adapter_path().resolve()]
    core = open_pymmcore_plus(MicroscopeConfig(config_file="demo"))
    try:
        assert _snaps(core) == (512, 512)
    finally:
        _release(core)


def test_a_run_uses_the_installation_the_setting_names(
    tmp_path: Path, installation: Path, rig_cfg: Path, no_discovery: None
) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"config_file": str(rig_cfg), "mm_path": str(installation)},
            acquisition={"exposure_ms": 1.0, "n_frames": 5},
        )
    )
    res = run(cfg, report=False)
    assert res.status == "completed", res.reason
    assert res.metrics["frames_stored"] == 5


def test_pycromanager_headless_searches_the_same_folders(
    installation: Path, rig_cfg: Path, no_discovery: None
) -> None:
    pytest.importorskip("pycromanager")
    from pycromanager import stop_headless

    with pytest.raises(DriverError, match=f"adapter '{ADAPTER}'"):
        open_pycromanager_headless(MicroscopeConfig(driver="pycromanager", config_file=str(rig_cfg)))
    core = open_pycromanager_headless(
        MicroscopeConfig(driver="pycromanager", config_file=str(rig_cfg), adapter_paths=[installation])
    )
    try:
        assert str(installation) in [str(p) for p in core.get_device_adapter_search_paths()]  # type: ignore[attr-defined]
        core.snap_image()  # type: ignore[attr-defined]
        assert int(core.get_image_width()) == 512  # type: ignore[attr-defined]
    finally:
        stop_headless()
