"""Live SMLM: blinking emitters on the virtual microscope, the classical MLE localizer in
the loop, and the 405 nm activation laser steered to hold the emitter density.

Scored against the simulator's emitters on the frames the loop analysed (matched within
250 nm, one to one): Jaccard index, lateral RMSE, recall of bright emitters (≥ 500
photons), and the 405 nm powers the controller asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config.loading import validate_config
from smartscope.config.scenarios import SMLMScenario
from smartscope.loop import Loop, RunResult
from smartscope.metrics import smlm_scores
from smartscope.models.smlm.table import LocTable
from smartscope.runner import run as run_loop
from smartscope.scenarios.base import (
    NO_HOOKS,
    Hooks,
    Scenario,
    plt,
    require_ok,
    save_figure,
    virtual_lights,
    virtual_microscope_of,
)
from smartscope.storage import read_jsonl

__all__ = ["SCENARIO", "SMLMRun", "plot", "run", "run_config", "score"]

PSF_SIGMA_NM = 93.3  # the virtual microscope's 640 nm PSF as a Gaussian
BRIGHT_PHOTONS = 500.0


def run_config(params: SMLMScenario, out: Path) -> dict[str, Any]:
    lasers = {  # every light of the virtual microscope is declared; 405 and 640 are driven
        **virtual_lights(),
        "640": {"device": "Laser640", "power_property": "Power", "wavelength_nm": 640, "max_power_mw": 200},
    }
    return {
        "seed": params.seed,
        "microscope": {
            "config_file": "virtual",
            "camera": "Camera",
            "startup": [
                {"device": "Camera", "property": "Scenario", "value": "smlm"},
                {"device": "Camera", "property": "Seed", "value": params.seed},
                {"device": "Camera", "property": "SensorSize", "value": params.sensor_px},
            ],
            "lasers": lasers,
        },
        "acquisition": {"exposure_ms": 10.0, "n_frames": params.n_frames},
        "pipeline": {"stages": [{"kind": "smlm", "name": "smlm", "psf_sigma_nm": PSF_SIGMA_NM}]},
        "controllers": [
            {
                "kind": "smlm_density",
                "laser": "405",
                "target_density_per_um2": params.target_density_per_um2,
                "update_every": 5,
            }
        ],
        "limits": {"laser_max_mw": {"405": 20.0}, "max_power_change_mw_per_s": 5.0},
        "storage": {"root": str(out), "name": "demo-smlm"},
    }


@dataclass
class SMLMRun:
    run_dir: str
    loop: RunResult
    truth: dict[int, dict[str, np.ndarray]]  # raw frame index -> the simulator's emitters


def run(params: SMLMScenario, out: Path, hooks: Hooks = NO_HOOKS) -> SMLMRun:
    cfg = validate_config(run_config(params, out), "demo smlm")
    holder: dict[str, Any] = {}

    def own(loop: Loop) -> None:
        holder["vm"] = virtual_microscope_of(loop)

    result = require_ok(run_loop(cfg, progress=hooks.progress, on_loop=hooks.chain(own)), "smlm")
    vm = holder["vm"]
    truth: dict[int, dict[str, np.ndarray]] = {}
    for f in read_jsonl(Path(result.run_dir) / "frames.jsonl"):
        em = vm.truth(int(f["mm"]["SimFrame"])).emitters
        if em is not None:
            truth[int(f["index"])] = {k: np.asarray(v) for k, v in em.items()}
    return SMLMRun(result.run_dir, result, truth)


def _table(result: SMLMRun) -> LocTable:
    return LocTable.read_csv(Path(result.run_dir) / "outputs" / "localizations.csv")


def score(result: SMLMRun) -> dict[str, Any]:
    table = _table(result)
    analysed = sorted(set(table.frame.tolist()) & set(result.truth))
    gt_f: list[int] = []
    gt_xy: list[tuple[float, float]] = []
    bright: list[bool] = []
    for i in analysed:
        em = result.truth[i]
        gt_f += [i] * len(em["x_nm"])
        gt_xy += list(zip(em["x_nm"], em["y_nm"], strict=True))
        bright += list(em["photons"] >= BRIGHT_PHOTONS)
    keep = np.isin(table.frame, analysed)
    pred_xy = np.stack([table.x_nm[keep], table.y_nm[keep]], axis=1)
    gt_f_a, gt_xy_a, bright_a = np.array(gt_f), np.array(gt_xy).reshape(-1, 2), np.array(bright, bool)
    every = smlm_scores(table.frame[keep], pred_xy, gt_f_a, gt_xy_a)
    strong = smlm_scores(table.frame[keep], pred_xy, gt_f_a[bright_a], gt_xy_a[bright_a])
    actions = read_jsonl(Path(result.run_dir) / "actions.jsonl")
    powers = [
        a["applied"]["power_mw"] for a in actions if a["applied"] and a["request"]["source"] == "smlm_density"
    ]
    return {
        "frames_analysed": len(analysed),
        "localizations": int(keep.sum()),
        "all": every,
        "bright": strong,
        "activation_powers_mw": powers,
    }


def plot(result: SMLMRun, path: Path) -> Path:
    """Localizations of the run (a histogram render) and the density and 405 nm power over time."""
    pyplot = plt()
    table = _table(result)
    fig, (a0, a1) = pyplot.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.4]})
    a0.hist2d(table.x_nm / 1e3, table.y_nm / 1e3, bins=256, cmap="magma")
    a0.set_aspect("equal")
    a0.set_xlabel("x (µm)")
    a0.set_ylabel("y (µm)")
    a0.set_title(f"{len(table.frame)} localizations")
    rows = [a for a in read_jsonl(Path(result.run_dir) / "analysis.jsonl") if "values" in a]
    idx = [a["index"] for a in rows]
    dens = [a["values"].get("smlm", {}).get("density_per_um2", np.nan) for a in rows]
    a1.plot(idx, dens, ".", ms=3, label="density (per µm²)")
    a1.set_xlabel("frame")
    a1.set_ylabel("emitter density (per µm²)")
    frames = read_jsonl(Path(result.run_dir) / "frames.jsonl")
    ax2 = a1.twinx()
    ax2.plot(
        [f["index"] for f in frames], [f["state"]["lasers"].get("405", np.nan) for f in frames], "r-", lw=1
    )
    ax2.set_ylabel("405 nm power (mW)", color="r")
    a1.set_title("density control")
    return save_figure(fig, path)


def _demo_params(seed: int, frames: int | None) -> SMLMScenario:
    return SMLMScenario(seed=seed, n_frames=frames or 600)


SCENARIO: Scenario[SMLMScenario, SMLMRun] = Scenario(
    name="smlm",
    summary="live localization with the 405 nm activation laser holding the density",
    params=SMLMScenario,
    run=run,
    score=score,
    plot=plot,
    demo_params=_demo_params,
)
