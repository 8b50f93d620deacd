"""Train the DECODE-class localizer on simulator data generated on the fly; export a bundle.

Every training sample is a fresh field: emitters placed uniformly at random (density,
brightness, background and z sampled widely), switched by the simulator's photophysics
(:class:`smartscope.simulators.samples.PhotophysicsState`) over three consecutive
frames, rendered through a PSF and exposed on a camera. The network sees
photoelectrons; targets are the emitters on in the middle frame and the background.

* Without a calibration: the simulator's pupil PSF with random aberrations and defocus
  (:meth:`SMLMScene.photons_image`) and its reference sCMOS / EMCCD cameras — a generic
  2-D localizer.
* With a :class:`~smartscope.models.smlm.calibrate.UserCalibration` (``--psf``,
  ``--camera``): the user's calibrated spline PSF (z uniform over its calibrated range;
  a 3-D PSF makes a 3-D network) and the user's camera (per-pixel sCMOS maps, a random
  sensor region per sample). The bundle records both files' sha256, the pixel size and
  the camera numbers (``calibration``), and the detection threshold chosen on
  validation windows.

CLI: ``smartscope train smlm --psf psf.npz --camera camera.json --out my-bundle``
(:func:`smartscope.models.smlm.cli.train_smlm_cmd`).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from smartscope.engines.networks.smlm import ARCHITECTURE, SMLMNet, SMLMNetConfig
from smartscope.exceptions import InvalidValue
from smartscope.models.smlm.decode import DecodeSettings, decode_outputs
from smartscope.models.smlm.localize_classical import CameraModel, camera_model_for
from smartscope.models.smlm.network import DecodeLoss
from smartscope.models.smlm.table import LocTable

if TYPE_CHECKING:
    from smartscope.models.smlm.calibrate import UserCalibration
    from smartscope.models.smlm.recording import RecordingStats
    from smartscope.simulators.camera import CameraMaps

__all__ = [
    "SimSpec",
    "choose_threshold",
    "evaluate",
    "parent_config",
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
    # calibrated camera with per-pixel maps: the sensor region (row, col) of every tile;
    # None draws a random region per sample
    sensor_origin_px: tuple[int, int] | None = None


@dataclass
class _Sim:
    spec: SimSpec
    rng: np.random.Generator
    scene: object = None
    zernikes: list[np.ndarray] = field(default_factory=list)
    calibration: UserCalibration | None = None


def _make_sim(spec: SimSpec, seed: int, calibration: UserCalibration | None = None) -> _Sim:
    from smartscope.simulators.scene import SMLMScene

    rng = np.random.default_rng(seed)
    scene = SMLMScene((spec.tile_px, spec.tile_px), pixel_size_um=spec.pixel_nm / 1000.0, seed=seed)
    zs = [np.zeros(12)]
    for _ in range(spec.n_aberrations - 1):
        z = np.zeros(12)
        z[4:11] = rng.normal(0, spec.aberration_rms_rad / math.sqrt(7), 7)  # Noll 5..11
        zs.append(z)
    psf = calibration.psf if calibration is not None else None
    if psf is not None and not math.isclose(psf.pixel_nm, spec.pixel_nm, rel_tol=1e-3):
        raise InvalidValue(
            f"pixel size: the PSF {calibration.psf_file} was calibrated at "  # type: ignore[union-attr]
            f"{psf.pixel_nm} nm/px, the training spec says {spec.pixel_nm} nm/px"
        )
    return _Sim(spec, rng, scene, zs, calibration)


def _camera_for_sample(
    s: _Sim, rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[object, CameraMaps | None, CameraModel, bool]:
    """(simulator camera, its maps or None, localizer camera model, EMCCD?) for a sample:
    the user's calibrated camera (a random sensor region of its maps), or a reference one."""
    from smartscope.simulators.camera import EMCCD_REFERENCE, SCMOS_REFERENCE

    cal = s.calibration
    if cal is not None and cal.camera is not None:
        cam = cal.camera
        sim_cfg = cam.sim_config()
        if cal.camera_maps is None:
            return sim_cfg, None, camera_model_for(cam), cam.emccd
        from smartscope.simulators.camera import CameraMaps

        mh, mw = cal.camera_maps.shape
        if mh < shape[0] or mw < shape[1]:
            raise InvalidValue(
                f"camera maps of {cal.camera_file} are {cal.camera_maps.shape}, smaller than the "
                f"training tile {shape}"
            )
        if s.spec.sensor_origin_px is not None:
            y0, x0 = s.spec.sensor_origin_px
        else:
            y0 = int(rng.integers(0, mh - shape[0] + 1))
            x0 = int(rng.integers(0, mw - shape[1] + 1))
        sl = (slice(y0, y0 + shape[0]), slice(x0, x0 + shape[1]))
        m = cal.camera_maps
        sub = CameraMaps.from_arrays(m.offset_adu[sl], m.gain_adu_per_e[sl], m.read_noise_e[sl])
        return sim_cfg, cam.sim_maps(sub), camera_model_for(cam, maps=sub), cam.emccd
    ref = EMCCD_REFERENCE if rng.random() < s.spec.emccd_fraction else SCMOS_REFERENCE
    return ref, None, camera_model_for(ref), ref.kind == "emccd"


def _loguniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def simulate_windows(
    n: int,
    spec: SimSpec,
    seed: int,
    sim: _Sim | None = None,
    calibration: UserCalibration | None = None,
) -> tuple[np.ndarray, list[dict[str, np.ndarray]], np.ndarray, list[bool]]:
    """``n`` three-frame windows: inputs (n, 3, H, W) photoelectrons, ground truth of the
    middle frame per sample (``x_px``, ``y_px`` pixel-centre units, ``z_nm``, ``photons``
    e⁻), background maps (n, H, W) e⁻, and whether each came from an EMCCD.

    With ``calibration`` (or a ``sim`` made with one) the user's spline PSF and camera
    render the frames; z is drawn over the PSF's calibrated range (0 for a 2-D PSF).
    """
    from smartscope.simulators.camera import expose
    from smartscope.simulators.psf_models import render_model
    from smartscope.simulators.samples import Photophysics, PhotophysicsState

    s = sim or _make_sim(spec, seed, calibration)
    rng = s.rng
    scene = s.scene
    psf = s.calibration.psf if s.calibration is not None else None
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
        if psf is None:
            ez = rng.uniform(*spec.z_nm, n_em)
        elif psf.is_3d:
            ez = rng.uniform(*psf.z_range_nm, n_em)
        else:
            ez = np.zeros(n_em)
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
        cam, maps, cm, is_emccd = _camera_for_sample(s, rng, (h, w))
        exposure_ms = float(cam.exposure_ms)  # type: ignore[attr-defined]
        qe = float(cam.qe)  # type: ignore[attr-defined]
        zern = s.zernikes[int(rng.integers(len(s.zernikes)))]
        scene.background_per_ms_per_mw = bg / exposure_ms  # type: ignore[attr-defined]
        for t in range(3):
            frac = st.step(pp, 1.0, 1.0, 0.0, rng)
            on = np.flatnonzero(frac > 0)
            gt = {
                "x_nm": ex[on],
                "y_nm": ey[on],
                "z_nm": ez[on],
                "photons": frac[on] * photons * bright[on],
            }
            if psf is None:
                ph = scene.photons_image(  # type: ignore[attr-defined]
                    gt, excitation_mw=1.0, zernike_rad=zern, exposure_ms=exposure_ms
                )
            else:
                ph = render_model(
                    psf,
                    (h, w),
                    gt["x_nm"],
                    gt["y_nm"],
                    gt["z_nm"],
                    gt["photons"],
                    out=np.full((h, w), bg, np.float32),
                )
            frame = expose(cam, ph, rng, maps=maps)  # type: ignore[arg-type]
            x[i, t] = cm.to_electrons(frame)
            if t == 1:
                xp = gt["x_nm"] / a - 0.5
                yp = gt["y_nm"] / a - 0.5
                keep = (xp >= -0.5) & (xp < w - 0.5) & (yp >= -0.5) & (yp < h - 0.5)
                gts.append(
                    {
                        "x_px": xp[keep],
                        "y_px": yp[keep],
                        "z_nm": gt["z_nm"][keep],
                        "photons": gt["photons"][keep] * qe,
                    }
                )
                dark = float(cam.dark_e_per_s) * exposure_ms * 1e-3  # type: ignore[attr-defined]
                bgs[i] = qe * bg + dark
        emccd_flags.append(is_emccd)
    return x, gts, bgs, emccd_flags


def _pad_gt(gts: list[dict[str, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    """Ground truth padded to the largest count: xy (B, E, 2), photons, mask, z (B, E)."""
    e = max(1, max(len(g["x_px"]) for g in gts))
    b = len(gts)
    xy = np.zeros((b, e, 2), np.float32)
    ph = np.ones((b, e), np.float32)
    z = np.zeros((b, e), np.float32)
    mask = np.zeros((b, e), bool)
    for i, g in enumerate(gts):
        k = len(g["x_px"])
        xy[i, :k, 0] = g["x_px"]
        xy[i, :k, 1] = g["y_px"]
        ph[i, :k] = g["photons"]
        z[i, :k] = g.get("z_nm", np.zeros(k))
        mask[i, :k] = True
    return torch.from_numpy(xy), torch.from_numpy(ph), torch.from_numpy(mask), torch.from_numpy(z)


def _infer(net: SMLMNet, x: np.ndarray, device: str = "cpu", chunk: int = 32) -> np.ndarray:
    net.eval()
    outs = []
    with torch.inference_mode():
        for c0 in range(0, x.shape[0], chunk):
            xb = torch.from_numpy(x[c0 : c0 + chunk] / net.config.input_scale_e).to(device)
            outs.append(net(xb).float().cpu().numpy())
    return np.concatenate(outs)


def _score(
    out: np.ndarray, gts: list[dict[str, np.ndarray]], pixel_nm: float, settings: DecodeSettings | None
) -> dict[str, float]:
    from smartscope.metrics import smlm_scores

    n = len(gts)
    t = LocTable.concat([decode_outputs(out[i], i, pixel_nm, settings) for i in range(n)])
    gf = np.concatenate([np.full(len(g["x_px"]), i) for i, g in enumerate(gts)])
    gxy = (np.concatenate([np.stack([g["x_px"], g["y_px"]], 1) for g in gts]) + 0.5) * pixel_nm
    if out.shape[1] > 8:  # 3-D
        gz = np.concatenate([g["z_nm"] for g in gts])
        return smlm_scores(t.frame, t.xyz_nm(), gf, np.column_stack([gxy, gz]))
    return smlm_scores(t.frame, t.xy_nm(), gf, gxy)


def evaluate(
    net: SMLMNet,
    spec: SimSpec,
    seed: int,
    n: int = 64,
    settings: DecodeSettings | None = None,
    calibration: UserCalibration | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Held-out JI / RMSE / efficiency (3-D scores for a 3-D network) on fresh windows."""
    x, gts, _, _ = simulate_windows(n, spec, seed, calibration=calibration)
    return _score(_infer(net, x, device), gts, spec.pixel_nm, settings)


def choose_threshold(
    net: SMLMNet,
    spec: SimSpec,
    seed: int,
    n: int = 64,
    calibration: UserCalibration | None = None,
    device: str = "cpu",
    candidates: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
) -> tuple[float, dict[str, float]]:
    """The detection threshold with the best efficiency on validation windows (a seed
    the training never used); returns (threshold, efficiency per candidate)."""
    x, gts, _, _ = simulate_windows(n, spec, seed, calibration=calibration)
    out = _infer(net, x, device)
    eff = {
        f"{thr:g}": _score(out, gts, spec.pixel_nm, DecodeSettings(threshold=thr))["efficiency"]
        for thr in candidates
    }
    finite = {k: v for k, v in eff.items() if math.isfinite(v)}
    best = max(finite, key=lambda k: finite[k]) if finite else "0.5"
    return float(best), eff


def _calibration_fields(cal: UserCalibration | None, pixel_nm: float) -> tuple[dict[str, float], str]:
    """Numbers a stage checks a bundle against (``calibration``) and a provenance line."""
    fields: dict[str, float] = {"pixel_size_nm": pixel_nm, "camera_calibrated": 0.0, "psf_calibrated": 0.0}
    words = []
    if cal is not None and cal.camera is not None:
        c = cal.camera
        fields.update(
            camera_calibrated=1.0,
            camera_offset_adu=c.offset_adu,
            camera_gain_adu_per_e=c.gain_adu_per_e,
            camera_em_gain=c.em_gain,
            camera_read_noise_e=c.read_noise_e,
            camera_emccd=1.0 if c.emccd else 0.0,
        )
        words.append(f"camera {cal.camera_file} sha256={cal.camera_sha256}")
    if cal is not None and cal.psf is not None:
        fields["psf_calibrated"] = 1.0
        if cal.psf.is_3d:
            fields["z_min_nm"], fields["z_max_nm"] = cal.psf.z_range_nm
        words.append(f"PSF {cal.psf_file} sha256={cal.psf_sha256}")
    return fields, "; ".join(words)


def parent_config(bundle: Path) -> SMLMNetConfig:
    """The network configuration a DECODE-class bundle was built with."""
    from smartscope.engines.bundle import load_bundle

    b = load_bundle(bundle)
    arch = b.manifest.architecture
    if arch is None or b.weights_bytes is None or arch.name != ARCHITECTURE:
        raise InvalidValue(f"init_bundle: {Path(bundle).name} holds no {ARCHITECTURE} weights")
    return SMLMNetConfig(**arch.params)


def _load_init(net: SMLMNet, cfg: SMLMNetConfig, bundle: Path) -> str:
    """Load a bundle's weights into ``net``; returns the provenance note naming them (the
    bundle's folder name and weights sha256, not its path). Its architecture must be
    ``cfg``'s; a 3-D parent may have another z range (its z head is re-scaled to this one's
    and learns it)."""
    from smartscope.engines.bundle import load_bundle
    from smartscope.engines.weights import state_from_npz_bytes

    parent = parent_config(bundle)
    mine, theirs = cfg.model_dump(exclude={"z_range_nm"}), parent.model_dump(exclude={"z_range_nm"})
    if mine != theirs or (parent.z_range_nm is None) != (cfg.z_range_nm is None):
        raise InvalidValue(
            f"init_bundle: {Path(bundle).name} was built as {parent.model_dump()}, "
            f"this training as {cfg.model_dump()}"
        )
    b = load_bundle(bundle)
    assert b.manifest.architecture is not None and b.weights_bytes is not None
    net.load_state_dict(state_from_npz_bytes(b.weights_bytes, Path(bundle).name))
    prior = b.manifest.metrics.get("train_steps", float("nan"))
    sha = b.manifest.architecture.weights_sha256
    return (
        f"; fine-tuned from parent bundle {Path(bundle).name} (weights sha256 {sha}, {prior:.0f} steps, "
        f"made by: {b.manifest.provenance.command})"
    )


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
    calibration: UserCalibration | None = None,
    device: str = "cpu",
    progress: bool = False,
    checkpoint_every: int = 0,
    checkpoint_dir: Path | None = None,
    init_bundle: Path | None = None,
    z_weight: float = 1.0,
    validation_spec: SimSpec | None = None,
    like: RecordingStats | None = None,
) -> Path:
    """Train for ``minutes`` wall time (or ``max_steps``), choose the detection threshold
    on validation windows, evaluate on held-out windows and export a verified engine
    bundle to ``out``. With ``calibration`` the user's PSF and camera render the data
    (a 3-D PSF makes a 3-D network). ``checkpoint_every`` > 0 writes the weights every that
    many steps to ``checkpoint_dir`` (``weights_<step>.npz`` + ``checkpoint_<step>.json``:
    the network config, for learning curves). ``init_bundle`` starts from that bundle's
    weights (same architecture: fine-tuning, or training on past a budget); its weights'
    sha256 and command go into the provenance. ``z_weight`` weights the z term of the
    loss (:class:`DecodeLoss`). ``validation_spec`` (default: ``spec``) draws the windows
    the detection threshold is chosen on and the held-out scores come from; ``like``, the
    statistics of the user's recording it was made from, goes into the provenance (file
    name, sha256, ranges) and the bundle's ``calibration`` (``like_*``). Returns the bundle
    path."""
    from smartscope.engines.export import export_bundle
    from smartscope.models.train_common import record_results

    torch.manual_seed(seed)
    if device == "cpu":
        torch.set_num_threads(threads)
    elif not torch.cuda.is_available():
        raise InvalidValue(f"device: {device!r} asked for, but torch sees no CUDA GPU here")
    sp = spec or SimSpec()
    cfg = net_config or SMLMNetConfig()
    psf = calibration.psf if calibration is not None else None
    if psf is not None and psf.is_3d and cfg.z_range_nm is None:
        cfg = cfg.model_copy(update={"z_range_nm": psf.z_range_nm})
    if sp.tile_px % (2**cfg.depth):
        raise InvalidValue(f"SimSpec.tile_px={sp.tile_px} must be a multiple of {2**cfg.depth}")
    net = SMLMNet(cfg)
    init_note = ""
    if init_bundle is not None:
        init_note = _load_init(net, cfg, init_bundle)
    net = net.to(device)
    loss_fn = DecodeLoss(cfg.photon_scale_e, cfg.input_scale_e, z_weight=z_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sim = _make_sim(sp, seed, calibration)
    three_d = cfg.z_range_nm is not None
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
        xy, ph, mask, gz = (v.to(device) for v in _pad_gt(gts))
        net.train()
        outp = net(torch.from_numpy(x / cfg.input_scale_e).to(device))
        losses = loss_fn(outp, xy, ph, mask, torch.from_numpy(bgs).to(device), gz if three_d else None)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        if log_every and (step % log_every == 0 or step == 1):
            rec = {k: float(v.detach()) for k, v in losses.items()}
            rec.update(step=step, elapsed_s=time.time() - t0, sim_s=t_sim)
            log.append(rec)
            if progress or log_every:
                print(json.dumps(rec), flush=True)
        if checkpoint_every and step % checkpoint_every == 0:
            from smartscope.models.train_common import write_checkpoint

            write_checkpoint(
                checkpoint_dir or out.with_name(out.name + "-checkpoints"),
                net,
                {"step": step, "elapsed_s": time.time() - t0, "net_config": cfg.model_dump()},
                tag=f"_{step:06d}",
            )
    train_minutes = (time.time() - t0) / 60.0
    vsp = validation_spec or sp
    threshold, tuning = choose_threshold(net, vsp, 20_000 + seed, eval_windows, calibration, device)
    print(f"threshold {threshold} chosen on validation windows (efficiency {tuning})", flush=True)
    heldout = evaluate(
        net, vsp, 10_000 + seed, eval_windows, DecodeSettings(threshold=threshold), calibration, device
    )
    print("held-out", json.dumps(heldout), flush=True)
    metrics = {
        "heldout_jaccard": heldout["jaccard"],
        "heldout_rmse_lat_nm": heldout["rmse_lat_nm"],
        "heldout_efficiency": heldout["efficiency"],
        "train_steps": float(step),
        "train_minutes": train_minutes,
    }
    if three_d:
        metrics["heldout_rmse_ax_nm"] = heldout["rmse_ax_nm"]
        metrics["heldout_efficiency_lat"] = heldout["efficiency_lat"]
        metrics["heldout_efficiency_ax"] = heldout["efficiency_ax"]
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}  # JSON has no NaN
    cal_fields, cal_words = _calibration_fields(calibration, sp.pixel_nm)
    cal_fields["threshold"] = threshold
    data = f"smartscope.simulators on the fly: {sp}"
    if cal_words:
        data = f"rendered with the user's calibration ({cal_words}); {data}"
    if like is not None:
        data = f"{data}; ranges from the {like.describe()}; threshold chosen on {vsp}"
        cal_fields.update(like.calibration_fields())
    manifest = {
        "name": out.name,
        "task": "smlm",
        "version": "0.2.0",
        "inputs": [{"name": "frames", "channels": ["t-1", "t", "t+1"]}],
        "outputs": [{"name": "out", "channels": list(cfg.output_channels)}],
        # input units are photoelectrons (the stage converts ADU with its camera model)
        "normalization": {"kind": "affine", "offset_adu": 0.0, "scale_adu": cfg.input_scale_e},
        "pixel_size_um": sp.pixel_nm / 1000.0,
        "tile": {"size_px": 256, "overlap_px": 16, "multiple_px": 2**cfg.depth},
        "architecture": {"name": ARCHITECTURE, "params": cfg.model_dump(), "weights_sha256": "0" * 64},
        "provenance": {
            "command": command or " ".join(shlex.quote(a) for a in sys.argv),
            "data": data,
            "seed": seed,
            "method": "DECODE-class: 3-frame U-Net, count + Gaussian-mixture + background loss"
            + (" (x, y, z)" if three_d else ""),
            "software": {"torch": torch.__version__},
            "notes": "input = photoelectrons / scale_adu (offset_adu/scale_adu are in e⁻ here)",
        },
    }
    net.eval()
    path = export_bundle(net.cpu(), out, manifest_fields=manifest)
    note = f"threshold {threshold:g} chosen on {eval_windows} validation windows (seed {20_000 + seed})"
    if z_weight != 1.0:
        note += f"; z loss weight {z_weight:g}"
    record_results(Path(path), manifest, metrics, note + init_note, calibration=cal_fields)
    (Path(path) / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    return Path(path)
