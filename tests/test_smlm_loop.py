"""SMLM live: the classical localizer and the 405 nm density controller in the real loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smartscope.config import validate_config
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.metrics import smlm_scores
from smartscope.models.smlm.table import LocTable
from smartscope.runner import run
from smartscope.scenarios.base import virtual_lights
from smartscope.simulators import get_virtual_microscope
from smartscope.storage import read_jsonl
from tests.conftest import cfg_dict

LASERS = {  # every light of the virtual microscope is declared; 405 and 640 are driven
    **virtual_lights(),
    "405": {"device": "Laser405", "power_property": "Power", "wavelength_nm": 405, "max_power_mw": 50},
    "640": {"device": "Laser640", "power_property": "Power", "wavelength_nm": 640, "max_power_mw": 200},
}


def test_live_localizations_match_ground_truth_and_405_is_steered(tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={
                "config_file": "virtual",
                "camera": "Camera",
                "startup": [
                    {"device": "Camera", "property": "Scenario", "value": "smlm"},
                    {"device": "Camera", "property": "SensorSize", "value": 256},
                ],
                "lasers": LASERS,
            },
            acquisition={"exposure_ms": 10.0, "n_frames": 160},
            pipeline={"stages": [{"kind": "smlm", "name": "smlm", "psf_sigma_nm": 93.3}]},
            controllers=[
                {"kind": "smlm_density", "laser": "405", "target_density_per_um2": 0.5, "update_every": 5}
            ],
            limits={"laser_max_mw": {"405": 20.0}},
        )
    )
    driver = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state)
    try:
        vm = get_virtual_microscope(driver.core)
        res = run(cfg, driver=driver, report=False)
        assert res.status == "completed", res.reason
        run_dir = Path(res.run_dir)
        frames = read_jsonl(run_dir / "frames.jsonl")
        sim_frame = {f["index"]: int(f["mm"]["SimFrame"]) for f in frames}
        table = LocTable.read_csv(run_dir / "outputs" / "localizations.csv")
        analysed = sorted(set(table.frame.tolist()))
        assert len(analysed) > 20
        gt_f, gt_xy, bright = [], [], []
        for i in analysed:
            em = vm.truth(sim_frame[i]).emitters
            assert em is not None
            gt_f += [i] * len(em["x_nm"])
            gt_xy += list(zip(em["x_nm"], em["y_nm"], strict=True))
            bright += list(em["photons"] >= 500)
        gt_f_a, gt_xy_a, bright_a = np.array(gt_f), np.array(gt_xy), np.array(bright)
        pred_xy = np.stack([table.x_nm, table.y_nm], axis=1)
        every = smlm_scores(table.frame, pred_xy, gt_f_a, gt_xy_a)
        strong = smlm_scores(table.frame, pred_xy, gt_f_a[bright_a], gt_xy_a[bright_a])
        print(every, strong)
    finally:
        driver.close()
    # localizations are real emitters, placed close to where they are
    assert every["precision"] > 0.8 and every["rmse_lat_nm"] < 50
    # and most bright emitters are found
    assert strong["recall"] > 0.7
    actions = read_jsonl(run_dir / "actions.jsonl")
    powers = [
        a["applied"]["power_mw"] for a in actions if a["applied"] and a["request"]["source"] == "smlm_density"
    ]
    assert powers and all(0 < p <= 20.0 for p in powers)
    assert all("density" in str(a["request"]["evidence"]) for a in actions)
