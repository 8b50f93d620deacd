"""Train the DECODE-class localizer on simulator data generated on the fly; export a bundle.

Every training sample is a fresh field: emitters placed uniformly at random (density,
brightness, background, defocus and aberrations sampled widely), switched by the
simulator's photophysics (:class:`smartscope.simulators.samples.PhotophysicsState`) over
three consecutive frames, rendered through the simulator's pupil PSF
(:meth:`SMLMScene.photons_image`) and exposed on its camera model (sCMOS or EMCCD,
:func:`smartscope.simulators.camera.expose`). The network sees photoelectrons; targets
are the emitters on in the middle frame and the background.

CLI: ``smartscope train smlm --out models/bundles/smlm-decode-small --minutes 18``
(``smartscope train smlm``).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smartscope.models.smlm.localize_classical import CameraModel
from smartscope.models.smlm.network import (
    ARCHITECTURE,
    OUTPUT_CHANNELS,
    DecodeLoss,
    DecodeSettings,
    SMLMNet,
    SMLMNetConfig,
    decode_outputs,
)
from smartscope.models.smlm.table import LocTable

__all__ = [
    "SimSpec",
    "camera_model_for",
    "simulate_windows",
    "train_smlm",
]


@dataclass(frozen=True)
class SimSpec:
    """Ranges the training (and evaluation) data are drawn from; log-uniform where noted."""

    tile_px: int = 40
    pixel_nm: float = 100.0
    density_per_um2: tuple[float, float] = (0.03, 3.0)  # on emitters per frame, log-uniform
    photons: tuple[float, float] = (300.0, 8000.0)  # per emitter-frame when fully on, log-uniform
    bg_photons: tuple[float, float] = (3.0, 150.0)  # per pixel per frame, log-uniform
    z_nm: tuple[float, float] = (-300.0, 300.0)  # defocus, uniform
    brightness_cv: float = 0.3  # per-emitter brightness spread (log-normal)
    k_leave_per_frame: tuple[float, float] = (0.3, 2.0)  # on -> off/bleach rate x frame time
    aberration_rms_rad: float = 0.3  # random astigmatism/coma/spherical pool
    n_aberrations: int = 6
    emccd_fraction: float = 0.25
    margin_px: float = 3.0


def camera_model_for(cfg: object, shape: tuple[int, int] | None = None) -> CameraModel:
    """The localizer's :class:`CameraModel` for a simulator ``CameraConfig``.

    ``ADU = floor(e·gain + offset)``, so ``e = (ADU + ½ − offset) / gain`` (÷ EM gain).
    With ``shape``, the sCMOS per-pixel offset / gain / read-noise maps of that sensor
    are used (the per-pixel calibration an sCMOS user measures); otherwise nominal values.
    """
    from smartscope.simulators.camera import CameraConfig

    if not isinstance(cfg, CameraConfig):
        raise TypeError(f"expected a simulator CameraConfig, got {type(cfg).__name__}")
    emccd = cfg.kind == "emccd" and cfg.em_gain > 1
    if shape is not None and cfg.kind == "scmos":
        m = cfg.maps(shape)
        return CameraModel(
            offset_adu=cfg.offset_adu - 0.5,
            e_per_adu=1.0 / cfg.gain_adu_per_e,
            read_noise_e=cfg.read_noise_e,
            offset_map_adu=m.offset_adu.astype(np.float64) - 0.5,
            e_per_adu_map=1.0 / m.gain_adu_per_e.astype(np.float64),
            read_noise_map_e=m.read_noise_e.astype(np.float64),
        )
    return CameraModel(
        offset_adu=cfg.offset_adu - 0.5,
        e_per_adu=1.0 / cfg.gain_adu_per_e,
        em_gain=cfg.em_gain if emccd else 1.0,
        read_noise_e=cfg.read_noise_e,
        emccd=emccd,
    )


@dataclass
class _Sim:
    spec: SimSpec
    rng: np.random.Generator
    scene: object = None
    zernikes: list[np.ndarray] = field(default_factory=list)


def _make_sim(spec: SimSpec, seed: int) -> _Sim:
    from smartscope.simulators.scene import SMLMScene

    rng = np.random.default_rng(seed)
    scene = SMLMScene((spec.tile_px, spec.tile_px), pixel_size_um=spec.pixel_nm / 1000.0, seed=seed)
    zs = [np.zeros(12)]
    for _ in range(spec.n_aberrations - 1):
        z = np.zeros(12)
        z[4:11] = rng.normal(0, spec.aberration_rms_rad / math.sqrt(7), 7)  # Noll 5..11
        zs.append(z)
    return _Sim(spec, rng, scene, zs)


def _loguniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def simulate_windows(
    n: int, spec: SimSpec, seed: int, sim: _Sim | None = None
) -> tuple[np.ndarray, list[dict[str, np.ndarray]], np.ndarray, list[bool]]:
    """``n`` three-frame windows: inputs (n, 3, H, W) photoelectrons, ground truth of the
    middle frame per sample (``x_px``, ``y_px`` pixel-centre units, ``photons`` e⁻),
    background maps (n, H, W) e⁻, and whether each came from an EMCCD."""
    from smartscope.simulators.camera import EMCCD_REFERENCE, SCMOS_REFERENCE, expose
    from smartscope.simulators.samples import Photophysics, PhotophysicsState

    s = sim or _make_sim(spec, seed)
    rng = s.rng
    scene = s.scene
    h = w = spec.tile_px
    a = spec.pixel_nm
    area_um2 = (h + 2 * spec.margin_px) * (w + 2 * spec.margin_px) * (a / 1000) ** 2
    x = np.empty((n, 3, h, w), np.float32)
    bgs = np.empty((n, h, w), np.float32)
    gts: list[dict[str, np.ndarray]] = []
    emccd_flags: list[bool] = []
    for i in range(n):
        dens = _loguniform(rng, spec.density_per_um2)
        photons = _loguniform(rng, spec.photons)
        bg = _loguniform(rng, spec.bg_photons)
        k_leave = rng.uniform(*spec.k_leave_per_frame)
        duty = 0.25
        n_em = rng.poisson(dens * area_um2 / duty)
        ex = rng.uniform(-spec.margin_px, w + spec.margin_px, n_em) * a
        ey = rng.uniform(-spec.margin_px, h + spec.margin_px, n_em) * a
        ez = rng.uniform(*spec.z_nm, n_em)
        bright = rng.lognormal(-0.5 * spec.brightness_cv**2, spec.brightness_cv, n_em)
        # photophysics in frame-time units: dt = 1 "s", excitation 1 "mW"
        k_act = duty / (1 - duty) * k_leave
        pp = Photophysics(
            k_act_spont_per_s=k_act,
            k_act_per_s_per_mw405=0.0,
            k_off_per_s_per_mw=0.9 * k_leave,
            k_bleach_per_s_per_mw=0.1 * k_leave,
            photons_per_ms_per_mw=1.0,
            start_on=False,
        )
        st = PhotophysicsState.initial(n_em, pp)
        st.state = (rng.random(n_em) < duty).astype(np.int8)
        cam = EMCCD_REFERENCE if rng.random() < spec.emccd_fraction else SCMOS_REFERENCE
        cm = camera_model_for(cam)
        zern = s.zernikes[int(rng.integers(len(s.zernikes)))]
        scene.background_per_ms_per_mw = bg / cam.exposure_ms  # type: ignore[attr-defined]
        for t in range(3):
            frac = st.step(pp, 1.0, 1.0, 0.0, rng)
            on = np.flatnonzero(frac > 0)
            gt = {
                "x_nm": ex[on],
                "y_nm": ey[on],
                "z_nm": ez[on],
                "photons": frac[on] * photons * bright[on],
            }
            ph = scene.photons_image(  # type: ignore[attr-defined]
                gt, excitation_mw=1.0, zernike_rad=zern, exposure_ms=cam.exposure_ms
            )
            frame = expose(cam, ph, rng)
            x[i, t] = cm.to_electrons(frame)
            if t == 1:
                xp = gt["x_nm"] / a - 0.5
                yp = gt["y_nm"] / a - 0.5
                keep = (xp >= -0.5) & (xp < w - 0.5) & (yp >= -0.5) & (yp < h - 0.5)
                gts.append({"x_px": xp[keep], "y_px": yp[keep], "photons": gt["photons"][keep] * cam.qe})
                bgs[i] = cam.qe * bg + cam.dark_e_per_s * cam.exposure_ms * 1e-3
        emccd_flags.append(cam.kind == "emccd")
    return x, gts, bgs, emccd_flags


def _pad_gt(gts: list[dict[str, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    e = max(1, max(len(g["x_px"]) for g in gts))
    b = len(gts)
    xy = np.zeros((b, e, 2), np.float32)
    ph = np.ones((b, e), np.float32)
    mask = np.zeros((b, e), bool)
    for i, g in enumerate(gts):
        k = len(g["x_px"])
        xy[i, :k, 0] = g["x_px"]
        xy[i, :k, 1] = g["y_px"]
        ph[i, :k] = g["photons"]
        mask[i, :k] = True
    return torch.from_numpy(xy), torch.from_numpy(ph), torch.from_numpy(mask)


def evaluate(
    net: SMLMNet, spec: SimSpec, seed: int, n: int = 64, settings: DecodeSettings | None = None
) -> dict[str, float]:
    """Held-out JI / RMSE / efficiency of the network on freshly simulated windows."""
    from smartscope.metrics import smlm_scores

    x, gts, _, _ = simulate_windows(n, spec, seed)
    net.eval()
    with torch.inference_mode():
        out = net(torch.from_numpy(x / net.config.input_scale_e)).numpy()
    tabs = [decode_outputs(out[i], i, spec.pixel_nm, settings) for i in range(n)]
    t = LocTable.concat(tabs)
    gf = np.concatenate([np.full(len(g["x_px"]), i) for i, g in enumerate(gts)])
    gxy = np.concatenate([np.stack([g["x_px"], g["y_px"]], 1) for g in gts]) + 0.5
    return smlm_scores(t.frame, t.xy_nm(), gf, gxy * spec.pixel_nm)


def train_smlm(
    out: Path,
    minutes: float = 18.0,
    max_steps: int | None = None,
    batch: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    net_config: SMLMNetConfig | None = None,
    spec: SimSpec | None = None,
    threads: int = 2,
    command: str = "",
    log_every: int = 25,
    eval_windows: int = 64,
) -> Path:
    """Train for ``minutes`` wall time (or ``max_steps``), evaluate on held-out simulated
    windows and export a verified engine bundle to ``out``. Returns the bundle path."""
    from smartscope.engines.export import export_bundle

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    cfg = net_config or SMLMNetConfig()
    sp = spec or SimSpec()
    if sp.tile_px % (2**cfg.depth):
        raise ValueError(f"SimSpec.tile_px={sp.tile_px} must be a multiple of {2**cfg.depth}")
    net = SMLMNet(cfg)
    loss_fn = DecodeLoss(cfg.photon_scale_e, cfg.input_scale_e)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sim = _make_sim(sp, seed)
    t0 = time.time()
    deadline = t0 + 60.0 * minutes
    step = 0
    log: list[dict[str, float]] = []
    t_sim = 0.0
    while (max_steps is None or step < max_steps) and time.time() < deadline:
        frac_done = (time.time() - t0) / (60.0 * minutes)
        if max_steps is not None:
            frac_done = max(frac_done, step / max_steps)
        for g in opt.param_groups:  # cosine decay to 5 %
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac_done, 1.0))))
        ts = time.time()
        x, gts, bgs, _ = simulate_windows(batch, sp, seed, sim)
        t_sim += time.time() - ts
        xy, ph, mask = _pad_gt(gts)
        net.train()
        outp = net(torch.from_numpy(x / cfg.input_scale_e))
        losses = loss_fn(outp, xy, ph, mask, torch.from_numpy(bgs))
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        if step % log_every == 0 or step == 1:
            rec = {k: float(v.detach()) for k, v in losses.items()}
            rec.update(step=step, elapsed_s=time.time() - t0, sim_s=t_sim)
            log.append(rec)
            print(json.dumps(rec), flush=True)
    heldout = evaluate(net, sp, seed=10_000 + seed, n=eval_windows)
    print("held-out", json.dumps(heldout), flush=True)
    metrics = {
        "heldout_jaccard": heldout["jaccard"],
        "heldout_rmse_lat_nm": heldout["rmse_lat_nm"],
        "heldout_efficiency": heldout["efficiency"],
        "train_steps": float(step),
        "train_minutes": (time.time() - t0) / 60.0,
    }
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}  # JSON has no NaN
    manifest = {
        "name": out.name,
        "task": "smlm",
        "version": "0.1.0",
        "inputs": [{"name": "frames", "channels": ["t-1", "t", "t+1"]}],
        "outputs": [{"name": "out", "channels": list(OUTPUT_CHANNELS)}],
        # input units are photoelectrons (the stage converts ADU with its camera model)
        "normalization": {"kind": "affine", "offset_adu": 0.0, "scale_adu": cfg.input_scale_e},
        "pixel_size_um": sp.pixel_nm / 1000.0,
        "tile": {"size_px": 256, "overlap_px": 16, "multiple_px": 2**cfg.depth},
        "architecture": {"name": ARCHITECTURE, "params": cfg.model_dump(), "weights_sha256": "0" * 64},
        "provenance": {
            "command": command or " ".join(shlex.quote(a) for a in sys.argv),
            "data": f"smartscope.simulators on the fly: {sp}",
            "seed": seed,
            "method": "DECODE-class: 3-frame U-Net, count + Gaussian-mixture + background loss",
            "software": {"torch": torch.__version__},
            "notes": "input = photoelectrons / scale_adu (offset_adu/scale_adu are in e⁻ here)",
        },
        "metrics": metrics,
    }
    net.eval()
    path = export_bundle(net, out, manifest_fields=manifest)
    (Path(path) / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    return path
