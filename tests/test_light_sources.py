"""Every light source is known: what the .cfg switched on is read back, a device that emits
light is declared (or said not to), the safe state switches every declared one off, and the
focus and mirror limits hold on the core's own devices. Both drivers, real cores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartscope.actions import ActionRequest, SetProperty
from smartscope.config import validate_config
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.drivers import DriverError
from smartscope.runner import run
from smartscope.storage import read_jsonl
from tests.conftest import DATA, DRIVERS, LASERS, Rig, cfg_dict, open_rig

LASER_CFG = (DATA / "demo_laser.cfg").read_text(encoding="utf-8")
# a second analog output, labelled as the laser it drives, that nobody declares
SECOND_LASER = "Device,Laser561,DemoCamera,D-DA2\nParent,Laser561,DHub\n"


def _cfg_file(tmp_path: Path, extra_devices: str = "", extra_lines: str = "", drop: str = "") -> Path:
    """demo_laser.cfg with more devices, more lines at its end, or the device ``drop`` left out."""
    lines = [ln for ln in LASER_CFG.splitlines() if not (drop and drop in ln.split(","))]
    at = max(i for i, ln in enumerate(lines) if ln.startswith("Parent,")) + 1
    text = "\n".join([*lines[:at], extra_devices.rstrip("\n"), *lines[at:], extra_lines]) + "\n"
    path = tmp_path / "scope.cfg"
    path.write_text(text, encoding="utf-8")
    return path


def _cli(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "smartscope.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )


# ------------------------------------------------------------ what the .cfg switched on


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_cfg_that_sets_a_laser_above_its_ceiling_refuses_the_run_in_one_line(
    tmp_path: Path, driver: str
) -> None:
    """F5: the .cfg's own ``Property,Laser488,Voltage,9`` against a 5 V ceiling used to run
    the whole run at 9 V (and the gate took 9 as where it started)."""
    scope = _cfg_file(tmp_path, extra_lines="Property,Laser488,Voltage,9")
    done = _cli(
        tmp_path,
        cfg_dict(
            tmp_path,
            microscope={"driver": driver, "config_file": str(scope), "lasers": LASERS},
            acquisition={"exposure_ms": 1.0, "n_frames": 20},
            limits={"laser_max_mw": {"488": 5.0}},
        ),
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: refused before the run, every declared light switched off")
    assert "Laser488.Voltage reads 9 mW, above its ceiling 5 mW" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_laser_the_cfg_left_above_its_ceiling_is_switched_off(rig: Rig, tmp_path: Path) -> None:
    lasers = {"488": {**LASERS["488"], "max_power_mw": 5.0}}
    cfg = validate_config(cfg_dict(tmp_path, microscope=rig.microscope(lasers=lasers)))
    rig.set("Laser488", "Voltage", 9.0)  # as the .cfg left it
    with pytest.raises(DriverError, match=r"microscope\.lasers\.488: Laser488\.Voltage reads 9 mW"):
        rig.make(cfg)
    assert rig.get("Laser488", "Voltage") == 0.0


def test_a_driver_made_elsewhere_is_held_to_the_runs_ceilings(rig: Rig, tmp_path: Path) -> None:
    """A driver opened with other limits (a script, a test): the run's own ceilings still hold."""
    loose = validate_config(cfg_dict(tmp_path, microscope=rig.microscope()))
    strict = validate_config(
        cfg_dict(tmp_path, microscope=rig.microscope(), limits={"laser_max_mw": {"488": 5.0}})
    )
    rig.set("Laser488", "Voltage", 9.0)
    driver = rig.make(loose)
    with pytest.raises(DriverError, match=r"Laser488\.Voltage reads 9 mW, above its ceiling 5 mW"):
        run(strict, driver=driver, report=False)
    assert rig.get("Laser488", "Voltage") == 0.0


# ------------------------------------------------------------ sources nobody declared


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_light_source_nobody_declared_refuses_the_run_naming_it(tmp_path: Path, driver: str) -> None:
    """N4: a light source not in microscope.lasers was never vetted nor switched off; a
    start-up write to it went through."""
    scope = _cfg_file(tmp_path, SECOND_LASER)
    done = _cli(
        tmp_path,
        cfg_dict(
            tmp_path,
            microscope={
                "driver": driver,
                "config_file": str(scope),
                "lasers": LASERS,
                "startup": [{"device": "Laser561", "property": "Voltage", "value": 5}],
            },
            acquisition={"exposure_ms": 1.0, "n_frames": 20},
        ),
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: refused before the run, nothing was set: microscope.lasers: Laser561")
    assert "microscope.startup[0]: Laser561.Voltage: Laser561 is a light source not declared" in lines[0]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_device_listed_as_not_light_runs(tmp_path: Path, driver: str) -> None:
    with open_rig(driver, _cfg_file(tmp_path, SECOND_LASER)) as rig:
        cfg = validate_config(
            cfg_dict(
                tmp_path,
                microscope=rig.microscope(not_light=["Laser561"]),
                acquisition={"exposure_ms": 1.0, "n_frames": 10},
            )
        )
        res = run(cfg, driver=rig.make(cfg), report=False)
        assert res.status == "completed", res.reason


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_safe_state_switches_off_every_declared_light(tmp_path: Path, driver: str) -> None:
    two = {**LASERS, "561": {**LASERS["488"], "device": "Laser561"}}
    with open_rig(driver, _cfg_file(tmp_path, SECOND_LASER)) as rig:
        cfg = validate_config(
            cfg_dict(
                tmp_path,
                microscope=rig.microscope(lasers=two),
                acquisition={"exposure_ms": 1.0, "n_frames": 10, "lasers_mw": {"488": 3.0, "561": 4.0}},
            )
        )
        res = run(cfg, driver=rig.make(cfg), report=False)
        assert res.status == "completed", res.reason
        assert rig.get("Laser488", "Voltage") == 0.0 and rig.get("Laser561", "Voltage") == 0.0


def test_the_demo_leaves_no_light_on_after_its_safe_state(tmp_path: Path) -> None:
    """N4: the shipped demo declared only its 488 nm laser and left Laser561 at the
    10 mW the virtual microscope's scene starts it at."""
    from smartscope.scenarios import SCENARIOS
    from smartscope.scenarios.base import VIRTUAL_LIGHTS, Hooks
    from smartscope.simulators import get_virtual_microscope

    spec = SCENARIOS["bleach"]
    seen: dict[str, Any] = {}

    def keep(loop: Any) -> None:
        seen["vm"] = get_virtual_microscope(loop.driver.core)
        seen["before"] = dict(seen["vm"].power_mw)

    outcome = spec.run(spec.demo_params(0, 20), tmp_path, Hooks(on_loop=keep))
    assert outcome.loop.status == "completed", outcome.loop.reason
    assert seen["before"]["561"] == 10.0  # the scene's own start
    assert set(seen["vm"].power_mw.values()) == {0.0}  # every light of the microscope is off
    names = set(read_jsonl(Path(outcome.run_dir) / "frames.jsonl")[0]["state"]["lasers"])
    assert names == set(VIRTUAL_LIGHTS)  # each declared, so each vetted and read back


# ------------------------------------------------------- focus and mirror, named or not


class _Ask(ControllerBase):
    name = "ask"

    def __init__(self, *actions: SetProperty) -> None:
        self.actions = list(actions)

    def update(self, obs: Observation) -> list[ActionRequest]:
        if obs.frame.index < 3 or not self.actions:
            return []
        return [self.ask(self.actions.pop(0), "beyond the limits", obs)]


def test_focus_limits_hold_on_the_cores_focus_device_when_microscope_focus_is_unset(
    rig: Rig, tmp_path: Path
) -> None:
    """F4: with ``microscope.focus`` unset (the default) ``SetProperty Z Position 80`` moved
    the stage to 80 µm against limits of ±5 µm."""
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope=rig.microscope(),
            acquisition={"exposure_ms": 1.0, "n_frames": 40},
            limits={"z_um": [-5, 5]},
        )
    )
    driver = rig.make(cfg)
    assert driver.devices.focus == "Z"
    res = run(
        cfg,
        driver=driver,
        controllers=[_Ask(SetProperty(device="Z", property="Position", value=80))],
        report=False,
    )
    assert res.status == "completed", res.reason
    (rec,) = [r for r in read_jsonl(Path(res.run_dir) / "actions.jsonl") if r["request"]["source"] == "ask"]
    assert rec["verdict"] == "clamped" and float(rec["applied"]["value"]) == 5.0
    assert rig.get("Z", "Position") == 5.0


def test_mirror_limits_hold_on_any_mirror_property_when_microscope_mirror_is_unset(tmp_path: Path) -> None:
    """F4: with ``microscope.mirror`` unset a mirror mode went to 5 rad against 1 rad."""
    from smartscope.drivers.mmcore import PymmcorePlusDriver
    from smartscope.scenarios.base import virtual_lights

    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"config_file": "virtual", "camera": "Camera", "lasers": virtual_lights()},
            acquisition={"exposure_ms": 5.0, "n_frames": 30},
            limits={"mirror_max_rad": 1.0},
            pipeline={"stages": [{"kind": "identity"}]},
        )
    )
    driver = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state)
    try:
        assert "Mirror" in driver.devices.mirrors and driver.devices.focus == "Z"
        res = run(
            cfg,
            driver=driver,
            controllers=[
                _Ask(
                    SetProperty(device="Mirror", property="Z5", value=5.0),
                    SetProperty(device="Mirror", property="ZernikeVectorRad", value="0,0,0,0,-4"),
                )
            ],
            report=False,
        )
        assert res.status == "completed", res.reason
        recs = [r for r in read_jsonl(Path(res.run_dir) / "actions.jsonl") if r["request"]["source"] == "ask"]
        assert [r["verdict"] for r in recs] == ["clamped", "clamped"]
        assert float(recs[0]["applied"]["value"]) == 1.0 and recs[1]["applied"]["value"].endswith("-1")
        assert abs(float(driver.core.getProperty("Mirror", "Z5"))) <= 1.0
    finally:
        driver.close()


@pytest.mark.parametrize(
    ("limits", "drop", "words"),
    [
        ({"z_um": [-5, 5]}, "Z", "limits.z_um: no focus device to apply it to"),
        ({"xy_um": [[-10, 10], [-10, 10]]}, "", "limits.xy_um: no XY stage to apply it to"),
        ({"mirror_max_rad": 1.0}, "", "limits.mirror_max_rad: no deformable mirror to apply it to"),
    ],
)
def test_a_limit_with_no_device_to_apply_it_to_is_a_config_error(
    tmp_path: Path, limits: dict[str, Any], drop: str, words: str
) -> None:
    scope = _cfg_file(tmp_path, drop=drop)
    done = _cli(
        tmp_path,
        cfg_dict(
            tmp_path,
            microscope={"config_file": str(scope), "lasers": LASERS},
            acquisition={"exposure_ms": 1.0, "n_frames": 5},
            limits=limits,
        ),
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr
