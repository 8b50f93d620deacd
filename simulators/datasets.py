"""Training/evaluation data straight from the simulator (no Micro-Manager needed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smartscope.exceptions import InvalidValue

from .camera import EMCCD_REFERENCE, CameraConfig, CameraMaps, expected_electrons, expose
from .optics import Optics, StampTable
from .scene import CellScene, SMLMScene

__all__ = [
    "STAIN_CHANNELS",
    "BeadStack",
    "StainFields",
    "bead_zstack",
    "camera_calibration_frames",
    "denoise_pairs",
    "denoise_sequences",
    "drifting_frames",
    "photon_map",
    "smlm_frames",
    "stain_fields",
    "stain_pairs",
    "write_dataset",
]

Channel = Literal["nuclei", "mitochondria", "membrane", "mixed"]


def _field_seed(seed: int, i: int) -> int:
    return int(seed) * 1_000_003 + int(i) * 7_919 + 17


def photon_map(signal: np.ndarray, photons: float, low: float | None = None) -> np.ndarray:
    """The denoising data sets' light level: photons per pixel per exposure.

    ``signal`` scaled so that its 99.9th percentile (the brightest structure) gets
    ``photons``, plus a background of 2 % of that (autofluorescence). ``low``: a
    percentile subtracted first (for real images with an offset), clipped at zero.
    """
    sig = np.asarray(signal, np.float32)
    if low is not None:
        sig = np.clip(sig - np.percentile(sig, low), 0.0, None)
    peak = float(np.percentile(sig, 99.9)) or 1.0
    return (sig / peak * photons + 0.02 * photons).astype(np.float32)


def denoise_pairs(
    n: int,
    shape: tuple[int, int] = (128, 128),
    seed: int = 0,
    photons: float = 20.0,
    channel: Channel = "mixed",
    pixel_size_um: float = 0.1,
    camera: CameraConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Low-light noisy / noise-free pairs of the same cell field: ``(noisy, clean)``.

    Both float32 arrays of shape ``[n, Y, X]`` in **photoelectrons** (e⁻):

    - ``clean`` = expected photoelectrons per pixel, QE·photons + dark (the noise-free
      signal the camera would record on average);
    - ``noisy`` = a simulated sCMOS frame (Poisson shot noise, per-pixel read noise,
      offset and gain maps, 16-bit quantisation) converted back to electrons with the
      nominal calibration: ``(ADU + ½ − offset_adu) / gain_adu_per_e`` (the ½ undoes
      the ADC's floor). Its mean matches ``clean``; besides shot and read noise it keeps
      the sensor's fixed pattern (per-pixel offset σ 2 ADU = 1 e⁻, gain ±2 %), as a
      real sCMOS frame converted with the nominal calibration would.

    ``photons`` sets the light level: the brightest structure (99.9th percentile of the
    blurred density) receives about ``photons`` photons per pixel; background
    (autofluorescence) is 2 % of that. Sample ``i`` is its own field of view (cell
    geometry seeded by ``(seed, i)``), so callers can split train/validation by index.
    ``channel``: one fluorescence channel, or ``"mixed"`` cycling nuclei → mitochondria →
    membrane by index. A typical normalisation for networks: divide both by ``photons``.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if photons <= 0:
        raise ValueError(f"photons={photons} must be > 0")
    cam = camera or CameraConfig()
    chans = ["nuclei", "mitochondria", "membrane"]
    noisy = np.empty((n, *shape), np.float32)
    clean = np.empty((n, *shape), np.float32)
    for i in range(n):
        fs = _field_seed(seed, i)
        ch = chans[i % 3] if channel == "mixed" else channel
        scene = CellScene(shape, pixel_size_um, seed=fs)
        ph = photon_map(scene.blurred(ch), photons)
        rng = np.random.default_rng(fs + 1)
        frame = expose(cam, ph, rng)
        clean[i] = expected_electrons(cam, ph)
        noisy[i] = (frame.astype(np.float32) + 0.5 - cam.offset_adu) / cam.gain_adu_per_e
    return noisy, clean


def drifting_frames(
    photons_map: np.ndarray,
    n_frames: int,
    crop_px: tuple[int, int],
    velocity_px: tuple[float, float],
    rng: np.random.Generator,
    camera: CameraConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A short live recording of a drifting sample: ``(noisy, clean)`` ``[T, Y, X]`` electrons.

    ``photons_map`` (photons per pixel per exposure, larger than ``crop_px`` by the margin
    the motion needs) moves at ``velocity_px`` (dy, dx) per frame; frame ``t`` sees it
    shifted by ``velocity · (t - T + 1)`` (cubic spline), so the **last** frame is the
    unshifted centre crop: the current frame, whose truth the denoiser is judged on. Each
    frame has its own shot and read noise; the sensor's fixed pattern stays put, as on a
    real camera. Units as :func:`denoise_pairs` (nominal calibration, e⁻).
    """
    from scipy import ndimage

    cam = camera or CameraConfig()
    h, w = crop_px
    big_h, big_w = photons_map.shape
    m_y, m_x = (big_h - h) // 2, (big_w - w) // 2
    reach = np.abs(np.asarray(velocity_px)) * (n_frames - 1)
    if n_frames < 1 or m_y < reach[0] + 2 or m_x < reach[1] + 2:
        raise ValueError(
            f"photons_map {photons_map.shape} leaves margins ({m_y}, {m_x}) px around {crop_px}: "
            f"too small for {n_frames} frames at {velocity_px} px/frame"
        )
    noisy = np.empty((n_frames, h, w), np.float32)
    clean = np.empty((n_frames, h, w), np.float32)
    for t in range(n_frames):
        back = t - (n_frames - 1)
        dy, dx = velocity_px[0] * back, velocity_px[1] * back
        iy, ix = int(np.floor(dy)), int(np.floor(dx))
        win = photons_map[m_y + iy - 2 : m_y + iy + h + 3, m_x + ix - 2 : m_x + ix + w + 3]
        if dy != iy or dx != ix:
            win = ndimage.shift(win, (iy - dy, ix - dx), order=3, mode="nearest")
        ph = np.maximum(win[2 : 2 + h, 2 : 2 + w], 0.0).astype(np.float32)
        clean[t] = expected_electrons(cam, ph)
        frame = expose(cam, ph, rng)
        noisy[t] = (frame.astype(np.float32) + 0.5 - cam.offset_adu) / cam.gain_adu_per_e
    return noisy, clean


def denoise_sequences(
    n: int,
    shape: tuple[int, int] = (128, 128),
    seed: int = 0,
    photons: float = 20.0,
    n_frames: int = 5,
    max_speed_px: float = 1.0,
    channel: Channel = "mixed",
    pixel_size_um: float = 0.1,
    camera: CameraConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Live low-light recordings of drifting cell fields: ``(noisy, clean)`` ``[n, T, Y, X]`` e⁻.

    Field ``i`` is the cell field of :func:`denoise_pairs` (same seeding, light level and
    background), rendered with a margin and recorded for ``n_frames`` frames while it
    drifts at a constant velocity of random direction and speed uniform in
    ``[0, max_speed_px]`` px per frame (:func:`drifting_frames`).
    """
    if n < 1 or n_frames < 1:
        raise ValueError(f"n={n} and n_frames={n_frames} must be >= 1")
    if photons <= 0:
        raise ValueError(f"photons={photons} must be > 0")
    cam = camera or CameraConfig()
    chans = ["nuclei", "mitochondria", "membrane"]
    margin = int(np.ceil(max_speed_px * (n_frames - 1))) + 4
    big = (shape[0] + 2 * margin, shape[1] + 2 * margin)
    noisy = np.empty((n, n_frames, *shape), np.float32)
    clean = np.empty((n, n_frames, *shape), np.float32)
    for i in range(n):
        fs = _field_seed(seed, i)
        ch = chans[i % 3] if channel == "mixed" else channel
        ph = photon_map(CellScene(big, pixel_size_um, seed=fs).blurred(ch), photons)
        rng = np.random.default_rng(fs + 1)
        angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0, max_speed_px)
        vel = (speed * float(np.sin(angle)), speed * float(np.cos(angle)))
        noisy[i], clean[i] = drifting_frames(ph, n_frames, shape, vel, rng, cam)
    return noisy, clean


def stain_pairs(
    n: int,
    shape: tuple[int, int] = (128, 128),
    seed: int = 0,
    mode: Literal["phase", "brightfield"] = "phase",
    pixel_size_um: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Label-free input and fluorescence targets of the same field for virtual staining.

    Returns ``(label_free [n, Y, X], fluorescence [n, 3, Y, X])``, float32, noise-free:
    label-free intensity with background 1; fluorescence = density ⊗ emission PSF for
    channels (nuclei, mitochondria, membrane), each in units of the channel density
    (≈ 0..1). Sample ``i`` is its own field of view.
    """
    lf = np.empty((n, *shape), np.float32)
    fl = np.empty((n, 3, *shape), np.float32)
    for i in range(n):
        scene = CellScene(shape, pixel_size_um, seed=_field_seed(seed, i))
        lf[i] = scene.label_free(mode)
        for c, ch in enumerate(("nuclei", "mitochondria", "membrane")):
            fl[i, c] = scene.blurred(ch)
    return lf, fl


STAIN_CHANNELS: tuple[str, ...] = ("nuclei", "mitochondria", "membrane")
_STAIN_LASER = {"nuclei": "488", "mitochondria": "561", "membrane": "640"}


@dataclass(frozen=True)
class StainFields:
    """Paired camera frames of the same fields for virtual staining (see :func:`stain_fields`)."""

    label_free_adu: np.ndarray  # [n, Y, X] float32: transmitted-lamp camera frame
    fluorescence_adu: np.ndarray  # [n, C, Y, X] float32: each channel with only its laser on
    target: np.ndarray  # [n, C, Y, X] float32: noise-free density ⊗ PSF, in focus (≈ 0..1)
    channels: tuple[str, ...]
    pixel_size_um: float
    description: str
    # [n, P, Y, X] float32: the lamp frame again at each of ``planes_um`` (µm from focus)
    label_free_planes_adu: np.ndarray | None = None
    planes_um: tuple[float, ...] = ()


def stain_fields(
    n: int,
    size_px: int = 128,
    seed: int = 0,
    *,
    mode: Literal["phase", "brightfield"] = "phase",
    lamp_mw: float = 1.0,
    laser_mw: float = 10.0,
    exposure_ms: float = 10.0,
    defocus_um: float = 0.0,
    pixel_size_um: float = 0.1,
    planes_um: Sequence[float] = (),
) -> StainFields:
    """``n`` fields of view imaged by the virtual microscope as a live run would see them.

    For each field (its own cell geometry, seeded by ``(seed, i)``): one camera frame with
    only the transmitted lamp on (``lamp_mw``; the label-free input), one frame per
    fluorescence channel with only its laser on (``laser_mw``; the inputs channel
    completion is given), and the noise-free, in-focus fluorescence of each channel as the
    target. ``defocus_um`` moves the sample out of focus for the camera frames (not for
    the targets): an out-of-distribution input for trust tests. ``planes_um``: the lamp
    frame is also recorded with the focus moved by each of these offsets (µm, e.g. a
    defocus pair ``(-1, 1)``), as a z-stack of the label-free channel would; they land in
    ``label_free_planes_adu``. Frames are sCMOS ADU as float32 (offset included), exactly
    what the camera delivers in a live run.
    """
    from .microscope import LAMP, VirtualMicroscope

    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    cam = CameraConfig(exposure_ms=exposure_ms)
    c = len(STAIN_CHANNELS)
    lf = np.empty((n, size_px, size_px), np.float32)
    fl = np.empty((n, c, size_px, size_px), np.float32)
    tg = np.empty((n, c, size_px, size_px), np.float32)
    planes = tuple(float(z) for z in planes_um)
    lfp = np.empty((n, len(planes), size_px, size_px), np.float32) if planes else None
    for i in range(n):
        vm = VirtualMicroscope(
            "cells",
            seed=_field_seed(seed, i),
            sensor_px=size_px,
            pixel_size_um=pixel_size_um,
            camera=cam,
            label_free_mode=mode,
        )
        vm.set_z_um(-defocus_um)
        for src in vm.power_mw:
            vm.set_power(src, 0.0)
        vm.set_power(LAMP, lamp_mw)
        img, _ = vm.render_frame()
        lf[i] = img
        if lfp is not None:
            for j, dz in enumerate(planes):
                vm.set_z_um(-defocus_um - dz)
                lfp[i, j], _ = vm.render_frame()
            vm.set_z_um(-defocus_um)
        vm.set_power(LAMP, 0.0)
        for k, ch in enumerate(STAIN_CHANNELS):
            vm.set_power(_STAIN_LASER[ch], laser_mw)
            img, _ = vm.render_frame()
            fl[i, k] = img
            vm.set_power(_STAIN_LASER[ch], 0.0)
            assert vm.cells is not None
            tg[i, k] = vm.cells.blurred(ch)
    desc = (
        f"simulator cells, {n} fields {size_px}x{size_px} px, seed {seed}, {mode} lamp {lamp_mw} mW, "
        f"lasers {laser_mw} mW, {exposure_ms} ms, defocus {defocus_um} um"
        + (f", label-free planes {list(planes)} um" if planes else "")
    )
    return StainFields(lf, fl, tg, STAIN_CHANNELS, pixel_size_um, desc, lfp, planes)


def smlm_frames(
    n_frames: int,
    shape: tuple[int, int] = (64, 64),
    seed: int = 0,
    activation_mw: float = 1.0,
    **scene_kwargs: object,
) -> tuple[np.ndarray, dict[str, np.ndarray], SMLMScene]:
    """``n_frames`` SMLM frames (uint16 [T, Y, X]) and the concatenated ground truth."""
    scene = SMLMScene(shape, seed=seed, **scene_kwargs)  # type: ignore[arg-type]
    frames = np.empty((n_frames, *scene.shape), np.uint16)
    tables = []
    for t in range(n_frames):
        frames[t], gt = scene.step(activation_mw)
        tables.append(gt)
    gt_all = {k: np.concatenate([g[k] for g in tables]) for k in tables[0]}
    return frames, gt_all, scene


# ============================================================================ calibration data


@dataclass(frozen=True)
class BeadStack:
    """A simulated bead z-stack (what a user records to calibrate the PSF)."""

    frames: np.ndarray  # uint16 (Z, Y, X)
    x_nm: np.ndarray  # bead positions, nm from the corner of pixel (0, 0)
    y_nm: np.ndarray
    z_nm: np.ndarray  # bead heights (coverslip tilt / roughness)
    focus_nm: np.ndarray  # focal plane of each slice; a bead's defocus is z_nm − focus_nm
    pixel_size_um: float


def bead_zstack(
    z_step_nm: float = 20.0,
    z_range_nm: tuple[float, float] = (-800.0, 800.0),
    size_px: int = 128,
    spacing_px: int = 28,
    photons: float = 20_000.0,
    bg_photons: float = 30.0,
    optics: Optics | None = None,
    zernike_rad: Sequence[float] | np.ndarray | None = None,
    camera: CameraConfig | None = None,
    maps: CameraMaps | None = None,
    tilt_nm: float = 10.0,
    seed: int = 0,
) -> BeadStack:
    """Beads on a coverslip imaged while the focus steps through them.

    Beads sit on a jittered lattice (``spacing_px``), at heights spread by ``tilt_nm``
    (rms); slice ``i`` has the focal plane at ``z_range_nm[0] + i·z_step_nm`` — the focus
    moves *up* through the stack, so a bead's height above the focal plane falls from
    slice to slice (the convention ``smartscope calibrate psf`` expects). PSF from the
    pupil (``optics``, ``zernike_rad``: e.g. :func:`.psf_models.astigmatic_zernike`),
    rendered with continuous defocus (5 nm stamp slices); camera noise from ``camera``.
    """
    if z_step_nm <= 0:
        raise ValueError(f"z_step_nm={z_step_nm} must be positive")
    o = optics or Optics()
    cam = camera or CameraConfig()
    rng = np.random.default_rng(seed)
    a = o.pixel_size_um * 1000.0
    g = np.arange(spacing_px // 2, size_px - spacing_px // 2 + 1, spacing_px, dtype=np.float64)
    gy, gx = np.meshgrid(g, g, indexing="ij")
    n = gx.size
    x = (gx.ravel() + rng.uniform(-0.5, 0.5, n)) * a
    y = (gy.ravel() + rng.uniform(-0.5, 0.5, n)) * a
    z = rng.normal(0.0, tilt_nm, n)
    focus = np.arange(z_range_nm[0], z_range_nm[1] + 0.5 * z_step_nm, z_step_nm)
    table = StampTable(o, zernike_rad, size_px=15, dz_um=0.005)
    frames = np.empty((focus.size, size_px, size_px), np.uint16)
    for i, f in enumerate(focus):
        img = np.full((size_px, size_px), bg_photons, np.float32)
        table.render(
            (size_px, size_px), y / a - 0.5, x / a - 0.5, np.full(n, photons), (z - f) * 1e-3, out=img
        )
        frames[i] = expose(cam, img, rng, maps=maps)
    return BeadStack(frames, x, y, z, focus, o.pixel_size_um)


def camera_calibration_frames(
    camera: CameraConfig,
    shape: tuple[int, int] = (64, 64),
    n_frames: int = 100,
    flat_photons: Sequence[float] = (20.0, 50.0, 100.0, 200.0, 400.0, 800.0),
    maps: CameraMaps | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A dark stack and flat-field stacks at ``flat_photons`` per pixel (uniform light),
    ``n_frames`` each: the input of a photon-transfer calibration. uint16 (T, Y, X)."""
    rng = np.random.default_rng(seed)

    def stack(level: float) -> np.ndarray:
        img = np.full(shape, level, np.float32)
        return np.stack([expose(camera, img, rng, maps=maps) for _ in range(n_frames)])

    return stack(0.0), [stack(v) for v in flat_photons]


# ============================================================================ on disk

# per-scenario acquisition defaults: frame interval (ms) and the channels recorded
_SCENARIO_INTERVAL_MS = {"cells": 0.0, "lowlight": 0.0, "events": 200.0, "smlm": 0.0, "beads": 0.0}
# channel name -> light source that is on (all others off) during that exposure
_CELL_CHANNELS = {"nuclei": "488", "mitochondria": "561", "membrane": "640", "label_free": "lamp"}
_CELL_CHANNEL_POWER_MW = {"488": 10.0, "561": 10.0, "640": 10.0, "lamp": 1.0}


def write_dataset(
    scenario: str,
    frames: int,
    out: Path,
    seed: int = 0,
    size: int = 256,
    exposure_ms: float = 10.0,
    interval_ms: float | None = None,
    camera_mode: Literal["scmos", "emccd"] = "scmos",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Simulate ``frames`` time points of a scenario and write them with ground truth.

    Files in ``out``: ``raw.ome.tif`` (uint16 camera frames; TYX, or TCYX for ``cells``
    with channels nuclei/mitochondria/membrane/label_free, each exposed with only its own
    light on), ``clean.tif`` (float32 expected photons per pixel, same layout),
    ``ground_truth.json`` (scenario, seed, optics/camera, per-frame state), ``dose.csv``
    (light delivered per frame), ``events.json`` (``events``: onset/fission times, place
    and frame numbers), ``localizations.csv`` (``smlm``/``beads``: one row per emitter
    that was on in a frame; ``frame, emitter_id, x_nm, y_nm, z_nm, photons, on_fraction``;
    nm from the top-left corner of the image). Same seed → identical files.
    """
    from .microscope import SCENARIOS, VirtualMicroscope

    if scenario not in SCENARIOS:
        raise InvalidValue(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if frames < 1:
        raise InvalidValue(f"frames={frames} must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    interval = _SCENARIO_INTERVAL_MS[scenario] if interval_ms is None else float(interval_ms)
    frame_dt_s = max(exposure_ms, interval) * 1e-3
    cam = EMCCD_REFERENCE if camera_mode == "emccd" else CameraConfig()
    vm = VirtualMicroscope(
        scenario,  # type: ignore[arg-type]
        seed=seed,
        sensor_px=size,
        camera=cam.model_copy(update={"exposure_ms": exposure_ms}),
        duration_s=max(frames * frame_dt_s, 1.0),
        clean_history_frames=1,
    )
    vm.interval_ms = interval
    multichannel = scenario == "cells"
    chans = list(_CELL_CHANNELS) if multichannel else ["camera"]
    raw = np.empty((frames, len(chans), size, size), np.uint16)
    clean = np.empty((frames, len(chans), size, size), np.float32)
    per_frame: list[dict[str, Any]] = []
    locs: list[dict[str, np.ndarray]] = []
    for t in range(frames):
        for c, ch in enumerate(chans):
            if multichannel:
                for src in _CELL_CHANNEL_POWER_MW:
                    vm.set_power(src, 0.0)
                src = _CELL_CHANNELS[ch]
                vm.set_power(src, _CELL_CHANNEL_POWER_MW[src])
            img, truth = vm.render_frame()
            raw[t, c] = img
            assert truth.clean is not None
            clean[t, c] = truth.clean
            row = truth.summary()
            row["time_index"] = t
            row["channel"] = ch
            per_frame.append(row)
            if truth.emitters is not None:
                g = dict(truth.emitters)
                g["frame"] = np.full(len(g["x_nm"]), t, np.int64)
                locs.append(g)
        if progress is not None:
            progress(t)
    import tifffile

    px = vm.pixel_size_um
    axes = "TCYX" if multichannel else "TYX"
    data = raw if multichannel else raw[:, 0]
    meta: dict[str, Any] = {
        "axes": axes,
        "PhysicalSizeX": px,
        "PhysicalSizeY": px,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
        "TimeIncrement": frame_dt_s * len(chans),
        "TimeIncrementUnit": "s",
    }
    if multichannel:
        meta["Channel"] = {"Name": chans}
    tifffile.imwrite(out / "raw.ome.tif", data, ome=True, metadata=meta, photometric="minisblack")
    tifffile.imwrite(
        out / "clean.tif",
        clean if multichannel else clean[:, 0],
        photometric="minisblack",
        metadata={"axes": axes, "unit": "expected photons per pixel"},
    )
    files = ["raw.ome.tif", "clean.tif", "ground_truth.json", "dose.csv"]
    if locs:
        keys = ("frame", "emitter_id", "x_nm", "y_nm", "z_nm", "photons", "on_fraction")
        table = {k: np.concatenate([g[k] for g in locs]) for k in keys}
        with open(out / "localizations.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(keys)
            for i in range(len(table["frame"])):
                w.writerow(
                    [int(table["frame"][i]), int(table["emitter_id"][i])]
                    + [f"{float(table[k][i]):.3f}" for k in keys[2:]]
                )
        files.append("localizations.csv")
    events = vm.events_truth()
    if scenario == "events":
        step = frame_dt_s * len(chans)
        for ev in events:
            ev["onset_frame"] = int(np.ceil(float(ev["onset_s"]) / step))
            ev["fission_frame"] = int(np.ceil(float(ev["fission_s"]) / step))
        (out / "events.json").write_text(json.dumps({"events": events}, indent=1))
        files.append("events.json")
    with open(out / "dose.csv", "w", newline="") as fh:
        keys_l = list(vm.ledger[0])
        w = csv.writer(fh)
        w.writerow(keys_l)
        for r in vm.ledger:
            w.writerow([r[k] for k in keys_l])
    info = {
        "scenario": scenario,
        "seed": seed,
        "frames": frames,
        "size_px": size,
        "pixel_size_um": px,
        "exposure_ms": exposure_ms,
        "frame_interval_s": frame_dt_s,
        "channels": chans,
        "camera": vm.camera.model_dump(),
        "optics_emission_nm": {"smlm": 670.0, "nuclei": 520.0, "mitochondria": 590.0, "membrane": 670.0},
        "na": 1.4,
        "events": events,
        "files": files,
        "per_frame": per_frame,
    }
    (out / "ground_truth.json").write_text(json.dumps(info, indent=1, default=float))
    return info
