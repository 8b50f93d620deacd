"""The run report: plots a microscopist checks after a run, built from the run folder.

Everything is read back from the files on disk (never from memory), so a report can be
made for any run folder, including one recovered after a crash:
``smartscope report RUN_DIR``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.storage import read_jsonl


def _fig_to_b64(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _controlled_series(frames: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-frame values of every setting the state carries (exposure, lasers, interval)."""
    series: dict[str, list[float]] = {}
    n = len(frames)
    for i, rec in enumerate(frames):
        state = rec.get("state", {})
        flat = {"exposure_ms": state.get("exposure_ms"), "interval_ms": state.get("interval_ms")}
        for name, p in dict(state.get("lasers", {})).items():
            flat[f"laser {name} (mW)"] = p
        for key, val in flat.items():
            if val is None:
                continue
            series.setdefault(key, [float("nan")] * n)[i] = float(val)
    return {
        k: v for k, v in series.items() if np.nanstd(np.asarray(v, dtype=float)) > 0 or k == "exposure_ms"
    }


def _steered_statistic(
    run_dir: Path, analysis: list[dict[str, Any]]
) -> tuple[str | None, str | None, tuple[float, float] | None]:
    """The statistic a band controller steers (and its band), else the first one there is."""
    import yaml

    cfg_path = run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    for ctl in (cfg or {}).get("controllers", []):
        if ctl.get("kind") == "exposure_band":
            return ctl["stage"], ctl["statistic"], (ctl["low"], ctl["high"])
    for a in analysis:
        for stage, vals in a.get("values", {}).items():
            for key in ("p99_adu", "mean_adu", "snr", "density_per_um2"):
                if key in vals:
                    return stage, key, None
    return None, None, None


def make_figures(run_dir: Path) -> dict[str, str]:
    """PNG figures (base64) keyed by title."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = read_jsonl(run_dir / "frames.jsonl")
    analysis = [a for a in read_jsonl(run_dir / "analysis.jsonl") if "times" in a]
    actions = read_jsonl(run_dir / "actions.jsonl")
    figs: dict[str, str] = {}
    if not frames:
        return figs
    cam = {f["index"]: f["camera_time_s"] for f in frames}
    t0 = frames[0]["camera_time_s"]

    # latency histogram -------------------------------------------------------
    dec = [
        1e3 * (a["times"]["decided"] - a["times"]["camera"])
        for a in analysis
        if "decided" in a["times"] and "camera" in a["times"]
    ]
    act = [
        1e3 * (r["applied_time_s"] - cam[r["request"]["frame_index"]])
        for r in actions
        if r.get("applied_time_s") and r["request"].get("frame_index") in cam
    ]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if dec:
        ax.hist(dec, bins=50, alpha=0.7, label=f"camera→decision (n={len(dec)})")
    if act:
        ax.hist(act, bins=30, alpha=0.7, label=f"camera→action applied (n={len(act)})")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.legend()
    ax.set_title("Loop latency")
    figs["Latency"] = _fig_to_b64(fig)
    plt.close(fig)

    # controlled parameters and the statistic they steer ----------------------
    series = _controlled_series(frames)
    t = np.array([f["camera_time_s"] - t0 for f in frames])
    fig, axes = plt.subplots(len(series) + 1, 1, figsize=(7, 2.0 * (len(series) + 1)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (key, vals) in zip(axes, series.items(), strict=False):
        ax.step(t, vals, where="post")
        ax.set_ylabel(key)
    ax = axes[-1]
    stage, stat, band = _steered_statistic(run_dir, analysis)
    plotted = False
    if stage is not None and stat is not None:
        pts = [
            (cam[a["index"]] - t0, a["values"][stage][stat])
            for a in analysis
            if stat in a.get("values", {}).get(stage, {}) and a["index"] in cam
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), ".", ms=2, color="C1")
            ax.set_ylabel(f"{stage}.{stat}")
            plotted = True
        if band is not None:
            ax.axhspan(band[0], band[1], color="C2", alpha=0.15, label="target band")
            ax.legend(loc="upper right", fontsize=8)
    for r in actions:
        if r.get("applied_time_s"):
            for a_ in axes:
                a_.axvline(r["applied_time_s"] - t0, color="0.8", lw=0.5, zorder=0)
    if not plotted:
        ax.set_ylabel("(no statistic)")
    axes[-1].set_xlabel("time since first frame (s)")
    axes[0].set_title("Controlled parameters (grey lines: actions applied)")
    figs["Control"] = _fig_to_b64(fig)
    plt.close(fig)

    # processed vs skipped ------------------------------------------------------
    idx = np.array([f["index"] for f in frames])
    done = np.zeros(len(idx) and idx.max() + 1, dtype=bool)
    for a in analysis:
        if a["index"] < len(done):
            done[a["index"]] = True
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(np.cumsum(np.ones_like(done)), label="raw frames stored")
    ax.plot(np.cumsum(done), label="analysed")
    ax.plot(np.cumsum(~done), label="skipped (analysis behind)")
    ax.set_xlabel("frame index")
    ax.set_ylabel("cumulative frames")
    ax.legend()
    ax.set_title("Frames processed vs skipped")
    figs["Frames"] = _fig_to_b64(fig)
    plt.close(fig)
    return figs


def write_report(run_dir: Path, extra_figures: dict[str, str] | None = None) -> Path:
    """Write ``report.html`` (self-contained: figures inlined) into ``run_dir``."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    figs = make_figures(run_dir)
    if extra_figures:
        figs.update(extra_figures)

    def cell(v: Any) -> str:
        return html.escape(json.dumps(v) if isinstance(v, dict) else str(v))

    rows = "".join(f"<tr><td>{cell(k)}</td><td>{cell(v)}</td></tr>" for k, v in metrics.items())
    imgs = "".join(
        f'<h2>{html.escape(k)}</h2><img src="data:image/png;base64,{v}"/>' for k, v in figs.items()
    )
    page = (
        "<!doctype html><meta charset='utf-8'><title>smartscope run</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}"
        "td{padding:2px 8px;border-bottom:1px solid #ddd}</style>"
        f"<h1>smartscope run {html.escape(run_dir.name)}</h1><table>{rows}</table>{imgs}"
    )
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
