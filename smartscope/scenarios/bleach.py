"""The default demo: cells under 488 nm; a laser-power controller holds the 99th-percentile
intensity in a band (300–420 ADU) and raises the power as the dye bleaches.

Score: the fraction of analysed frames in the band once settled (after the first quarter),
the laser power at the start and end, and how much dye is left (simulator ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config.loading import validate_config
from smartscope.config.scenarios import BleachScenario
from smartscope.loop import Loop, RunResult
from smartscope.models import shipped_bundle
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

__all__ = ["SCENARIO", "BleachResult", "plot", "run", "run_config", "score"]

BAND_ADU = (300.0, 420.0)
LASER = "488"


def run_config(params: BleachScenario, out: Path) -> dict[str, Any]:
    """The run configuration (a mapping, as YAML would give it)."""
    stages: list[dict[str, Any]] = [{"kind": "stats", "name": "stats"}]
    if params.denoise:
        stages.append(
            {"kind": "engine", "name": "denoise", "bundle": str(shipped_bundle("denoise-n2v-lowlight"))}
        )
    return {
        "seed": params.seed,
        "microscope": {
            "driver": "pymmcore-plus",
            "config_file": "virtual",
            "camera": "Camera",
            "focus": "Z",
            "mirror": "Mirror",
            "startup": [{"kind": "property", "device": "Camera", "property": "Seed", "value": params.seed}],
            "lasers": virtual_lights(),  # 488 nm is the one it drives
        },
        "acquisition": {"exposure_ms": 20.0, "n_frames": params.n_frames, "lasers_mw": {LASER: 2.0}},
        "pipeline": {"stages": stages},
        "controllers": [
            {
                "kind": "exposure_band",
                "name": "laser_band",
                "stage": "stats",
                "statistic": "p99_adu",
                "low": BAND_ADU[0],
                "high": BAND_ADU[1],
                "actuator": "laser_power",
                "laser": LASER,
                "offset_adu": 100,
            }
        ],
        "limits": {"laser_max_mw": {LASER: 50.0}, "max_power_change_mw_per_s": 10.0},
        "storage": {"root": str(out), "name": "demo"},
    }


@dataclass
class BleachResult:
    run_dir: str
    loop: RunResult
    dye_left: float  # fraction of the 488 nm dye left at the end (ground truth)


def run(params: BleachScenario, out: Path, hooks: Hooks = NO_HOOKS) -> BleachResult:
    cfg = validate_config(run_config(params, out), "demo bleach")
    holder: dict[str, Any] = {}

    def own(loop: Loop) -> None:
        holder["vm"] = virtual_microscope_of(loop)

    result = require_ok(run_loop(cfg, progress=hooks.progress, on_loop=hooks.chain(own)), "bleach")
    vm = holder["vm"]
    truth = vm.truth(vm.frame - 1)
    left = [float(v) for v in truth.bleach_remaining.values()]
    return BleachResult(result.run_dir, result, float(np.mean(left)) if left else float("nan"))


def _series(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(analysed index, p99) and (frame index, laser power)."""
    rows = [a for a in read_jsonl(run_dir / "analysis.jsonl") if "values" in a]
    idx = np.array([a["index"] for a in rows], dtype=float)
    p99 = np.array([a["values"]["stats"]["p99_adu"] for a in rows], dtype=float)
    frames = read_jsonl(run_dir / "frames.jsonl")
    f_idx = np.array([f["index"] for f in frames], dtype=float)
    power = np.array([f["state"]["lasers"].get(LASER, np.nan) for f in frames], dtype=float)
    return idx, p99, f_idx, power


def score(result: BleachResult) -> dict[str, Any]:
    idx, p99, _, power = _series(Path(result.run_dir))
    settled = p99[idx >= idx.max() / 4] if idx.size else p99
    in_band = float(np.mean((settled >= BAND_ADU[0]) & (settled <= BAND_ADU[1]))) if settled.size else 0.0
    return {
        "frames_stored": result.loop.metrics["frames_stored"],
        "in_band_fraction_settled": in_band,
        "power_start_mw": float(power[0]) if power.size else None,
        "power_end_mw": float(power[-1]) if power.size else None,
        "dye_left": result.dye_left,
    }


def plot(result: BleachResult, path: Path) -> Path:
    pyplot = plt()
    idx, p99, f_idx, power = _series(Path(result.run_dir))
    fig, (a0, a1) = pyplot.subplots(2, 1, figsize=(10, 6), sharex=True)
    a0.plot(idx, p99, ".", ms=3, label="p99 (analysed frames)")
    a0.axhspan(*BAND_ADU, color="tab:green", alpha=0.15, label="target band")
    a0.set_ylabel("99th percentile (ADU)")
    a0.legend(fontsize=8)
    a1.plot(f_idx, power, "-", label=f"{LASER} nm power")
    a1.set_ylabel("laser power (mW)")
    a1.set_xlabel("frame")
    a0.set_title(f"bleaching compensation: dye left {result.dye_left:.2f}")
    return save_figure(fig, path)


def _demo_params(seed: int, frames: int | None) -> BleachScenario:
    return BleachScenario(seed=seed, n_frames=frames or 600)


SCENARIO: Scenario[BleachScenario, BleachResult] = Scenario(
    name="bleach",
    summary="cells under 488 nm; laser power holds the p99 in a band as the dye bleaches",
    params=BleachScenario,
    run=run,
    score=score,
    plot=plot,
    demo_params=_demo_params,
)
