"""Low-light dose control: cells at 5 % brightness through the shipped N2V denoiser; the
SNR dose controller finds the least 561 nm power that keeps the denoised SNR on target.

The demo runs it twice, at a fixed 20 mW and with the controller (starting at 20 mW), and
scores both against the simulator: light dose (ledger) and dye left at the end (bleaching
ground truth).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config.controllers import SNRDoseConfig
from smartscope.config.loading import validate_config
from smartscope.config.scenarios import LowlightScenario
from smartscope.frame import Frame
from smartscope.loop import ListenerBase, Loop, RunResult
from smartscope.models import shipped_bundle
from smartscope.pipeline import StageOutput
from smartscope.runner import run as run_loop
from smartscope.scenarios.base import (
    NO_HOOKS,
    Hooks,
    Scenario,
    plt,
    require_ok,
    save_figure,
    virtual_cfg_file,
    virtual_microscope_config,
    virtual_microscope_of,
)

__all__ = ["SCENARIO", "LowlightResult", "LowlightRun", "plot", "run", "run_config", "run_once", "score"]


def run_config(params: LowlightScenario, out: Path) -> dict[str, Any]:
    """Run config: N2V denoiser stage, fixed or SNR-steered 561 nm."""
    cfg_file = virtual_cfg_file(
        out / f"virtual-lowlight-{params.seed}.cfg",
        "lowlight",
        params.seed,
        params.sensor_px,
        "AsFastAsPossible",
        0.0,
        10.0,
    )
    controllers: list[dict[str, Any]] = []
    if params.controlled:
        controllers.append(SNRDoseConfig(laser="561", target_snr=params.target_snr).model_dump(mode="json"))
    return {
        "microscope": virtual_microscope_config(cfg_file, ["561"]),
        "acquisition": {
            "exposure_ms": 10.0,
            "interval_ms": params.interval_ms,
            "n_frames": params.n_frames,
            "lasers_mw": {"561": params.power_mw},
        },
        "pipeline": {
            "stages": [
                {"kind": "engine", "name": "denoise", "bundle": str(shipped_bundle("denoise-n2v-lowlight"))}
            ],
            "save_outputs": False,
        },
        "controllers": controllers,
        "limits": {"laser_max_mw": {"561": 50.0}},
        "storage": {
            "root": str(out),
            "name": "lowlight-controlled" if params.controlled else "lowlight-fixed",
        },
    }


@dataclass
class LowlightRun:
    run_dir: str
    loop: RunResult
    dose_mj: float
    bleach_remaining: float  # mitochondria dye left at the end (ground truth)
    snr: list[float]  # per analysed frame
    power_mw: list[float]  # per analysed frame
    frames: int


@dataclass
class LowlightResult:
    """The demo: the controlled run, and the fixed-power run beside it."""

    controlled: LowlightRun
    fixed: LowlightRun
    target_snr: float

    @property
    def run_dir(self) -> str:
        return self.controlled.run_dir

    @property
    def loop(self) -> RunResult:
        return self.controlled.loop


class _Recorder(ListenerBase):
    def __init__(self) -> None:
        self.snr: list[float] = []
        self.power: list[float] = []

    def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
        self.snr.append(float(results["denoise"].values["snr"]))
        lasers = frame.state.lasers if frame.state is not None else {}
        self.power.append(float(lasers.get("561", float("nan"))))


def run_once(params: LowlightScenario, out: Path, hooks: Hooks = NO_HOOKS) -> LowlightRun:
    """One run (fixed or controlled, as ``params.controlled`` says); dose and bleaching from the simulator."""
    cfg = validate_config(run_config(params, out), "lowlight")
    holder: dict[str, Any] = {}
    rec = _Recorder()

    def own(loop: Loop) -> None:
        holder["vm"] = virtual_microscope_of(loop)
        loop.add_listener(rec)

    result = require_ok(
        run_loop(cfg, report=False, progress=hooks.progress, on_loop=hooks.chain(own)), "lowlight"
    )
    vm = holder["vm"]
    last = vm.truth(vm.frame - 1)
    return LowlightRun(
        result.run_dir,
        result,
        float(vm.dose_total_mj["561"]),
        float(last.bleach_remaining["mitochondria"]),
        rec.snr,
        rec.power,
        int(result.metrics["frames_stored"]),
    )


def run(params: LowlightScenario, out: Path, hooks: Hooks = NO_HOOKS) -> LowlightResult:
    """The demo: a fixed-power run at ``power_mw``, then the controlled run."""
    fixed = run_once(params.model_copy(update={"controlled": False}), out, hooks)
    controlled = run_once(params.model_copy(update={"controlled": True}), out, hooks)
    return LowlightResult(controlled, fixed, params.target_snr)


def score(result: LowlightResult) -> dict[str, Any]:
    def part(r: LowlightRun) -> dict[str, float]:
        snr = np.asarray(r.snr)
        held = float(np.mean(snr >= result.target_snr)) if snr.size else float("nan")
        return {"dose_mj": r.dose_mj, "dye_left": r.bleach_remaining, "snr_on_target_fraction": held}

    return {
        "fixed": part(result.fixed),
        "controlled": part(result.controlled),
        "target_snr": result.target_snr,
    }


def plot(result: LowlightResult, path: Path) -> Path:
    """Laser power and SNR over time for both runs, with the target."""
    pyplot = plt()
    fig, (a0, a1) = pyplot.subplots(2, 1, figsize=(10, 6), sharex=True)
    for r, label in ((result.fixed, "fixed"), (result.controlled, "SNR controller")):
        x = np.linspace(0, r.frames, len(r.snr))
        a0.plot(x, r.power_mw, label=f"{label}: dose {r.dose_mj:.0f} mJ, dye left {r.bleach_remaining:.2f}")
        a1.plot(x, r.snr, ".", ms=3, label=label)
    a1.axhline(result.target_snr, color="k", ls="--", lw=0.8, label="target SNR")
    a0.set_ylabel("561 nm power (mW)")
    a1.set_ylabel("SNR (denoiser estimate)")
    a1.set_xlabel("frame")
    a0.legend(fontsize=8)
    a1.legend(fontsize=8)
    a0.set_title("low-light dose control: power and SNR over time")
    return save_figure(fig, path)


def _demo_params(seed: int, frames: int | None) -> LowlightScenario:
    return LowlightScenario(seed=seed, n_frames=frames or 600)


SCENARIO: Scenario[LowlightScenario, LowlightResult] = Scenario(
    name="lowlight",
    summary="the least 561 nm power that keeps the denoised SNR on target",
    params=LowlightScenario,
    run=run,
    score=score,
    plot=plot,
    demo_params=_demo_params,
)
