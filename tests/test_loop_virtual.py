"""The closed loop on the virtual microscope through a real UniMMCore."""

from __future__ import annotations

from pathlib import Path

from smartscope.config import BleachScenario, validate_config
from smartscope.runner import run
from smartscope.scenarios.bleach import run_config as bleach_config
from smartscope.storage import read_jsonl
from tests.conftest import cfg_dict

DEMO_CONFIG = bleach_config(BleachScenario(), Path("runs"))


def test_laser_power_loop_holds_the_band_while_the_dye_bleaches(tmp_path: Path) -> None:
    data = cfg_dict(tmp_path, **{k: v for k, v in DEMO_CONFIG.items() if k != "storage"})
    data["acquisition"] = {**data["acquisition"], "n_frames": 400}
    cfg = validate_config(data)
    ctl = cfg.controllers[0]
    res = run(cfg, report=False)
    assert res.status == "completed", res.reason
    run_dir = Path(res.run_dir)
    analysed = [a for a in read_jsonl(run_dir / "analysis.jsonl") if "values" in a]
    p99 = {a["index"]: a["values"]["stats"]["p99_adu"] for a in analysed}
    settled = [v for i, v in p99.items() if i >= 150]
    in_band = sum(ctl.low * 0.97 <= v <= ctl.high * 1.03 for v in settled) / len(settled)
    assert in_band >= 0.9, settled
    frames = read_jsonl(run_dir / "frames.jsonl")
    power = [f["state"]["lasers"]["488"] for f in frames]
    assert power[0] == 2.0
    # bleaching: holding the signal needs ever more light, never more than the limit
    assert power[-1] > power[150] > power[0]
    assert max(power) <= 50.0
    actions = read_jsonl(run_dir / "actions.jsonl")
    assert all(a["applied"]["kind"] == "laser_power" for a in actions if a["applied"])
