"""Smart-acquisition scenarios on the virtual microscope: configs, runs, ground-truth scores.

:func:`virtual_cfg_file` writes a Micro-Manager ``.cfg`` for the virtual microscope with
a chosen scenario, seed, sensor size, pacing and camera frame interval (so a run config
can start from it); :func:`demo_config` returns a run-config dict per demo scenario;
:func:`run_events` runs the event scenario (fixed slow, fixed fast or triggered) through
the real loop and MMCore and scores it against the simulator's ground truth
(:func:`score_events`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smartscope.controllers.ao import ModalAOConfig
from smartscope.controllers.events import EventDetectorConfig, EventTriggerConfig
from smartscope.controllers.lowlight import SNRDoseConfig
from smartscope.frame import Frame
from smartscope.loop import ListenerBase
from smartscope.pipeline import StageOutput

__all__ = [
    "AORun",
    "EventRun",
    "LowlightRun",
    "StainRun",
    "ao_config",
    "demo_config",
    "lowlight_config",
    "random_aberration",
    "run_ao_loop",
    "run_events",
    "run_lowlight",
    "run_stain",
    "score_events",
    "stain_config",
    "virtual_cfg_file",
]

EVENTS_SLOW_MS = 1000.0
EVENTS_FAST_MS = 100.0


def virtual_cfg_file(
    path: Path,
    scenario: str,
    seed: int = 0,
    sensor_px: int = 256,
    pacing: Literal["RealTime", "AsFastAsPossible"] = "AsFastAsPossible",
    interval_ms: float = 0.0,
    exposure_ms: float = 10.0,
    mirror_rad: Sequence[float] = (),
) -> Path:
    """Write a virtual-microscope ``.cfg`` (the shipped one with these start-up values)."""
    from smartscope.simulators import virtual_config_path

    base = Path(virtual_config_path()).read_text(encoding="utf-8").splitlines()
    values = {
        "Scenario": scenario,
        "Seed": str(int(seed)),
        "SensorSize": str(int(sensor_px)),
        "Pacing": pacing,
        "Exposure": f"{exposure_ms:g}",
    }
    lines = []
    for line in base:
        parts = line.split(",")
        if line.startswith("#py Property,Camera,") and len(parts) == 4 and parts[2] in values:
            line = f"#py Property,Camera,{parts[2]},{values.pop(parts[2])}"
        lines.append(line)
    # properties the shipped file does not set go after the camera is created
    extra = [f"#py Property,Camera,{k},{v}" for k, v in values.items()]
    extra.append(f"#py Property,Camera,Interval_ms,{interval_ms:g}")
    extra += [f"#py Property,Mirror,Z{j},{v:.6g}" for j, v in enumerate(mirror_rad, start=1) if v]
    at = max(i for i, ln in enumerate(lines) if ln.startswith("#py Property,Camera,")) + 1
    lines[at:at] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _microscope(cfg_file: Path, lasers: Sequence[str]) -> dict[str, Any]:
    return {
        "driver": "pymmcore-plus",
        "config_file": str(cfg_file),
        "camera": "Camera",
        "focus": "Z",
        "mirror": "Mirror",
        "lasers": {
            name: {"device": f"Laser{name}", "wavelength_nm": float(name), "max_power_mw": 100.0}
            for name in lasers
        },
    }


def events_config(
    out: Path,
    mode: Literal["slow", "fast", "triggered"] = "triggered",
    seed: int = 0,
    sensor_px: int = 256,
    n_frames: int = 2000,
    pacing: Literal["RealTime", "AsFastAsPossible"] = "AsFastAsPossible",
    trigger: Mapping[str, Any] | None = None,
    detector: Mapping[str, Any] | None = None,
    learned_bundle: Path | None = None,
) -> dict[str, Any]:
    """Run config for the ``events`` scenario: slow (1 s), fast (100 ms) or triggered."""
    interval = EVENTS_FAST_MS if mode == "fast" else EVENTS_SLOW_MS
    cfg_file = virtual_cfg_file(
        out / f"virtual-events-{mode}-{seed}.cfg", "events", seed, sensor_px, pacing, interval
    )
    controllers: list[dict[str, Any]] = []
    if mode == "triggered":
        thresholds: dict[str, Any] = {}
        if learned_bundle is not None:  # the bundle's held-out-calibrated thresholds
            from smartscope.models.events.heatmap import trigger_thresholds

            thresholds = dict(trigger_thresholds(learned_bundle))
        tcfg = EventTriggerConfig(
            **{**thresholds, **(trigger or {})},  # explicit trigger settings win
            pacing="camera",
            slow_interval_ms=EVENTS_SLOW_MS,
            fast_interval_ms=EVENTS_FAST_MS,
        )
        controllers.append(tcfg.model_dump(mode="json"))
    return {
        "microscope": _microscope(cfg_file, ["561"]),
        "acquisition": {"exposure_ms": 10.0, "n_frames": n_frames, "lasers_mw": {"561": 10.0}},
        "pipeline": {
            "stages": [_detector_cfg(detector, learned_bundle)],
            "save_outputs": True,
        },
        "controllers": controllers,
        "limits": {"laser_max_mw": {"561": 50.0}},
        "storage": {"root": str(out), "name": f"events-{mode}"},
    }


def random_aberration(
    seed: int, rms_range_rad: tuple[float, float] = (0.5, 1.5), modes: Sequence[int] = range(4, 12)
) -> np.ndarray:
    """Random Noll amplitudes (j = 1..max(modes)) with total RMS uniform in the range."""
    rng = np.random.default_rng(seed)
    a = np.zeros(max(modes))
    idx = np.asarray(list(modes)) - 1
    a[idx] = rng.normal(size=idx.size)
    a *= rng.uniform(*rms_range_rad) / float(np.sqrt((a[idx] ** 2).sum()))
    return a


def ao_config(
    out: Path,
    aberration_rad: Sequence[float],
    n_frames: int = 600,
    sensor_px: int = 128,
    ao: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run config for modal AO on the ``beads`` scenario; the mirror starts at the aberration.

    The simulator has one wavefront (the mirror's): the sample aberration is the mirror's
    start-up shape and the controller's commands are ``base_rad + correction`` with
    ``base_rad`` that shape; the controller estimates its correction from images only.
    """
    cfg_file = virtual_cfg_file(
        out / f"virtual-beads-{seed}.cfg",
        "beads",
        seed,
        sensor_px,
        "AsFastAsPossible",
        0.0,
        50.0,
        mirror_rad=aberration_rad,
    )
    ctl = ModalAOConfig(base_rad=tuple(float(v) for v in aberration_rad), **(ao or {}))
    return {
        "microscope": _microscope(cfg_file, ["640"]),
        "acquisition": {"exposure_ms": 50.0, "n_frames": n_frames, "lasers_mw": {"640": 5.0}},
        "pipeline": {"stages": [{"kind": "stats", "name": "stats"}]},
        "controllers": [ctl.model_dump(mode="json")],
        "limits": {"laser_max_mw": {"640": 20.0}, "mirror_max_rad": ctl.stroke_rad},
        "storage": {"root": str(out), "name": "ao"},
    }


def _detector_cfg(detector: Mapping[str, Any] | None, learned_bundle: Path | None) -> dict[str, Any]:
    if learned_bundle is None:
        return EventDetectorConfig(**(detector or {})).model_dump(mode="json")
    from smartscope.models.events.heatmap import LearnedEventDetectorConfig

    return LearnedEventDetectorConfig(bundle=learned_bundle, **(detector or {})).model_dump(mode="json")


def _build_stage(data: Mapping[str, Any]) -> Any:
    if data["kind"] == "event_unet":
        from smartscope.models.events.heatmap import LearnedEventDetectorConfig

        return LearnedEventDetectorConfig.model_validate(data).build()
    return EventDetectorConfig.model_validate(data).build()


def demo_config(scenario: str, out: Path = Path("runs"), seed: int = 0) -> dict[str, Any]:
    """The run config ``smartscope demo --scenario SCENARIO`` runs (events, ao, lowlight)."""
    if scenario == "events":
        return events_config(out, "triggered", seed, n_frames=600)
    if scenario == "ao":
        return ao_config(out, random_aberration(seed).tolist(), seed=seed)
    if scenario == "lowlight":
        return lowlight_config(out, controlled=True, seed=seed, n_frames=600)
    raise ValueError(f"scenario must be one of ['events', 'ao', 'lowlight'], got {scenario!r}")


@dataclass
class AORun:
    run_dir: str
    aberration_rad: list[float]
    final_rad: list[float]  # mirror shape at the end = residual wavefront
    images: int
    frames: int
    history: list[dict[str, Any]] = field(default_factory=list)


def run_ao_loop(
    out: Path, aberration_rad: Sequence[float], n_frames: int = 600, ao: Mapping[str, Any] | None = None
) -> AORun:
    """Modal AO through the live loop (SetMirror actions, MMCore, virtual microscope)."""
    from smartscope.config import validate_config
    from smartscope.runner import run
    from smartscope.simulators import get_virtual_microscope

    data = ao_config(out, aberration_rad, n_frames, ao=ao)
    ctl = ModalAOConfig.model_validate(data["controllers"][0]).build()
    cfg = validate_config({**data, "controllers": []}, "ao")
    holder: dict[str, Any] = {}

    class _StopWhenDone(ListenerBase):
        def __init__(self, loop: Any) -> None:
            self.loop = loop

        def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
            if ctl.done and frame.metadata.get("state", {}).get("mirror_rad") == list(ctl.pending or ()):
                self.loop.request_stop("modal AO finished")

    def on_loop(loop: Any) -> None:
        holder["vm"] = get_virtual_microscope(loop.driver.core)
        loop.add_listener(_StopWhenDone(loop))

    result = run(cfg, report=False, controllers=[ctl], on_loop=on_loop)
    if result.status not in ("completed", "stopped"):
        raise RuntimeError(f"AO run ended {result.status}: {result.reason}")
    final = list(holder["vm"].zernike_rad)
    return AORun(
        result.run_dir, list(aberration_rad), final, ctl.images, int(result.metrics["frames_stored"])
    )


# ============================================================================ events run


@dataclass
class EventRun:
    """One events-scenario run and its ground truth."""

    mode: str
    run_dir: str
    frames: list[dict[str, Any]] = field(default_factory=list)  # t_s, sim_frame, burst
    events: list[dict[str, Any]] = field(default_factory=list)  # ground truth rows
    dose_mj: float = 0.0
    switches: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)
    detector: list[tuple[float, float]] = field(default_factory=list)  # (t_s, event_score) analysed


class _Recorder(ListenerBase):
    """Loop listener: each frame's simulated time and mode; stops at the simulated end."""

    def __init__(self, loop: Any, end_s: float) -> None:
        self.loop = loop
        self.end_s = end_s
        self.frames: list[dict[str, Any]] = []
        self.detector: list[tuple[float, float]] = []

    def on_frame(self, frame: Frame) -> None:
        md = frame.metadata.get("mm", {})
        t = float(md.get("SimTime_s", "nan"))
        state = frame.metadata.get("state", {})
        self.frames.append(
            {
                "index": frame.index,
                "t_s": t,
                "sim_frame": int(md.get("SimFrame", -1)),
                "burst": bool(state.get("burst")),
            }
        )
        if t >= self.end_s:
            self.loop.request_stop(f"simulated time {self.end_s:g} s reached")

    def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
        out = results.get("events")
        if out is not None and "event_score" in out.values:
            md = frame.metadata.get("mm", {})
            self.detector.append((float(md.get("SimTime_s", "nan")), out.values["event_score"]))


def run_events(
    out: Path,
    mode: Literal["slow", "fast", "triggered"],
    seed: int = 0,
    duration_s: float = 60.0,
    sensor_px: int = 256,
    trigger: Mapping[str, Any] | None = None,
    detector: Mapping[str, Any] | None = None,
    post_s: float = 5.0,
    on_loop_extra: Callable[[Any], None] | None = None,
    learned_bundle: Path | None = None,
) -> EventRun:
    """Run the events scenario for ``duration_s`` simulated seconds and score it."""
    from smartscope.config import validate_config
    from smartscope.runner import run
    from smartscope.simulators import get_virtual_microscope

    data = events_config(
        out,
        mode,
        seed,
        sensor_px,
        n_frames=100_000,
        trigger=trigger,
        detector=detector,
        learned_bundle=learned_bundle,
    )
    # built here and handed to the runner, so this works before the config unions list them
    stages = [_build_stage(s) for s in data["pipeline"]["stages"]]
    controllers = [EventTriggerConfig.model_validate(c).build() for c in data["controllers"]]
    cfg = validate_config(
        {**data, "pipeline": {"stages": [], "save_outputs": False}, "controllers": []}, f"events-{mode}"
    )
    holder: dict[str, Any] = {}

    def on_loop(loop: Any) -> None:
        vm = get_virtual_microscope(loop.driver.core)
        vm.configure(duration_s=duration_s)  # events spread over the run (rebuilds, t=0)
        holder["vm"] = vm
        rec = _Recorder(loop, duration_s)
        holder["rec"] = rec
        loop.add_listener(rec)
        holder["loop"] = loop
        if on_loop_extra is not None:
            on_loop_extra(loop)

    result = run(cfg, report=False, stages=stages, controllers=controllers, on_loop=on_loop)
    if result.status not in ("completed", "stopped"):
        raise RuntimeError(f"events run ({mode}) ended {result.status}: {result.reason}")
    vm = holder["vm"]
    rec: _Recorder = holder["rec"]
    frames = [f for f in rec.frames if f["t_s"] < duration_s]
    if mode == "fast":  # fixed fast: every frame is taken at the fast rate
        frames = [{**f, "burst": True} for f in frames]
    sim_frames = {f["sim_frame"] for f in frames}
    dose = sum(row.get("dose_mj_561", 0.0) for row in vm.ledger if int(row["frame"]) in sim_frames)
    switches = []
    for ctl in holder["loop"].controllers:
        switches += list(getattr(ctl, "switches", []))
    ev = EventRun(mode, result.run_dir, frames, list(vm.events_truth()), dose, switches)
    ev.detector = list(rec.detector)
    ev.scores = score_events(frames, ev.events, post_s)
    return ev


def score_events(
    frames: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], post_s: float = 5.0
) -> dict[str, Any]:
    """Ground-truth scores of one run.

    Per event: *fission in fast mode* — the frame covering the fission moment (the last
    one at or before ``fission_s``) was a burst frame; *caught* — any burst frame in
    ``[onset_s, fission_s + post_s]``; *delay* — first burst frame at/after onset minus
    onset (caught events only). A burst frame outside every event window counts as
    spurious.
    """
    times = sorted((float(f["t_s"]), bool(f["burst"])) for f in frames)
    n = len(events)
    fission_fast = caught = 0
    delays: list[float] = []
    windows = [(float(e["onset_s"]), float(e["fission_s"]) + post_s) for e in events]
    for e, (t0, t1) in zip(events, windows, strict=True):
        before = [b for t, b in times if t <= float(e["fission_s"])]
        if before and before[-1]:
            fission_fast += 1
        inside = [t for t, b in times if b and t0 <= t <= t1]
        if inside:
            caught += 1
            delays.append(inside[0] - t0)
    burst = [t for t, b in times if b]
    spurious = sum(not any(a <= t <= b for a, b in windows) for t in burst)
    delays.sort()
    return {
        "n_events": n,
        "n_frames": len(times),
        "n_burst_frames": len(burst),
        "fission_fast_fraction": fission_fast / n if n else float("nan"),
        "caught_fraction": caught / n if n else float("nan"),
        "median_delay_s": delays[len(delays) // 2] if delays else float("nan"),
        "spurious_burst_frames": spurious,
    }


# ============================================================================ low light


def denoise_bundle_path() -> Path:
    """The shipped N2V low-light denoiser bundle."""
    from smartscope.models import shipped_bundle

    return shipped_bundle("denoise-n2v-lowlight")


def lowlight_config(
    out: Path,
    controlled: bool,
    power_mw: float = 20.0,
    target_snr: float = 2.0,
    n_frames: int = 400,
    seed: int = 0,
    sensor_px: int = 256,
    interval_ms: float = 0.0,
) -> dict[str, Any]:
    """Run config for the ``lowlight`` scenario: N2V denoiser stage, fixed or SNR-steered 561 nm."""
    cfg_file = virtual_cfg_file(
        out / f"virtual-lowlight-{seed}.cfg", "lowlight", seed, sensor_px, "AsFastAsPossible", 0.0, 10.0
    )
    controllers: list[dict[str, Any]] = []
    if controlled:
        controllers.append(SNRDoseConfig(laser="561", target_snr=target_snr).model_dump(mode="json"))
    return {
        "microscope": _microscope(cfg_file, ["561"]),
        "acquisition": {
            "exposure_ms": 10.0,
            "interval_ms": interval_ms,
            "n_frames": n_frames,
            "lasers_mw": {"561": power_mw},
        },
        "pipeline": {
            "stages": [{"kind": "engine", "name": "denoise", "bundle": str(denoise_bundle_path())}],
            "save_outputs": False,
        },
        "controllers": controllers,
        "limits": {"laser_max_mw": {"561": 50.0}},
        "storage": {"root": str(out), "name": "lowlight-controlled" if controlled else "lowlight-fixed"},
    }


@dataclass
class LowlightRun:
    run_dir: str
    dose_mj: float
    bleach_remaining: float  # mitochondria dye left at the end (ground truth)
    snr: list[float]  # per analysed frame
    power_mw: list[float]  # per analysed frame
    frames: int


def run_lowlight(
    out: Path,
    controlled: bool,
    power_mw: float = 20.0,
    target_snr: float = 2.0,
    n_frames: int = 400,
    seed: int = 0,
    interval_ms: float = 0.0,
) -> LowlightRun:
    """The lowlight scenario through the real loop; dose and bleaching from the simulator."""
    from smartscope.config import validate_config
    from smartscope.runner import run
    from smartscope.simulators import get_virtual_microscope

    data = lowlight_config(out, controlled, power_mw, target_snr, n_frames, seed, interval_ms=interval_ms)
    controllers = [SNRDoseConfig.model_validate(c).build() for c in data["controllers"]]
    cfg = validate_config({**data, "controllers": []}, "lowlight")
    holder: dict[str, Any] = {}
    snr: list[float] = []
    power: list[float] = []

    class _Rec(ListenerBase):
        def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
            snr.append(float(results["denoise"].values["snr"]))
            power.append(float(frame.metadata.get("state", {}).get("lasers", {}).get("561", float("nan"))))

    def on_loop(loop: Any) -> None:
        holder["vm"] = get_virtual_microscope(loop.driver.core)
        loop.add_listener(_Rec())

    result = run(cfg, report=False, controllers=controllers, on_loop=on_loop)
    if result.status not in ("completed", "stopped"):
        raise RuntimeError(f"lowlight run ended {result.status}: {result.reason}")
    vm = holder["vm"]
    dose = float(vm.dose_total_mj["561"])
    last = vm.truth(vm.frame - 1)
    return LowlightRun(
        result.run_dir,
        dose,
        float(last.bleach_remaining["mitochondria"]),
        snr,
        power,
        int(result.metrics["frames_stored"]),
    )


# ============================================================================ virtual staining

STAIN_LAMP_MW = 1.0  # the lamp power the shipped stain bundle was trained at (stain_fields default)


def stain_config(
    out: Path,
    bundle: Path | None = None,
    n_frames: int = 60,
    seed: int = 0,
    sensor_px: int = 256,
    interval_ms: float = 300.0,
    lamp_mw: float = STAIN_LAMP_MW,
) -> dict[str, Any]:
    """Run config for live virtual staining: label-free (lamp only) frames, every laser off."""
    from smartscope.models import shipped_bundle

    cfg_file = virtual_cfg_file(
        out / f"virtual-stain-{seed}.cfg", "cells", seed, sensor_px, "AsFastAsPossible", interval_ms, 10.0
    )
    lasers = ["488", "561", "640"]
    return {
        "microscope": {
            **_microscope(cfg_file, lasers),
            "startup": [{"kind": "property", "device": "Lamp", "property": "Power", "value": lamp_mw}],
        },
        "acquisition": {
            "exposure_ms": 10.0,
            "interval_ms": interval_ms,
            "n_frames": n_frames,
            "lasers_mw": dict.fromkeys(lasers, 0.0),
        },
        "pipeline": {
            "stages": [
                {
                    "kind": "stain",
                    "name": "stain",
                    "bundle": str(bundle or shipped_bundle("stain-pix2pix-small")),
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
    channels: list[str]
    frames: list[dict[str, Any]]  # per analysed frame: index, z_um, trust values, pearson per channel
    first: dict[str, np.ndarray]  # label_free, virtual, truth, disagreement of the first analysed frame
    dose_mj: dict[str, float]
    frames_stored: int
    trust_limits: tuple[float, float]  # disagreement ratio, input shift |z|


def run_stain(
    out: Path,
    bundle: Path | None = None,
    n_frames: int = 60,
    seed: int = 0,
    defocus_um: float = 1.5,
    defocus_frames: tuple[int, int] = (20, 40),
    interval_ms: float = 300.0,
) -> StainRun:
    """Live virtual staining on the virtual microscope, scored against its ground truth.

    To show the trust signal at work, an operator's focus move (a ``SetZ`` request with
    source ``user``, through the safety gate and audit log) puts the sample
    ``defocus_um`` out of focus for frames ``defocus_frames[0]`` .. ``[1] - 1``.
    """
    from smartscope.actions import ActionRequest, SetZ
    from smartscope.config import validate_config
    from smartscope.metrics import pearson_r
    from smartscope.runner import run
    from smartscope.simulators import get_virtual_microscope

    data = stain_config(out, bundle, n_frames, seed, interval_ms=interval_ms)
    cfg = validate_config(data, "stain")
    holder: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    first: dict[str, np.ndarray] = {}

    class _Score(ListenerBase):
        def __init__(self, loop: Any) -> None:
            self.loop = loop
            self.moved = 0

        def on_frame(self, frame: Frame) -> None:
            for k, (at, z) in enumerate(((defocus_frames[0], defocus_um), (defocus_frames[1], 0.0))):
                if self.moved == k and frame.index + 1 >= at:
                    self.moved += 1
                    req = ActionRequest(
                        action=SetZ(z_um=z), reason="demo: operator moves focus", source="user"
                    )
                    self.loop.submit(req)

        def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
            out_ = results.get("stain")
            if out_ is None or "channels" not in out_.images:
                return
            virt = out_.images["channels"][1:]
            if "truth" not in holder:  # a static scene: its in-focus truth is the same every frame
                cells = holder["vm"].cells
                holder["truth"] = np.stack([cells.blurred(c) for c in holder["channels"]])
            truth = holder["truth"]
            row: dict[str, Any] = {
                "index": frame.index,
                "z_um": float(frame.metadata.get("state", {}).get("z_um", 0.0)),  # Z starts at 0
                **out_.values,
            }
            for i, c in enumerate(holder["channels"]):
                row[f"pearson:{c}"] = pearson_r(virt[i], truth[i])
            rows.append(row)
            if not first:
                first.update(
                    label_free=out_.images["channels"][0],
                    virtual=virt,
                    truth=truth,
                    disagreement=out_.images.get("disagreement", np.zeros_like(virt)),
                )

    def on_loop(loop: Any) -> None:
        holder["vm"] = get_virtual_microscope(loop.driver.core)
        stain = next(s for s in loop.pipeline.stages if s.name == "stain")
        holder["channels"] = list(stain.channels)
        holder["limits"] = (float(stain.ratio_max), float(stain.config.input_shift_max))
        loop.add_listener(_Score(loop))

    result = run(cfg, report=True, on_loop=on_loop)
    if result.status not in ("completed", "stopped"):
        raise RuntimeError(f"stain run ended {result.status}: {result.reason}")
    vm = holder["vm"]
    return StainRun(
        result.run_dir,
        holder["channels"],
        rows,
        first,
        {k: float(v) for k, v in vm.dose_total_mj.items()},
        int(result.metrics["frames_stored"]),
        holder["limits"],
    )
