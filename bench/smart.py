"""Smart-acquisition controllers measured against the simulator's ground truth.

Events table: the ``events`` scenario (mitochondrial fission, random onsets; each
constriction lasts 2–5 s) on the virtual microscope through MMCore and the real loop,
``--duration`` simulated seconds per seed; fixed slow (1 s), fixed fast (100 ms), and
triggered 1 s ⇄ 100 ms by the classical detector (default trigger, and the trigger setting
that ``bench/events_sweep.py`` chose on held-out fields, :data:`CLASSICAL_TUNED`) and, with
``--events-bundle`` (default: the shipped ``events-unet-small``, skipped if missing), by the
U-Net heat map, with the on/off thresholds from its calibration (percentiles of held-out
quiet frames' scores, chosen at training). Triggered runs
use the camera's ``--pacing`` (default RealTime: the simulated clock follows the wall clock,
so a decision applies from the next frame on, as on a microscope, but the loop's latency on
a loaded host adds to it; AsFastAsPossible renders frames as fast as it can, and the
simulated clock runs seconds ahead of each decision). The same triggers are then replayed
offline on the same seeds (:func:`smartscope.models.events.policy.replay`: same detector
stages and hysteresis, no host latency). Columns: events whose fission moment was imaged
in fast mode, events with any fast frame in [onset, fission + 5 s], median delay from onset
to the first fast frame, fast frames outside every event window, light dose relative to
fixed fast (simulator dose ledger, 561 nm; replay: frames / frames of fixed fast); then the
onset → first fast frame and burst start → fission percentiles, and the fission moments
imaged fast by constriction time.

AO table: ``--ao-trials`` random aberrations, total RMS uniform in 0.5–1.5 rad over
Noll modes 4–11 (piston/tip/tilt excluded: they do not blur), on the ``beads`` scenario
(128² px, 50 ms) through MMCore (mirror properties, snapImage); modal sensorless AO
(sharpness metric, 5 passes of 2N+1 = 17 images, bias 1 → 0.24 rad, step ≤ 1 bias,
plus one image per backtrack); the learned estimator (``--zernike-bundle``), one image
behind +1 rad of defocus per step, after 1, 2 and 3 steps (``--ao-refine``: then 2 modal
passes). Residual RMS over modes 4–11 and Strehl (pupil integral, 670 nm) before/after
from the known aberration and the mirror shape; Maréchal: λ/14 = 0.449 rad.

Low-light table: the ``lowlight`` scenario (cells at 5 % brightness, 256² px, 10 ms,
``--lowlight-frames`` frames) with the shipped N2V denoiser as the live stage; fixed 561 nm
power (20, 15 and 28 mW; 28 mW is about what the controller ends at, i.e. a fixed
setting that holds the target to the end) vs the SNR dose controller (target SNR 2.0 on the
stage's ``snr``, starting at 20 mW). SNR over analysed frames; dose from the simulator's
ledger; dye left at the end from the simulator's bleaching ground truth.

    nice python bench/smart.py --seeds 1 2 3 4 5 --duration 60 --ao-trials 20 --lowlight-frames 800 \
        --out bench/results/smart

Prints markdown tables; writes ``smart.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config import (
    EventDetectorConfig,
    EventsScenario,
    EventTriggerConfig,
    LearnedEventDetectorConfig,
    LowlightScenario,
    ModalAOConfig,
)
from smartscope.controllers.ao import MARECHAL_RAD, modal_correct, residual_rms_rad
from smartscope.models import BUNDLES_DIR
from smartscope.models.events.policy import TriggerSetting
from smartscope.models.events.policy import replay as policy_replay
from smartscope.models.events.stage import ClassicalEventDetector, LearnedEventDetector, trigger_thresholds
from smartscope.scenarios import events, lowlight
from smartscope.scenarios.ao import random_aberration
from smartscope.simulators.harness import AberratedMirror
from smartscope.simulators.optics import Optics, strehl_ratio

# the classical trigger's best setting on held-out fields within the dose budget:
# python bench/events_sweep.py --out bench/results/smart/events_sweep.md (29 % of 38 fission
# moments fast at 0.29 of the fixed-fast dose on held-out seeds 9000–9005)
CLASSICAL_TUNED: dict[str, float] = {
    "on_threshold": 8.0,
    "off_threshold": 7.6,
    "min_burst_s": 0.0,
    "max_burst_s": 10.0,
    "cooldown_s": 0.0,
}


def _events_row(
    mode: str, pacing: str, scores: list[dict[str, Any]], dose_mj: float | None, dose_rel_fast: float
) -> dict[str, Any]:
    n_ev = sum(r["n_events"] for r in scores)
    delays = sorted(d for r in scores for d in r["delays_s"])
    return {
        "mode": mode,
        "pacing": pacing,
        "events": n_ev,
        "fission_fast": sum(r["fission_fast_fraction"] * r["n_events"] for r in scores) / n_ev,
        "caught": sum(r["caught_fraction"] * r["n_events"] for r in scores) / n_ev,
        "median_delay_s": float(np.median(delays)) if delays else float("nan"),
        "delays_s": delays,
        "leads_s": sorted(d for r in scores for d in r["leads_s"]),
        "per_event": [e for r in scores for e in r["per_event"]],
        "frames": sum(r["n_frames"] for r in scores),
        "fast_frames": sum(r["n_burst_frames"] for r in scores),
        "spurious_fast_frames": sum(r["spurious_burst_frames"] for r in scores),
        "dose_mj": dose_mj,
        "dose_rel_fast": dose_rel_fast,
    }


def _setting(cfg: EventTriggerConfig) -> TriggerSetting:
    """The replay's trigger setting for the trigger configuration a closed-loop run uses."""
    return TriggerSetting(
        cfg.on_threshold,
        cfg.off_threshold,
        cfg.min_burst_s,
        cfg.max_burst_s if cfg.max_burst_s is not None else float("inf"),
        cfg.cooldown_s,
        cfg.min_on_frames,
    )


def events_table(
    seeds: list[int],
    duration_s: float,
    work: Path,
    unet: Path | None = None,
    pacing: str = "RealTime",
    replay: bool = True,
) -> list[dict[str, Any]]:
    """Closed-loop runs (fixed slow and fast, and the triggers with ``pacing``), then the
    same triggers replayed offline on the same seeds (no host latency)."""
    runs: dict[str, list[Any]] = {}
    for mode in ("slow", "fast"):  # fixed rates: no decisions, the pacing does not matter
        runs[mode] = [
            events.run(EventsScenario(mode=mode, seed=s, duration_s=duration_s), work) for s in seeds
        ]
    triggered: dict[str, dict[str, Any]] = {
        "triggered (classical detector, default trigger)": {},
        "triggered (classical detector, trigger tuned on held-out fields)": {"trigger": CLASSICAL_TUNED},
    }
    if unet is not None:
        triggered["triggered (U-Net, trigger from its calibration)"] = {"learned_bundle": unet}
    for label, kw in triggered.items():
        runs[label] = [
            events.run(EventsScenario(seed=s, duration_s=duration_s, pacing=pacing, **kw), work)
            for s in seeds
        ]
    fast_dose = sum(r.dose_mj for r in runs["fast"])
    rows = [
        _events_row(
            mode,
            pacing if mode.startswith("triggered") else "AsFastAsPossible",
            [r.scores for r in rs],
            sum(r.dose_mj for r in rs),
            sum(r.dose_mj for r in rs) / fast_dose,
        )
        for mode, rs in runs.items()
    ]
    if not replay:
        return rows
    classical = (lambda: ClassicalEventDetector(EventDetectorConfig()), _setting(EventTriggerConfig()))
    settings: dict[str, tuple[Any, TriggerSetting]] = {
        "triggered (classical detector, default trigger)": classical,
        "triggered (classical detector, trigger tuned on held-out fields)": (
            classical[0],
            _setting(EventTriggerConfig(**CLASSICAL_TUNED)),
        ),
    }
    if unet is not None:
        settings["triggered (U-Net, trigger from its calibration)"] = (
            lambda: LearnedEventDetector(LearnedEventDetectorConfig(bundle=unet, backend="onnxruntime")),
            _setting(EventTriggerConfig(**trigger_thresholds(unet))),
        )
    for label, (make, setting) in settings.items():
        reps = [policy_replay(make(), setting, s, duration_s) for s in seeds]
        rows.append(
            _events_row(
                label,
                "offline replay (no host latency)",
                reps,
                None,
                float(np.mean([r["dose_rel_fast"] for r in reps])),
            )
        )
    return rows


def _pct(v: list[float], q: float) -> str:
    return f"{np.percentile(v, q):.1f}" if v else "–"


CONSTRICTION_BINS_S = ((2.0, 3.0), (3.0, 4.0), (4.0, 5.01))  # the simulator draws 2–5 s


def _print_events(rows: list[dict[str, Any]], seeds: list[int], duration_s: float) -> None:
    print(f"\n### Event-triggered acquisition ({len(seeds)} seeds × {duration_s:g} s simulated, 256² px)\n")
    print(
        "| mode | camera pacing | events | fission imaged fast | caught (fast frame in event) "
        "| median delay onset→fast (s) | frames | fast frames | spurious fast frames | dose (mJ) "
        "| dose / fixed fast |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['pacing']} | {r['events']} | {r['fission_fast']:.0%} | {r['caught']:.0%} | "
            f"{r['median_delay_s']:.1f} | {r['frames']} | {r['fast_frames']} | {r['spurious_fast_frames']} | "
            f"{'–' if r['dose_mj'] is None else format(r['dose_mj'], '.1f')} | {r['dose_rel_fast']:.2f} |"
        )
    print(
        "\nOnset → first fast frame (caught events) and burst start → fission (events whose fission "
        "was imaged fast), percentiles in s:\n"
    )
    print("| mode | caught | delay p10 | p25 | p50 | p75 | p90 | imaged fast | lead p10 | p50 | p90 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["mode"].startswith("triggered"):
            continue
        d, le = r["delays_s"], r["leads_s"]
        print(
            f"| {r['mode']}, {r['pacing']} | {len(d)} | {_pct(d, 10)} | {_pct(d, 25)} | {_pct(d, 50)} | "
            f"{_pct(d, 75)} | {_pct(d, 90)} | {len(le)} | {_pct(le, 10)} | {_pct(le, 50)} | {_pct(le, 90)} |"
        )
    print("\nFission moments imaged fast by constriction time (onset → fission; events in each bin):\n")
    heads = " | ".join(f"{a:g}–{round(b):g} s" for a, b in CONSTRICTION_BINS_S)
    print(f"| mode | {heads} |")
    print("|---|" + "---|" * len(CONSTRICTION_BINS_S))
    for r in rows:
        if not r["mode"].startswith("triggered"):
            continue
        cells = []
        for a, b in CONSTRICTION_BINS_S:
            sel = [e["fission_fast"] for e in r["per_event"] if a <= e["constriction_s"] < b]
            cells.append(f"{np.mean(sel):.0%} of {len(sel)}" if sel else "–")
        print(f"| {r['mode']}, {r['pacing']} | " + " | ".join(cells) + " |")


REFINE = ModalAOConfig(bias_rad=0.5, passes=2)
LEARNED_STEPS = 3


def ao_table(trials: int, bundle: Path | None, refine: bool = False) -> dict[str, Any]:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from smartscope.simulators import virtual_config_path

    core = UniMMCore()
    core.loadSystemConfiguration(str(virtual_config_path()))
    core.setProperty("Camera", "Scenario", "beads")
    core.setProperty("Camera", "SensorSize", "128")
    core.setProperty("Camera", "Pacing", "AsFastAsPossible")
    core.setExposure(50)
    optics = Optics(na=1.4, n_immersion=1.518, wavelength_nm=670, pixel_size_um=0.1)
    est = None
    if bundle is not None:
        from smartscope.models.ao.stage import LearnedZernikeEstimator

        est = LearnedZernikeEstimator(bundle)
    rows: dict[str, list[dict[str, Any]]] = {}

    def add(method: str, seed: int, a: np.ndarray, tot: np.ndarray, images: int) -> None:
        rows.setdefault(method, []).append(
            {
                "seed": seed,
                "rms_before": residual_rms_rad(a),
                "rms_after": residual_rms_rad(tot),
                "strehl_before": strehl_ratio(optics, a),
                "strehl_after": strehl_ratio(optics, tot),
                "images": images,
            }
        )

    try:
        for k in range(trials):
            seed = 1000 + k
            a = random_aberration(seed)
            h = AberratedMirror(core, a)
            res = modal_correct(h, ModalAOConfig())
            add("modal 2N+1 (sharpness, 5 passes)", seed, a, h.total(res.correction_rad), res.images)
            if est is not None:
                h = AberratedMirror(core, a)
                c = np.zeros(11)
                for step in range(1, LEARNED_STEPS + 1):  # one image behind +δ·Z4 per step
                    c = est.correct(h, start_rad=c, steps=1)
                    add(
                        f"learned, {step} step{'s' if step > 1 else ''} of one image",
                        seed,
                        a,
                        h.total(c),
                        h.images,
                    )
                if refine:
                    ref = modal_correct(h, REFINE, start_rad=c)
                    add(
                        f"learned {LEARNED_STEPS} steps + modal refine (2 passes, bias 0.5)",
                        seed,
                        a,
                        h.total(ref.correction_rad),
                        h.images,
                    )
    finally:
        core.unloadAllDevices()
        if est is not None:
            est.close()
    return rows


def _print_ao(ao: dict[str, list[dict[str, Any]]]) -> None:
    n = len(next(iter(ao.values())))
    print(f"\n### Adaptive optics ({n} random aberrations, 0.5–1.5 rad RMS over Noll 4–11)\n")
    print(
        "| method | RMS before (rad, median) | RMS after (median) | RMS after (worst) "
        "| Strehl before (median) | Strehl after (median) | below Maréchal (0.449 rad) | images (median) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for method, rows in ao.items():

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return float(np.median([r[key] for r in rows]))

        ok = sum(r["rms_after"] < MARECHAL_RAD for r in rows) / len(rows)
        print(
            f"| {method} | {med('rms_before'):.2f} | {med('rms_after'):.3f} | "
            f"{max(r['rms_after'] for r in rows):.3f} | {med('strehl_before'):.2f} | "
            f"{med('strehl_after'):.3f} | {ok:.0%} | {med('images'):.0f} |"
        )
    if len(ao) == 1:
        print("| learned estimator | not run (no --zernike-bundle) | | | | | | |")


def lowlight_table(n_frames: int, work: Path, target: float = 2.0) -> list[dict[str, Any]]:
    rows = []
    for label, controlled, mw in (
        ("fixed 20 mW", False, 20.0),
        ("fixed 15 mW", False, 15.0),
        ("fixed 28 mW (≈ the controller's final power)", False, 28.0),
        (f"SNR controller (target {target:g})", True, 20.0),
    ):
        params = LowlightScenario(controlled=controlled, power_mw=mw, target_snr=target, n_frames=n_frames)
        r = lowlight.run_once(params, work)
        snr = np.asarray(r.snr)
        rows.append(
            {
                "mode": label,
                "frames": r.frames,
                "analysed": int(snr.size),
                "snr_mean": float(snr.mean()),
                "snr_p5": float(np.percentile(snr, 5)),
                "frac_at_target": float(np.mean(snr >= target * 0.95)),
                "power_mean_mw": float(np.mean(r.power_mw)),
                "power_last_mw": float(r.power_mw[-1]),
                "dose_mj": r.dose_mj,
                "dye_left": r.bleach_remaining,
            }
        )
    return rows


def _print_lowlight(rows: list[dict[str, Any]]) -> None:
    print(f"\n### Low-light dose control ({rows[0]['frames']} frames, N2V denoiser live)\n")
    print(
        "| mode | analysed frames | SNR mean | SNR 5th pct | frames ≥ 0.95·target | mean power (mW) "
        "| final power (mW) | dose (mJ) | dye left at end |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['analysed']} | {r['snr_mean']:.2f} | {r['snr_p5']:.2f} | "
            f"{r['frac_at_target']:.0%} | {r['power_mean_mw']:.1f} | {r['power_last_mw']:.1f} | "
            f"{r['dose_mj']:.1f} | {r['dye_left']:.3f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--duration", type=float, default=60.0, help="simulated seconds per events run")
    ap.add_argument("--ao-trials", type=int, default=20)
    ap.add_argument("--lowlight-frames", type=int, default=800)
    ap.add_argument(
        "--ao-refine", action="store_true", help="also refine the learned correction with modal passes"
    )
    ap.add_argument(
        "--events-bundle",
        type=Path,
        default=BUNDLES_DIR / "events-unet-small",
        help="learned event heat-map bundle (skipped if missing)",
    )
    ap.add_argument(
        "--zernike-bundle",
        type=Path,
        default=BUNDLES_DIR / "ao-zernike-small",
        help="learned Zernike estimator bundle (skipped if missing)",
    )
    ap.add_argument(
        "--pacing",
        choices=["RealTime", "AsFastAsPossible"],
        default="RealTime",
        help="virtual camera pacing of the triggered events runs (RealTime: 60 s of wall clock per run)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results: dict[str, Any] = {"seeds": args.seeds, "duration_s": args.duration}
    if args.events_bundle is not None and not args.events_bundle.exists():
        args.events_bundle = None
    if args.zernike_bundle is not None and not args.zernike_bundle.exists():
        args.zernike_bundle = None
    with tempfile.TemporaryDirectory() as tmp:
        results["events"] = events_table(
            args.seeds, args.duration, Path(tmp), args.events_bundle, args.pacing
        )
    _print_events(results["events"], args.seeds, args.duration)
    if args.ao_trials > 0:
        results["ao"] = ao_table(args.ao_trials, args.zernike_bundle, args.ao_refine)
        _print_ao(results["ao"])
    if args.lowlight_frames > 0:
        with tempfile.TemporaryDirectory() as tmp:
            results["lowlight"] = lowlight_table(args.lowlight_frames, Path(tmp))
        _print_lowlight(results["lowlight"])
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "smart.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
