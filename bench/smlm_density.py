"""Closed-loop activation-density control on the virtual microscope (no MMCore needed).

Per frame: SMLMScene.step(P405) → SMLMStage (classical localizer) → SMLMDensityController
→ the requested 405 nm power is in force from the next frame on. Reports how well the
localization density is held within ±20 % of the target after settling while the pool of
emitters bleaches, and writes a plot.

    python bench/smlm_density.py --frames 5000 --out bench/results/smlm_density

Prints one JSON line of figures; writes ``density.png`` and ``density.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config import SMLMCameraConfig, SMLMDensityConfig, SMLMStageConfig
from smartscope.controllers.base import Observation
from smartscope.frame import DriverState, Frame
from smartscope.models.smlm.controller import SMLMDensityController
from smartscope.models.smlm.stage import SMLMStage
from smartscope.simulators.scene import SMLMScene


def run_density_loop(
    n_frames: int = 5000,
    shape: tuple[int, int] = (128, 128),
    target_density_per_um2: float = 0.2,
    seed: int = 0,
    settle_frames: int = 500,
    max_power_mw: float = 200.0,
    controller: SMLMDensityConfig | None = None,
) -> dict[str, Any]:
    """Run the loop; returns per-frame traces and summary figures."""
    scene = SMLMScene(shape, seed=seed)
    cam = scene.camera
    stage = SMLMStage(
        SMLMStageConfig(
            pixel_size_um=scene.pixel_size_nm / 1000.0,
            camera=SMLMCameraConfig(
                kind=cam.kind,
                offset_adu=cam.offset_adu,
                gain_adu_per_e=cam.gain_adu_per_e,
                em_gain=cam.em_gain,
                read_noise_e=cam.read_noise_e,
            ),
            psf_sigma_nm=100.0,
        )
    )
    cfg = controller or SMLMDensityConfig(
        target_density_per_um2=target_density_per_um2,
        max_power_mw=max_power_mw,
        min_power_mw=0.05,
        initial_power_mw=1.0,
    )
    ctl = SMLMDensityController(cfg)
    area_um2 = shape[0] * shape[1] * (scene.pixel_size_nm / 1000.0) ** 2
    power = cfg.initial_power_mw or cfg.min_power_mw
    dens_loc = np.zeros(n_frames)
    dens_gt = np.zeros(n_frames)
    power_tr = np.zeros(n_frames)
    pool = np.zeros(n_frames)
    n_actions = 0
    t0 = time.perf_counter()
    for i in range(n_frames):
        img, gt = scene.step(power)
        power_tr[i] = power
        dens_gt[i] = len(gt["x_nm"]) / area_um2
        pool[i] = float((scene.state.state != 2).sum())
        frame = Frame(index=i, image=img, camera_time_s=i * scene.exposure_ms * 1e-3)
        results = {stage.name: stage.process(frame, {})}
        dens_loc[i] = results[stage.name].values["density_per_um2"]
        reqs = ctl.update(
            Observation(frame, results, DriverState(exposure_ms=10.0, lasers={cfg.laser: power}))
        )
        for r in reqs:
            power = float(r.action.power_mw)  # type: ignore[union-attr]
            n_actions += 1
    elapsed = time.perf_counter() - t0
    target = cfg.target_density_per_um2
    # held within ±20 %: the density averaged over the controller's window (one decision
    # interval ... the EMA time constant) after settling
    win = int(cfg.smoothing_frames)
    kernel = np.ones(win) / win
    smooth = np.convolve(dens_loc, kernel, mode="valid")  # smooth[k] = mean(dens[k:k+win])
    smooth_after = smooth[settle_frames:]
    within = np.abs(smooth_after / target - 1.0) <= 0.2
    return {
        "frames": n_frames,
        "shape": list(shape),
        "target_density_per_um2": target,
        "settle_frames": settle_frames,
        "smoothing_frames": win,
        "fraction_within_20pct": float(within.mean()),
        "fraction_within_20pct_single_frame": float(
            (np.abs(dens_loc[settle_frames:] / target - 1.0) <= 0.2).mean()
        ),
        "mean_density_after_settle": float(dens_loc[settle_frames:].mean()),
        "mean_gt_density_after_settle": float(dens_gt[settle_frames:].mean()),
        "max_rel_dev_smoothed": float(np.abs(smooth_after / target - 1).max()),
        "pool_start": float(pool[0]),
        "pool_end": float(pool[-1]),
        "power_start_mw": float(power_tr[settle_frames]),
        "power_end_mw": float(power_tr[-1]),
        "power_max_mw": float(power_tr.max()),
        "n_power_changes": n_actions,
        "seconds": elapsed,
        "frames_per_s": n_frames / elapsed,
        "_traces": {
            "density_loc": dens_loc,
            "density_gt": dens_gt,
            "power_mw": power_tr,
            "pool": pool,
            "smooth": smooth,
        },
    }


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = res["_traces"]
    n = res["frames"]
    f = np.arange(n)
    win = res["smoothing_frames"]
    tgt = res["target_density_per_um2"]
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax[0].plot(f, tr["density_loc"], lw=0.3, color="0.7", label="localizations / µm² (frame)")
    ax[0].plot(f[win - 1 :], tr["smooth"], lw=1.2, label=f"{win}-frame mean")
    ax[0].plot(
        f,
        np.convolve(tr["density_gt"], np.ones(win) / win, "same"),
        lw=0.8,
        label="true active emitters / µm² (mean)",
    )
    ax[0].axhline(tgt, color="k", lw=0.8)
    ax[0].axhspan(0.8 * tgt, 1.2 * tgt, color="g", alpha=0.12, label="target ±20 %")
    ax[0].axvline(res["settle_frames"], color="r", ls=":", lw=0.8)
    ax[0].set_ylim(0, 3 * tgt)
    ax[0].set_ylabel("density (µm⁻²)")
    ax[0].legend(fontsize=7, loc="upper right")
    ax[0].set_title(
        f"closed-loop 405 nm control: {100 * res['fraction_within_20pct']:.1f} % of frames "
        f"within ±20 % after frame {res['settle_frames']}"
    )
    ax[1].semilogy(f, tr["power_mw"])
    ax[1].set_ylabel("405 nm power (mW)")
    ax[2].plot(f, tr["pool"])
    ax[2].set_ylabel("unbleached emitters")
    ax[2].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--size", type=int, default=128, help="frame edge, px")
    ap.add_argument("--target", type=float, default=0.2, help="localizations per µm² per frame")
    ap.add_argument("--settle", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/smlm_density"))
    a = ap.parse_args()
    res = run_density_loop(a.frames, (a.size, a.size), a.target, a.seed, a.settle)
    a.out.mkdir(parents=True, exist_ok=True)
    plot(res, a.out / "density.png")
    summary = {k: v for k, v in res.items() if not k.startswith("_")}
    (a.out / "density.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
