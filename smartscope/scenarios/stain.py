"""Live virtual staining: label-free (lamp-only) frames become virtual fluorescence
channels, every laser off. To show the trust signal at work, an operator's focus move (a
``SetZ`` request with source ``user``, through the safety gate and audit log) puts the
sample ``defocus_um`` out of focus for frames ``defocus_frames[0]`` .. ``[1] - 1``.

Scored against the simulator's in-focus fluorescence: Pearson r per channel and the trust
values (disagreement ratio, input shift), in focus vs defocused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.actions import ActionRequest, SetZ
from smartscope.config.loading import validate_config
from smartscope.config.scenarios import StainScenario
from smartscope.frame import Frame
from smartscope.loop import ListenerBase, Loop, RunResult
from smartscope.metrics import pearson_r
from smartscope.models import shipped_bundle
from smartscope.models.stain.stage import StainStage
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

__all__ = ["SCENARIO", "StainRun", "plot", "run", "run_config", "score"]

LASERS = ("488", "561", "640")


def run_config(params: StainScenario, out: Path) -> dict[str, Any]:
    """Run config for live virtual staining: label-free (lamp only) frames, every laser off."""
    cfg_file = virtual_cfg_file(
        out / f"virtual-stain-{params.seed}.cfg",
        "cells",
        params.seed,
        params.sensor_px,
        "AsFastAsPossible",
        params.interval_ms,
        10.0,
    )
    return {
        "microscope": {
            **virtual_microscope_config(cfg_file, LASERS),
            "startup": [{"kind": "property", "device": "Lamp", "property": "Power", "value": params.lamp_mw}],
        },
        "acquisition": {
            "exposure_ms": 10.0,
            "interval_ms": params.interval_ms,
            "n_frames": params.n_frames,
            "lasers_mw": dict.fromkeys(LASERS, 0.0),
        },
        "pipeline": {
            "stages": [
                {
                    "kind": "stain",
                    "name": "stain",
                    "bundle": str(params.bundle or shipped_bundle("stain-pix2pix-small")),
                }
            ],
            "save_outputs": True,
        },
        "controllers": [],
        "limits": {"z_um": [-20.0, 20.0]},
        "storage": {"root": str(out), "name": "stain"},
    }


@dataclass
class StainRun:
    run_dir: str
    loop: RunResult
    channels: list[str]
    frames: list[dict[str, Any]]  # per analysed frame: index, z_um, trust values, pearson per channel
    first: dict[str, np.ndarray]  # label_free, virtual, truth, disagreement of the first analysed frame
    dose_mj: dict[str, float]
    frames_stored: int
    trust_limits: tuple[float, float]  # disagreement ratio, input shift |z|


class _Score(ListenerBase):
    """Moves the focus as the operator would, and scores every analysed frame."""

    def __init__(self, loop: Loop, params: StainScenario, stain: StainStage, vm: Any) -> None:
        self.loop = loop
        self.params = params
        self.channels = list(stain.channels)
        self.vm = vm
        self._truth: np.ndarray | None = None
        self.moved = 0
        self.rows: list[dict[str, Any]] = []
        self.first: dict[str, np.ndarray] = {}

    def on_frame(self, frame: Frame) -> None:
        p = self.params
        for k, (at, z) in enumerate(((p.defocus_frames[0], p.defocus_um), (p.defocus_frames[1], 0.0))):
            if self.moved == k and frame.index + 1 >= at:
                self.moved += 1
                req = ActionRequest(action=SetZ(z_um=z), reason="demo: operator moves focus", source="user")
                self.loop.submit(req)

    def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
        out = results.get("stain")
        if out is None or "channels" not in out.images:
            return
        virt = out.images["channels"][1:]
        if self._truth is None:  # a static scene: its in-focus truth is the same every frame
            self._truth = np.stack([self.vm.cells.blurred(c) for c in self.channels])
        truth = self._truth
        z = frame.state.z_um if frame.state is not None else None
        row: dict[str, Any] = {"index": frame.index, "z_um": float(z or 0.0), **out.values}  # Z starts at 0
        for i, c in enumerate(self.channels):
            row[f"pearson:{c}"] = pearson_r(virt[i], truth[i])
        self.rows.append(row)
        if not self.first:
            self.first.update(
                label_free=out.images["channels"][0],
                virtual=virt,
                truth=truth,
                disagreement=out.images.get("disagreement", np.zeros_like(virt)),
            )


def run(params: StainScenario, out: Path, hooks: Hooks = NO_HOOKS) -> StainRun:
    """Live virtual staining on the virtual microscope, scored against its ground truth."""
    cfg = validate_config(run_config(params, out), "stain")
    holder: dict[str, Any] = {}

    def own(loop: Loop) -> None:
        vm = virtual_microscope_of(loop)
        stain = next(s for s in loop.pipeline.stages if s.name == "stain")
        assert isinstance(stain, StainStage)
        holder["vm"], holder["stain"] = vm, stain
        holder["score"] = scorer = _Score(loop, params, stain, vm)
        loop.add_listener(scorer)

    result = require_ok(
        run_loop(cfg, report=True, progress=hooks.progress, on_loop=hooks.chain(own)), "stain"
    )
    vm, stain, scorer = holder["vm"], holder["stain"], holder["score"]
    return StainRun(
        result.run_dir,
        result,
        scorer.channels,
        scorer.rows,
        scorer.first,
        {k: float(v) for k, v in vm.dose_total_mj.items()},
        int(result.metrics["frames_stored"]),
        (float(stain.ratio_max), float(stain.config.input_shift_max)),
    )


def score(result: StainRun) -> dict[str, Any]:
    """Pearson r per channel and the trust figures, in focus vs defocused (ground truth)."""
    out: dict[str, Any] = {"frames_stored": result.frames_stored, "frames_analysed": len(result.frames)}
    for label, defocused in (("in_focus", False), ("defocused", True)):
        rows = [r for r in result.frames if (abs(r["z_um"]) >= 1e-6) == defocused]
        if not rows:
            continue
        part: dict[str, float] = {"frames": float(len(rows))}
        for key in (
            "disagreement_ratio",
            "input_shift",
            "trusted",
            *[f"pearson:{c}" for c in result.channels],
        ):
            vals = [float(r[key]) for r in rows if key in r]
            if vals:
                part[key] = float(np.mean(vals))
        out[label] = part
    out["dose_mj"] = result.dose_mj
    return out


def _composite(stack: np.ndarray) -> np.ndarray:
    """(3, H, W) nuclei/mitochondria/membrane -> RGB (membrane red, mitochondria green, nuclei blue)."""
    rgb = np.stack([stack[2], stack[1], stack[0]], axis=-1).astype(np.float64)
    hi = np.percentile(rgb, 99.5, axis=(0, 1))
    return np.asarray(np.clip(rgb / np.maximum(hi, 1e-9), 0, 1))


def plot(result: StainRun, path: Path) -> Path:
    """Label-free frame, virtual stain, ground truth and disagreement map; trust and Pearson r
    over time with the operator's defocus excursion shaded."""
    pyplot = plt()
    fig = pyplot.figure(figsize=(13, 7.5))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 0.9])
    if result.first:
        panels = [
            ("label-free (acquired)", result.first["label_free"], "gray"),
            ("virtual stain", _composite(result.first["virtual"]), None),
            ("ground truth", _composite(result.first["truth"]), None),
            ("disagreement (mean of channels)", result.first["disagreement"].mean(axis=0), "magma"),
        ]
        for k, (title, img, cmap) in enumerate(panels):
            ax = fig.add_subplot(grid[0, k])
            ax.imshow(img, cmap=cmap)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    idx = np.array([r["index"] for r in result.frames])
    if idx.size:
        z = np.array([r["z_um"] for r in result.frames])
        ax.fill_between(
            idx,
            0,
            1,
            where=np.abs(z) > 1e-6,
            transform=ax.get_xaxis_transform(),
            color="tab:orange",
            alpha=0.15,
            step="mid",
            label="defocused (operator moved Z)",
        )
        for key, style in (("disagreement_ratio", "o-"), ("input_shift", "s-")):
            vals = [r.get(key, np.nan) for r in result.frames]
            ax.plot(idx, vals, style, ms=3, lw=1, label=key.replace("_", " "))
        r_max, z_max = result.trust_limits
        ax.axhline(
            r_max, ls="--", color="tab:blue", lw=0.8, label=f"trust limits (ratio {r_max:.2f}, |z| {z_max:g})"
        )
        ax.axhline(z_max, ls=":", color="tab:orange", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("frame")
        ax.set_ylabel("trust signals (log)")
        ax2 = ax.twinx()
        for c in result.channels:
            ax2.plot(
                idx, [r.get(f"pearson:{c}", np.nan) for r in result.frames], lw=1.2, label=f"Pearson r {c}"
            )
        ax2.set_ylim(-0.1, 1.0)
        ax2.set_ylabel("Pearson r vs ground truth")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4)
    fig.suptitle("live virtual staining on the virtual microscope (label-free frames only, lasers off)")
    return save_figure(fig, path)


def _demo_params(seed: int, frames: int | None) -> StainScenario:
    return StainScenario(seed=seed)


SCENARIO: Scenario[StainScenario, StainRun] = Scenario(
    name="stain",
    summary="label-free frames become virtual fluorescence live, with a trust signal",
    params=StainScenario,
    run=run,
    score=score,
    plot=plot,
    demo_params=_demo_params,
)
