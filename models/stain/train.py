"""Train a pix2pix virtual-staining generator and write a verified engine bundle.

Pipeline: split whole fields of view into train / held-out → one fixed affine map per
channel from the training fields (0.5th..99.5th percentile → 0..1; label-free input,
each acquired fluorescence input, each target), never per-image min-max → random
patches with the 8 rotations/flips → each step draws a fresh channel mask per patch
(half the patches with no channel given: label-free → fluorescence; the rest with a
random subset of channels given, at least one left to predict: channel completion) →
pix2pix losses: the generator minimizes ``l1_weight · L1 + adv_weight · BCE(D(x, G(x)), 1)``
(L1 over the channels to predict; given channels count with ``given_weight``),
the PatchGAN discriminator ``½[BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)]`` (Adam, lr 2e-4,
β1 = 0.5, as in Isola et al. 2017; ``adv_weight = 0`` trains the L1-only U-Net of the
same size) → validation L1 on fixed held-out patches with no channel given, early
stopping, best weights kept → only the generator is exported to ONNX → held-out metrics
measured through ONNX Runtime on the full held-out fields, plus the trust calibration
(held-out TTA disagreement, training spread of the input statistics) → ``engine.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from smartscope.base_model import FrozenModel
from smartscope.engines.networks.stain import (
    ARCHITECTURE,
    StainGenerator,
    StainNetConfig,
    input_channel_names,
)
from smartscope.exceptions import InvalidValue
from smartscope.models.stain.data import StainData
from smartscope.models.stain.network import PatchDiscriminator
from smartscope.models.train_common import (
    FitConfig,
    fit,
    percentile_affine,
    record_results,
    seed_everything,
    software_versions,
    split_fovs,
)

__all__ = ["StainTrainConfig", "evaluate_heldout", "train_stain"]

OUTPUT = "virtual"
INPUT = "stain_input"


class StainTrainConfig(FrozenModel):
    completion: bool = Field(default=True, description="train channel completion too (mask input)")
    depth: int = Field(default=3, ge=1, le=6)
    base_width: int = Field(default=16, ge=2)
    fit: FitConfig = Field(
        default_factory=lambda: FitConfig(steps=1500, batch_size=8, lr=2e-4, val_every=100, patience=5)
    )
    l1_weight: float = Field(default=100.0, ge=0, description="λ_L1")
    adv_weight: float = Field(default=1.0, ge=0, description="weight of the adversarial term; 0 = L1 only")
    beta1: float = Field(default=0.5, ge=0, lt=1, description="Adam β1 for both networks")
    disc_width: int = Field(default=32, ge=4)
    patch_px: int = Field(default=128, ge=16)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    val_patches: int = Field(default=32, ge=1)
    p_label_free_only: float = Field(default=0.35, ge=0, le=1, description="patches with no channel given")
    given_weight: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="L1 weight of channels that were given (predicted ones weigh 1): the "
        "network's effort goes to the channels it must predict",
    )
    tile_px: int = Field(default=256, ge=32)
    overlap_px: int = Field(default=32, ge=0)
    tta: int = Field(default=4, ge=2, le=4, description="augmentations for the trust calibration")
    low_percentile: float = Field(default=0.5, ge=0, lt=50)
    high_percentile: float = Field(default=99.5, gt=50, le=100)


class _Patches:
    """Random normalized (input, target) patches with D4 augmentation and fresh masks."""

    def __init__(
        self, lf: list[np.ndarray], given: list[np.ndarray], target: list[np.ndarray], cfg: StainTrainConfig
    ) -> None:
        p = cfg.patch_px
        for i, a in enumerate(lf):
            if min(a.shape[-2:]) < p:
                raise InvalidValue(f"field {i} is {a.shape[-2:]} px, smaller than the patch {p}")
        self.lf, self.given, self.target, self.cfg = lf, given, target, cfg
        self.n_ch = target[0].shape[1]

    def masks(self, n: int, rng: np.random.Generator, label_free_only: bool = False) -> np.ndarray:
        c = self.n_ch
        m = np.zeros((n, c), np.float32)
        if not self.cfg.completion or label_free_only:
            return m
        for i in range(n):
            if rng.random() < self.cfg.p_label_free_only:
                continue
            m[i] = rng.random(c) < 0.5
            if m[i].all():  # something must be left to predict
                m[i, rng.integers(c)] = 0
        return m

    def sample(
        self, n: int, rng: np.random.Generator, label_free_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        p = self.cfg.patch_px
        xs, ys = [], []
        masks = self.masks(n, rng, label_free_only)
        for i in range(n):
            f = int(rng.integers(len(self.lf)))
            t = int(rng.integers(self.lf[f].shape[0]))
            y0 = int(rng.integers(self.lf[f].shape[-2] - p + 1))
            x0 = int(rng.integers(self.lf[f].shape[-1] - p + 1))
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            sl = (slice(y0, y0 + p), slice(x0, x0 + p))
            parts = [self.lf[f][t][(slice(None), *sl)]]
            if self.cfg.completion:
                parts += [
                    self.given[f][t][(slice(None), *sl)],
                    np.broadcast_to(masks[i][:, None, None], (self.n_ch, p, p)),
                ]
            x = np.concatenate(parts)
            y = self.target[f][t][(slice(None), *sl)]
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
            if flip:
                x, y = x[:, :, ::-1], y[:, :, ::-1]
            xs.append(x)
            ys.append(y)
        return (
            np.ascontiguousarray(np.stack(xs), np.float32),
            np.ascontiguousarray(np.stack(ys), np.float32),
        )


def _masked_l1(
    fake: torch.Tensor, y: torch.Tensor, x: torch.Tensor, c: int, cfg: StainTrainConfig, n_lf: int = 1
) -> torch.Tensor:
    """Mean L1 with given channels down-weighted to ``given_weight`` (masks read from ``x``,
    after its ``n_lf`` label-free planes)."""
    if not cfg.completion:
        return (fake - y).abs().mean()
    given = x[:, n_lf + c : n_lf + 2 * c, :1, :1]  # (B, C, 1, 1), constant over each patch
    w = 1.0 - (1.0 - cfg.given_weight) * given
    return ((fake - y).abs() * w).sum() / (w.sum() * y.shape[-2] * y.shape[-1])


def evaluate_heldout(
    bundle: Path,
    val: StainData,
    *,
    tta: int = 4,
    max_frames: int = 16,
) -> tuple[dict[str, float], dict[str, float]]:
    """Held-out metrics (per channel, label-free mode; completion: each channel predicted
    from the label-free frame + the other channels) and the trust calibration.

    Runs the exported bundle through ONNX Runtime, as deployed; targets are mapped with the
    bundle's stored target normalization. Scores: :func:`smartscope.metrics.image_scores`.
    """
    from smartscope.engines.runtime import Engine
    from smartscope.metrics import image_scores
    from smartscope.models.stain.predict import normalized_target, predict

    eng = Engine.open(bundle, "onnxruntime")
    completion = len(eng.manifest.inputs[0].channels) > 1
    chans = val.channels
    scores: dict[str, list[float]] = {}
    dis: list[float] = []
    n = 0
    for i, (given, target) in enumerate(zip(val.given, val.target, strict=True)):
        lf = val.label_free_stack(i)
        for t in range(lf.shape[0]):
            if n >= max_frames:
                break
            n += 1
            tg = normalized_target(eng.manifest.calibration, chans, target[t])
            pred = predict(eng, lf[t], None, tta)
            assert pred.disagreement is not None
            dis.append(float(pred.disagreement.mean()))
            for c, ch in enumerate(chans):
                for k, v in image_scores(pred.virtual[c], tg[c]).items():
                    scores.setdefault(f"{k}:{ch}", []).append(v)
            if completion and len(chans) > 1:
                for c, ch in enumerate(chans):
                    others = {o: given[t, j] for j, o in enumerate(chans) if j != c}
                    pc = predict(eng, lf[t], others, 1)
                    for k, v in image_scores(pc.virtual[c], tg[c]).items():
                        scores.setdefault(f"completion_{k}:{ch}", []).append(v)
    eng.close()
    metrics = {k: float(np.mean(v)) for k, v in scores.items()}
    metrics["heldout_frames_scored"] = float(n)
    calib = {
        "disagreement_median": float(np.median(dis)),
        "disagreement_p95": float(np.percentile(dis, 95)),
        "tta": float(tta),
    }
    return metrics, calib


def train_stain(
    data: StainData,
    config: StainTrainConfig,
    out: str | Path,
    *,
    command: str,
    name: str,
    checkpoint_dir: Path | None = None,
    quiet: bool = False,
    as_zip: bool = False,
    data_seed: int | None = None,
) -> tuple[Path, dict[str, float]]:
    """Train, export the generator, score held-out fields; returns the bundle and metrics."""
    from smartscope.engines.export import export_bundle
    from smartscope.models.stain.predict import INPUT_STATS, input_stats

    cfg = config
    fcfg = cfg.fit
    mult = 2**cfg.depth
    if cfg.patch_px % mult or cfg.tile_px % mult:
        raise InvalidValue(f"patch_px and tile_px must be multiples of 2**depth = {mult}")
    if fcfg.threads:
        torch.set_num_threads(fcfg.threads)
    rng = seed_everything(fcfg.seed)
    tr_idx, va_idx = split_fovs(len(data.names), cfg.val_fraction, fcfg.seed)
    train, val = data.subset(tr_idx), data.subset(va_idx)
    pct = (cfg.low_percentile, cfg.high_percentile)
    chans = list(data.channels)
    c = len(chans)
    lf_norm = percentile_affine(train.label_free, *pct)
    in_norm = [percentile_affine([g[:, k] for g in train.given], *pct) for k in range(c)]
    tg_norm = [percentile_affine([g[:, k] for g in train.target], *pct) for k in range(c)]

    def norm_fov(lf: np.ndarray, g: np.ndarray, tg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lfn = ((lf - lf_norm[0]) / lf_norm[1]).astype(np.float32)
        gn = np.stack([(g[:, k] - o) / s for k, (o, s) in enumerate(in_norm)], axis=1).astype(np.float32)
        tn = np.stack([(tg[:, k] - o) / s for k, (o, s) in enumerate(tg_norm)], axis=1).astype(np.float32)
        return lfn, gn, tn

    # label-free inputs (T, 1 + P, H, W): the in-focus frame and its planes share one map
    n_lf = 1 + len(data.planes_um)
    tr = [
        norm_fov(train.label_free_stack(i), g, t)
        for i, (g, t) in enumerate(zip(train.given, train.target, strict=True))
    ]
    va = [
        norm_fov(val.label_free_stack(i), g, t)
        for i, (g, t) in enumerate(zip(val.given, val.target, strict=True))
    ]
    sampler = _Patches([a[0] for a in tr], [a[1] for a in tr], [a[2] for a in tr], cfg)
    vsampler = _Patches([a[0] for a in va], [a[1] for a in va], [a[2] for a in va], cfg)
    vx_np, vy_np = vsampler.sample(
        cfg.val_patches, np.random.default_rng(fcfg.seed + 1), label_free_only=True
    )
    device = torch.device(fcfg.device)
    vx, vy = torch.from_numpy(vx_np).to(device), torch.from_numpy(vy_np).to(device)

    net_cfg = StainNetConfig(
        channels=chans,
        completion=cfg.completion,
        planes_um=list(data.planes_um),
        depth=cfg.depth,
        base_width=cfg.base_width,
    )
    gen = StainGenerator(net_cfg).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=fcfg.lr, betas=(cfg.beta1, 0.999))
    adversarial = cfg.adv_weight > 0
    disc = PatchDiscriminator(net_cfg.in_channels + c, cfg.disc_width).to(device) if adversarial else None
    opt_d = (
        torch.optim.Adam(disc.parameters(), lr=fcfg.lr, betas=(cfg.beta1, 0.999))
        if disc is not None
        else None
    )
    bce = nn.BCEWithLogitsLoss()

    def step(i: int) -> float:
        xb, yb = sampler.sample(fcfg.batch_size, rng)
        x, y = torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)
        fake = gen(x)
        if disc is not None and opt_d is not None:
            disc.train()
            real_logits = disc(x, y)
            fake_logits = disc(x, fake.detach())
            d_loss = 0.5 * (
                bce(real_logits, torch.ones_like(real_logits))
                + bce(fake_logits, torch.zeros_like(fake_logits))
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        l1 = _masked_l1(fake, y, x, c, cfg, n_lf)
        g_loss = cfg.l1_weight * l1
        if disc is not None:
            logits = disc(x, fake)
            g_loss = g_loss + cfg.adv_weight * bce(logits, torch.ones_like(logits))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return float(l1.detach())

    def validate() -> float:
        return float((gen(vx) - vy).abs().mean())

    in_names = input_channel_names(chans, cfg.completion, data.planes_um)
    offsets = [lf_norm[0]] * n_lf + ([o for o, _ in in_norm] + [0.0] * c if cfg.completion else [])
    scales = [lf_norm[1]] * n_lf + ([s for _, s in in_norm] + [1.0] * c if cfg.completion else [])
    # the trust signal's input statistics (in-focus frame): their spread over the training fields
    tr_stats = [input_stats(a[0][t, 0]) for a in tr for t in range(a[0].shape[0])]
    calibration: dict[str, float] = {}
    for k in INPUT_STATS:
        vals = np.array([s[k] for s in tr_stats])
        calibration[f"input_{k}_mean"] = float(vals.mean())
        calibration[f"input_{k}_sd"] = float(max(vals.std(), 1e-3 * abs(vals.mean()), 1e-9))
    for ch, (o, s) in zip(chans, tg_norm, strict=True):
        calibration[f"target_offset:{ch}"] = o
        calibration[f"target_scale:{ch}"] = s
    method = "pix2pix" if adversarial else "l1-unet"
    fields: dict[str, Any] = {
        "name": name,
        "task": "stain",
        "version": "0.1.0",
        "inputs": [{"name": INPUT, "channels": in_names}],
        "outputs": [{"name": OUTPUT, "channels": chans}],
        "normalization": {"kind": "affine", "channel_offset_adu": offsets, "channel_scale_adu": scales},
        "pixel_size_um": data.pixel_size_um,
        "tile": {"size_px": cfg.tile_px, "overlap_px": cfg.overlap_px, "multiple_px": mult},
        "architecture": {"name": ARCHITECTURE, "params": net_cfg.model_dump()},
        "calibration": calibration,
        "provenance": {
            "command": command,
            "data": data.description,
            "seed": fcfg.seed if data_seed is None else data_seed,
            "method": method,
            "train_fovs": train.names,
            "heldout_fovs": val.names,
            "software": software_versions(),
            "notes": f"outputs in normalized target units: (target - target_offset) / target_scale "
            f"(calibration); training config: {cfg.model_dump_json()}",
        },
    }
    result = fit(
        gen,
        step,
        validate,
        fcfg,
        checkpoint_dir=checkpoint_dir,
        checkpoint_meta=lambda: {"manifest": fields},
        description=f"{method} stain",
        quiet=quiet,
    )
    gen = gen.cpu().eval()
    path = export_bundle(gen, out, manifest_fields=fields, as_zip=as_zip)
    metrics: dict[str, float] = {
        "val_l1": result.best_val,
        "best_step": float(result.best_step),
        "steps_run": float(result.steps_run),
    }
    held, calib = evaluate_heldout(path, val, tta=cfg.tta)
    metrics.update(held)
    calibration.update(calib)
    reference = "noise-free ground truth" if data.has_ground_truth else "acquired fluorescence"
    note = f"stopped_early={result.stopped_early}; held-out metrics vs {reference}"
    record_results(path, {**fields, "calibration": calibration}, metrics, note, as_zip=as_zip)
    return path, metrics
