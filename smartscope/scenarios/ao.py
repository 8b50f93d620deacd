"""Adaptive optics: beads behind a random aberration, corrected by modal sensorless AO
(2N+1 images per pass) through the deformable mirror, inside the live loop.

The virtual microscope has one wavefront, the mirror's: the sample aberration is the
mirror's start-up shape, and the controller's commands are ``base_rad + correction`` with
``base_rad`` that shape; the controller estimates its correction from images only. Scored
against the known aberration: residual RMS and Strehl before and after, images spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from smartscope.config.controllers import ModalAOConfig
from smartscope.config.loading import validate_config
from smartscope.config.scenarios import AOScenario
from smartscope.controllers.ao import MARECHAL_RAD, ModalAOController, residual_rms_rad
from smartscope.frame import Frame
from smartscope.loop import ListenerBase, Loop, RunResult, StopReason
from smartscope.models.ao.data import random_aberration
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
from smartscope.simulators.optics import Optics, strehl_ratio

__all__ = ["SCENARIO", "AORun", "plot", "random_aberration", "run", "run_config", "score"]


def aberration_of(params: AOScenario) -> list[float]:
    """The scenario's aberration: the given one, or a random one from the seed."""
    if params.aberration_rad is not None:
        return [float(v) for v in params.aberration_rad]
    return [float(v) for v in random_aberration(params.seed)]


def run_config(params: AOScenario, out: Path) -> dict[str, Any]:
    """The run configuration; the mirror starts at the aberration (see the module doc)."""
    aberration = aberration_of(params)
    cfg_file = virtual_cfg_file(
        out / f"virtual-beads-{params.seed}.cfg",
        "beads",
        params.seed,
        params.sensor_px,
        "AsFastAsPossible",
        0.0,
        50.0,
        mirror_rad=aberration,
    )
    ctl = ModalAOConfig(base_rad=tuple(aberration), **(params.ao or {}))
    return {
        "microscope": virtual_microscope_config(cfg_file, ["640"]),
        "acquisition": {"exposure_ms": 50.0, "n_frames": params.n_frames, "lasers_mw": {"640": 5.0}},
        "pipeline": {"stages": [{"kind": "stats", "name": "stats"}]},
        "controllers": [ctl.model_dump(mode="json")],
        "limits": {"laser_max_mw": {"640": 20.0}, "mirror_max_rad": ctl.stroke_rad},
        "storage": {"root": str(out), "name": "ao"},
    }


@dataclass
class AORun:
    run_dir: str
    loop: RunResult
    aberration_rad: list[float]
    final_rad: list[float]  # mirror shape at the end = residual wavefront
    images: int
    frames: int
    history: list[dict[str, Any]] = field(default_factory=list)


class _StopWhenDone(ListenerBase):
    def __init__(self, loop: Loop, ctl: ModalAOController) -> None:
        self.loop = loop
        self.ctl = ctl

    def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
        ctl = self.ctl
        if ctl.done and frame.state is not None and frame.state.mirror_rad == tuple(ctl.pending or ()):
            self.loop.request_stop(StopReason.REQUESTED, "modal AO finished")


def run(params: AOScenario, out: Path, hooks: Hooks = NO_HOOKS) -> AORun:
    """Modal AO through the live loop (SetMirror actions, MMCore, virtual microscope)."""
    cfg = validate_config(run_config(params, out), "ao")
    holder: dict[str, Any] = {}

    def own(loop: Loop) -> None:
        holder["vm"] = virtual_microscope_of(loop)
        ctl = loop.controllers[0]
        assert isinstance(ctl, ModalAOController)
        holder["ctl"] = ctl
        loop.add_listener(_StopWhenDone(loop, ctl))

    result = require_ok(run_loop(cfg, report=False, progress=hooks.progress, on_loop=hooks.chain(own)), "AO")
    ctl: ModalAOController = holder["ctl"]
    final = [float(v) for v in holder["vm"].zernike_rad]
    return AORun(
        result.run_dir,
        result,
        aberration_of(params),
        final,
        ctl.images,
        int(result.metrics["frames_stored"]),
        list(ctl.history),
    )


def score(result: AORun) -> dict[str, Any]:
    return {
        "aberration_rad": result.aberration_rad,
        "final_rad": result.final_rad,
        "rms_before_rad": residual_rms_rad(result.aberration_rad),
        "rms_after_rad": residual_rms_rad(result.final_rad),
        "images": result.images,
    }


def _bead_images(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    tif = run_dir / "raw.ome.tif"
    if not tif.exists():
        return None
    with tifffile.TiffFile(tif) as t:
        n = len(t.pages)
        return np.asarray(t.pages[0].asarray()), np.asarray(t.pages[n - 1].asarray())


def plot(result: AORun, path: Path) -> Path:
    """Zernike amplitudes before and after, a bead before and after, the metric per pass."""
    pyplot = plt()
    optics = Optics(na=1.4, n_immersion=1.518, wavelength_nm=670, pixel_size_um=0.1)
    before = np.asarray(result.aberration_rad)
    after = np.zeros(max(before.size, len(result.final_rad)))
    after[: len(result.final_rad)] = result.final_rad
    fig, axes = pyplot.subplots(1, 4, figsize=(15, 3.8), gridspec_kw={"width_ratios": [2, 1, 1, 1.5]})
    j = np.arange(1, after.size + 1)
    b = np.zeros_like(after)
    b[: before.size] = before
    axes[0].bar(
        j - 0.2, b, 0.4, label=f"before: {residual_rms_rad(b):.2f} rad, S={strehl_ratio(optics, b):.2f}"
    )
    axes[0].bar(
        j + 0.2,
        after,
        0.4,
        label=f"after: {residual_rms_rad(after):.3f} rad, S={strehl_ratio(optics, after):.3f}",
    )
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_xlabel("Noll index j")
    axes[0].set_ylabel("wavefront amplitude (rad RMS)")
    axes[0].set_title(f"wavefront (Maréchal {MARECHAL_RAD:.3f} rad), {result.images} images")
    axes[0].legend(fontsize=7)
    imgs = _bead_images(Path(result.run_dir))
    if imgs is not None:
        vmax = float(max(imgs[0].max(), imgs[1].max()))
        for ax, im, title in (
            (axes[1], imgs[0], "first frame"),
            (axes[2], imgs[1], "last frame (corrected)"),
        ):
            ax.imshow(im, cmap="gray", vmin=100, vmax=vmax)
            ax.set_title(title)
            ax.axis("off")
    centre = {h["pass"]: h["m0"] for h in result.history if "mode" in h}
    axes[3].plot(list(centre), list(centre.values()), "o-")
    axes[3].set_xlabel("pass")
    axes[3].set_ylabel("sharpness at the pass centre")
    axes[3].set_title("image metric")
    return save_figure(fig, path)


def _demo_params(seed: int, frames: int | None) -> AOScenario:
    return AOScenario(seed=seed)


SCENARIO: Scenario[AOScenario, AORun] = Scenario(
    name="ao",
    summary="modal sensorless correction of a random aberration through the deformable mirror",
    params=AOScenario,
    run=run,
    score=score,
    plot=plot,
    demo_params=_demo_params,
)
