"""``smartscope demo --scenario events|ao|lowlight|stain``: run a smart controller on the virtual
microscope and write the plots a microscopist wants beside the run folder.

- events: detector score over time with the on/off thresholds, fast-mode spans, and the
  ground-truth constriction (onset → fission) of every event; ``events.png``.
- ao: mirror/wavefront Zernike amplitudes before and after (ground truth), a bead before
  and after, the metric over the probes; ``ao.png``.
- lowlight: laser power and SNR over time, the target band; ``lowlight.png``.
- stain: label-free frame, virtual stain, ground truth and disagreement map; trust
  (disagreement ratio, input shift) and Pearson r against the truth over time, with the
  operator's defocus excursion shaded; ``stain.png``.

Each also writes ``smart_summary.json`` (the scores against ground truth).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.controllers.ao import MARECHAL_RAD, residual_rms_rad
from smartscope.controllers.events import EventTriggerConfig
from smartscope.controllers.scenarios import (
    AORun,
    EventRun,
    LowlightRun,
    StainRun,
    random_aberration,
    run_ao_loop,
    run_events,
    run_lowlight,
    run_stain,
)

__all__ = ["SCENARIOS", "plot_ao", "plot_events", "plot_lowlight", "plot_stain", "run_demo"]

SCENARIOS = ("events", "ao", "lowlight", "stain")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_events(run: EventRun, path: Path) -> Path:
    plt = _plt()
    trig = EventTriggerConfig()
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, e in enumerate(run.events):
        ax.axvspan(
            e["onset_s"],
            e["fission_s"],
            color="tab:orange",
            alpha=0.25,
            label="constriction (truth)" if k == 0 else None,
        )
        ax.axvline(e["fission_s"], color="tab:red", lw=1, label="fission (truth)" if k == 0 else None)
    t = np.array([f["t_s"] for f in run.frames])
    fast = np.array([f["burst"] for f in run.frames])
    if t.size:
        ax.fill_between(
            t,
            0,
            1,
            where=fast,
            transform=ax.get_xaxis_transform(),
            color="tab:blue",
            alpha=0.15,
            step="post",
            label="fast mode",
        )
        ax.plot(t, np.full(t.size, -0.5), "|", color="k", ms=6, label="frames")
    if run.detector:
        dt, ds = zip(*run.detector, strict=True)
        ax.plot(dt, ds, ".-", color="tab:green", lw=1, ms=3, label="event score")
    ax.axhline(trig.on_threshold, ls="--", color="tab:green", lw=0.8, label="on / off thresholds")
    ax.axhline(trig.off_threshold, ls=":", color="tab:green", lw=0.8)
    s = run.scores
    ax.set_title(
        f"events ({run.mode}): fission imaged fast {s['fission_fast_fraction']:.0%}, "
        f"caught {s['caught_fraction']:.0%}, "
        f"median delay {s['median_delay_s']:.1f} s, {s['n_burst_frames']}/{s['n_frames']} fast frames"
    )
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("detector score (robust z)")
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bead_images(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    import tifffile

    tif = run_dir / "raw.ome.tif"
    if not tif.exists():
        return None
    with tifffile.TiffFile(tif) as t:
        n = len(t.pages)
        return np.asarray(t.pages[0].asarray()), np.asarray(t.pages[n - 1].asarray())


def plot_ao(run: AORun, path: Path) -> Path:
    from smartscope.simulators.optics import Optics, strehl_ratio

    plt = _plt()
    optics = Optics(na=1.4, n_immersion=1.518, wavelength_nm=670, pixel_size_um=0.1)
    before = np.asarray(run.aberration_rad)
    after = np.zeros(max(before.size, len(run.final_rad)))
    after[: len(run.final_rad)] = run.final_rad
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), gridspec_kw={"width_ratios": [2, 1, 1, 1.5]})
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
    axes[0].set_title(f"wavefront (Maréchal {MARECHAL_RAD:.3f} rad), {run.images} images")
    axes[0].legend(fontsize=7)
    imgs = _bead_images(Path(run.run_dir))
    if imgs is not None:
        vmax = float(max(imgs[0].max(), imgs[1].max()))
        for ax, im, title in (
            (axes[1], imgs[0], "first frame"),
            (axes[2], imgs[1], "last frame (corrected)"),
        ):
            ax.imshow(im, cmap="gray", vmin=100, vmax=vmax)
            ax.set_title(title)
            ax.axis("off")
    centre = {h["pass"]: h["m0"] for h in run.history if "mode" in h}
    axes[3].plot(list(centre), list(centre.values()), "o-")
    axes[3].set_xlabel("pass")
    axes[3].set_ylabel("sharpness at the pass centre")
    axes[3].set_title("image metric")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lowlight(fixed: LowlightRun, ctl: LowlightRun, target: float, path: Path) -> Path:
    plt = _plt()
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for run, label in ((fixed, "fixed"), (ctl, "SNR controller")):
        x = np.linspace(0, run.frames, len(run.snr))
        a0.plot(
            x, run.power_mw, label=f"{label}: dose {run.dose_mj:.0f} mJ, dye left {run.bleach_remaining:.2f}"
        )
        a1.plot(x, run.snr, ".", ms=3, label=label)
    a1.axhline(target, color="k", ls="--", lw=0.8, label="target SNR")
    a0.set_ylabel("561 nm power (mW)")
    a1.set_ylabel("SNR (denoiser estimate)")
    a1.set_xlabel("frame")
    a0.legend(fontsize=8)
    a1.legend(fontsize=8)
    a0.set_title("low-light dose control: power and SNR over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _composite(stack: np.ndarray) -> np.ndarray:
    """(3, H, W) nuclei/mitochondria/membrane -> RGB (membrane red, mitochondria green, nuclei blue)."""
    rgb = np.stack([stack[2], stack[1], stack[0]], axis=-1).astype(np.float64)
    hi = np.percentile(rgb, 99.5, axis=(0, 1))
    return np.asarray(np.clip(rgb / np.maximum(hi, 1e-9), 0, 1))


def stain_summary(run: StainRun) -> dict[str, Any]:
    """Pearson r per channel and the trust figures, in focus vs defocused (ground truth)."""
    out: dict[str, Any] = {"frames_stored": run.frames_stored, "frames_analysed": len(run.frames)}
    for label, sel in (("in_focus", lambda z: abs(z) < 1e-6), ("defocused", lambda z: abs(z) >= 1e-6)):
        rows = [r for r in run.frames if sel(r["z_um"])]
        if not rows:
            continue
        part: dict[str, float] = {"frames": float(len(rows))}
        for key in ("disagreement_ratio", "input_shift", "trusted", *[f"pearson:{c}" for c in run.channels]):
            vals = [float(r[key]) for r in rows if key in r]
            if vals:
                part[key] = float(np.mean(vals))
        out[label] = part
    out["dose_mj"] = run.dose_mj
    return out


def plot_stain(run: StainRun, path: Path) -> Path:
    plt = _plt()
    fig = plt.figure(figsize=(13, 7.5))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 0.9])
    if run.first:
        panels = [
            ("label-free (acquired)", run.first["label_free"], "gray"),
            ("virtual stain", _composite(run.first["virtual"]), None),
            ("ground truth", _composite(run.first["truth"]), None),
            ("disagreement (mean of channels)", run.first["disagreement"].mean(axis=0), "magma"),
        ]
        for k, (title, img, cmap) in enumerate(panels):
            ax = fig.add_subplot(grid[0, k])
            ax.imshow(img, cmap=cmap)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    idx = np.array([r["index"] for r in run.frames])
    if idx.size:
        z = np.array([r["z_um"] for r in run.frames])
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
            vals = [r.get(key, np.nan) for r in run.frames]
            ax.plot(idx, vals, style, ms=3, lw=1, label=key.replace("_", " "))
        r_max, z_max = run.trust_limits
        ax.axhline(
            r_max, ls="--", color="tab:blue", lw=0.8, label=f"trust limits (ratio {r_max:.2f}, |z| {z_max:g})"
        )
        ax.axhline(z_max, ls=":", color="tab:orange", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("frame")
        ax.set_ylabel("trust signals (log)")
        ax2 = ax.twinx()
        for c in run.channels:
            ax2.plot(idx, [r.get(f"pearson:{c}", np.nan) for r in run.frames], lw=1.2, label=f"Pearson r {c}")
        ax2.set_ylim(-0.1, 1.0)
        ax2.set_ylabel("Pearson r vs ground truth")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4)
    fig.suptitle("live virtual staining on the virtual microscope (label-free frames only, lasers off)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(scenario: str, out: Path = Path("runs"), seed: int = 0) -> Path:
    """Run one demo scenario; returns the PNG path (in the run folder)."""
    out.mkdir(parents=True, exist_ok=True)
    if scenario == "events":
        ev = run_events(out, "triggered", seed=seed + 1, duration_s=60.0)
        png = plot_events(ev, Path(ev.run_dir) / "events.png")
        summary: dict[str, Any] = {
            "scores": _json_safe(ev.scores),
            "dose_mj": ev.dose_mj,
            "switches": ev.switches,
        }
    elif scenario == "ao":
        a = random_aberration(seed).tolist()
        ao = run_ao_loop(out, a)
        png = plot_ao(ao, Path(ao.run_dir) / "ao.png")
        summary = {
            "aberration_rad": ao.aberration_rad,
            "final_rad": ao.final_rad,
            "rms_before_rad": residual_rms_rad(ao.aberration_rad),
            "rms_after_rad": residual_rms_rad(ao.final_rad),
            "images": ao.images,
        }
    elif scenario == "lowlight":
        fixed = run_lowlight(out, False, power_mw=20.0, n_frames=600, seed=seed)
        ctl = run_lowlight(out, True, power_mw=20.0, target_snr=2.0, n_frames=600, seed=seed)
        png = plot_lowlight(fixed, ctl, 2.0, Path(ctl.run_dir) / "lowlight.png")
        summary = {
            "fixed": {"dose_mj": fixed.dose_mj, "dye_left": fixed.bleach_remaining},
            "controlled": {"dose_mj": ctl.dose_mj, "dye_left": ctl.bleach_remaining},
        }
    elif scenario == "stain":
        st = run_stain(out, seed=seed)
        png = plot_stain(st, Path(st.run_dir) / "stain.png")
        summary = stain_summary(st)
    else:
        raise ValueError(f"scenario must be one of {list(SCENARIOS)}, got {scenario!r}")
    (png.parent / "smart_summary.json").write_text(
        json.dumps(summary, indent=2, default=float), encoding="utf-8"
    )
    _add_to_report(png)
    return png


def _add_to_report(png: Path) -> None:
    """Rewrite the run's report.html with the scenario plot inlined after the loop's own."""
    import base64

    from smartscope.report import write_report

    b64 = base64.b64encode(png.read_bytes()).decode("ascii")
    write_report(png.parent, {f"scenario: {png.stem}": b64})
