"""Train a denoising U-Net (N2V or CARE) and write a verified engine bundle.

Pipeline: split whole fields of view into train / held-out -> normalization (default: per
frame, 1st..99.8th percentile -> 0..1, so one network serves many light levels; or one
fixed affine map from the training data) -> random patches with flips
and 90-degree rotations -> N2V blind-spot or CARE supervised loss -> validation on fixed
held-out patches, early stopping, best weights kept -> ONNX export -> held-out metrics
measured by running the exported bundle through ONNX Runtime on the full held-out
fields -> metrics and provenance written into ``engine.json``. Under torchrun (``--nproc``)
each process trains on its slice of every global batch (``smartscope.models.distributed``)
and rank 0 alone exports and scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from smartscope.base_model import FrozenModel
from smartscope.engines.networks.denoise import FastDenoiser, FastDenoiserConfig
from smartscope.engines.networks.unet import UNet2D, UNetConfig
from smartscope.exceptions import InvalidValue
from smartscope.models.denoise.data import DenoiseData, split_heldout
from smartscope.models.denoise.network import DEFAULT_UNET, care_loss, n2v_loss, n2v_mask
from smartscope.models.distributed import init_distributed
from smartscope.models.train_common import (
    FitConfig,
    fit,
    lr_schedule,
    percentile_affine,
    record_results,
    seed_everything,
    software_versions,
)

__all__ = ["DenoiseTrainConfig", "evaluate_heldout", "input_channels", "train_denoise", "window"]

CHANNEL = "fluorescence"


def input_channels(frames: int) -> list[str]:
    """Input channel names: ``fluorescence`` alone, or the frames oldest first
    (``fluorescence[t-2]``, ``fluorescence[t-1]``, ``fluorescence``)."""
    return [*(f"{CHANNEL}[t-{frames - 1 - j}]" for j in range(frames - 1)), CHANNEL]


def window(stack: np.ndarray, t: int, frames: int) -> np.ndarray:
    """Frames ``t - frames + 1 .. t`` of a ``(T, H, W)`` stack, oldest first; before the
    first frame the first frame repeats (as a live stage does until its buffer fills)."""
    idx = [max(0, t - frames + 1 + j) for j in range(frames)]
    return stack[idx]


class DenoiseTrainConfig(FrozenModel):
    method: Literal["n2v", "care"]
    arch: Literal["unet", "fast"] = Field(
        default="unet", description="unet: the 2-D U-Net; fast: the multi-frame FastDenoiser"
    )
    unet: UNetConfig = Field(default=DEFAULT_UNET)
    fast: FastDenoiserConfig = Field(default_factory=lambda: FastDenoiserConfig())
    fit: FitConfig = Field(default_factory=lambda: FitConfig())
    patch_px: int = Field(default=64, ge=16)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    val_patches: int = Field(default=48, ge=1)
    n2v_fraction: float = Field(default=0.02, gt=0, lt=0.5, description="masked pixel fraction")
    n2v_radius: int = Field(default=2, ge=1)
    care_loss: Literal["mse", "mae"] = "mse"
    tile_px: int = Field(default=256, ge=32)
    overlap_px: int = Field(default=64, ge=0)
    eval_max_frames: int = Field(default=32, ge=1, description="held-out frames scored")
    normalization: Literal["percentile", "affine"] = Field(
        default="percentile",
        description="percentile: per frame (p_low..p_high -> 0..1), robust to light level; "
        "affine: one fixed map from the training data",
    )
    low_percentile: float = Field(default=1.0, ge=0, lt=50)
    high_percentile: float = Field(default=99.8, gt=50, le=100)

    @property
    def frames(self) -> int:
        """Input frames per output frame (the U-Net's: its input channels)."""
        return self.fast.frames if self.arch == "fast" else self.unet.in_channels

    @property
    def size_multiple(self) -> int:
        return self.fast.size_multiple if self.arch == "fast" else 2**self.unet.depth

    def network(self) -> torch.nn.Module:
        return FastDenoiser(self.fast) if self.arch == "fast" else UNet2D(self.unet)

    def architecture(self) -> dict[str, Any]:
        if self.arch == "fast":
            return {"name": "denoise_fast", "params": self.fast.model_dump()}
        return {"name": "unet2d", "params": self.unet.model_dump()}


class _Patches:
    """Random (noisy window[, target]) patches from normalized FOV stacks, D4 augmented.

    ``x``: ``(n, frames, p, p)``, the frames up to ``t`` oldest first; ``target``:
    ``(n, 1, p, p)`` at ``t``. Stacks with at least ``frames`` frames only give full windows.
    """

    def __init__(
        self, noisy: list[np.ndarray], target: list[np.ndarray] | None, patch: int, frames: int = 1
    ) -> None:
        for name, arr in enumerate(noisy):
            if min(arr.shape[-2:]) < patch:
                raise InvalidValue(f"field {name} is {arr.shape[-2:]} px, smaller than the patch {patch}")
        self.noisy, self.target, self.patch, self.frames = noisy, target, patch, frames
        sizes = np.array([a.size for a in noisy], dtype=np.float64)
        self.p = sizes / sizes.sum()

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        p = self.patch
        xs, ts = [], []
        for _ in range(n):
            f = int(rng.choice(len(self.noisy), p=self.p))
            stack = self.noisy[f]
            first = self.frames - 1 if stack.shape[0] >= self.frames else 0
            t = int(rng.integers(first, stack.shape[0]))
            y = int(rng.integers(stack.shape[1] - p + 1))
            x = int(rng.integers(stack.shape[2] - p + 1))
            k, flip = int(rng.integers(4)), bool(rng.integers(2))

            def aug(a: np.ndarray, k: int = k, flip: bool = flip) -> np.ndarray:
                a = np.rot90(a, k, axes=(-2, -1))
                return a[..., ::-1] if flip else a

            xs.append(aug(window(stack, t, self.frames)[:, y : y + p, x : x + p]))
            if self.target is not None:
                ts.append(aug(self.target[f][t : t + 1, y : y + p, x : x + p]))
        xb = np.ascontiguousarray(np.stack(xs), dtype=np.float32)
        tb = np.ascontiguousarray(np.stack(ts), dtype=np.float32) if ts else None
        return xb, tb


def evaluate_heldout(bundle: Path, val: DenoiseData, max_frames: int, frames: int = 1) -> dict[str, float]:
    """PSNR/SSIM of raw and denoised held-out frames against the clean reference.

    Runs the exported bundle through ONNX Runtime (the deployment path) on the window of
    ``frames`` frames ending at each scored frame; stacks of at least ``frames`` frames
    score their full windows only. Data range per frame = max - min of the reference
    frame; SSIM: Gaussian sigma 1.5, 11x11.
    """
    from smartscope.engines.runtime import Engine
    from smartscope.metrics import psnr, ssim

    if val.clean is None:
        return {}
    eng = Engine.open(bundle, "onnxruntime")
    scores: dict[str, list[float]] = {"psnr_db": [], "ssim": [], "raw_psnr_db": [], "raw_ssim": []}
    n = 0
    for noisy, clean in zip(val.noisy, val.clean, strict=True):
        first = frames - 1 if noisy.shape[0] >= frames else 0
        for t in range(first, noisy.shape[0]):
            if n >= max_frames:
                break
            ref = clean[t]
            rng = float(ref.max() - ref.min())
            den = eng.infer(window(noisy, t, frames))["denoised"][0]
            scores["psnr_db"].append(psnr(den, ref, rng))
            scores["ssim"].append(ssim(den, ref, rng))
            scores["raw_psnr_db"].append(psnr(noisy[t], ref, rng))
            scores["raw_ssim"].append(ssim(noisy[t], ref, rng))
            n += 1
    eng.close()
    out = {k: float(np.mean(v)) for k, v in scores.items()}
    out["heldout_frames_scored"] = float(n)
    return out


def train_denoise(
    data: DenoiseData,
    config: DenoiseTrainConfig,
    out: str | Path,
    *,
    command: str,
    name: str,
    checkpoint_dir: Path | None = None,
    quiet: bool = False,
    as_zip: bool = False,
    data_seed: int | None = None,
) -> tuple[Path, dict[str, float]]:
    """Train, export and score; returns the bundle path and its held-out metrics.

    Launched on several processes (torchrun), every rank trains and rank 0 writes the
    bundle; the other ranks return ``(out, {})``.
    """
    from smartscope.engines.export import export_bundle

    cfg = config
    fcfg = cfg.fit
    if cfg.method == "care" and data.clean is None:
        raise InvalidValue("CARE needs paired high-SNR targets (DIR/low + DIR/high, or --simulate)")
    mult = cfg.size_multiple
    if cfg.patch_px % mult or cfg.tile_px % mult:
        raise InvalidValue(f"patch_px and tile_px must be multiples of the network's size multiple {mult}")
    if fcfg.threads:
        torch.set_num_threads(fcfg.threads)
    dist, dev_name = init_distributed(fcfg.device)
    dist.shard(fcfg.batch_size)  # refuse a global batch that does not split evenly, before any work
    rng = seed_everything(fcfg.seed)
    gen = torch.Generator().manual_seed(fcfg.seed)
    train, val = split_heldout(data, cfg.val_fraction, fcfg.seed, min_px=cfg.patch_px)
    offset, scale = percentile_affine(train.noisy, min_scale=1e-3)
    pct = (cfg.low_percentile, cfg.high_percentile)

    def params(frame: np.ndarray) -> tuple[float, float]:
        if cfg.normalization == "affine":
            return offset, scale
        lo, hi = np.percentile(frame, pct)
        return float(lo), float(max(hi - lo, 1e-6))

    def norm(src: list[np.ndarray], ref: list[np.ndarray]) -> list[np.ndarray]:
        """Normalize each frame of ``src`` with the parameters of the same noisy frame."""
        out = []
        for a, r in zip(src, ref, strict=True):
            ps = [params(r[t]) for t in range(r.shape[0])]
            out.append(np.stack([(a[t] - o) / s for t, (o, s) in enumerate(ps)]).astype(np.float32))
        return out

    supervised = cfg.method == "care"
    tr_noisy = norm(train.noisy, train.noisy)
    tr_target = norm(train.clean, train.noisy) if supervised and train.clean is not None else None
    va_noisy = norm(val.noisy, val.noisy)
    va_target = norm(val.clean, val.noisy) if supervised and val.clean is not None else None
    k_in = cfg.frames
    sampler = _Patches(tr_noisy, tr_target, cfg.patch_px, k_in)
    vx_np, vt_np = _Patches(va_noisy, va_target, cfg.patch_px, k_in).sample(
        cfg.val_patches, np.random.default_rng(fcfg.seed + 1)
    )
    device = torch.device(dev_name)
    vx = torch.from_numpy(vx_np).to(device)
    vt = torch.from_numpy(vt_np).to(device) if vt_np is not None else None
    vmask: torch.Tensor | None = None

    def blind(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """N2V input: only the current (last) frame is masked; earlier frames carry
        independent noise, so they cannot leak a masked pixel's own noise."""
        cur, mask = n2v_mask(x[:, -1:], cfg.n2v_fraction, g, cfg.n2v_radius)
        return torch.cat([x[:, :-1], cur], dim=1), mask

    if not supervised:
        vin, vmask = blind(vx, torch.Generator().manual_seed(fcfg.seed + 2))
    model = cfg.network().to(device)
    net = dist.wrap(model)  # DDP on several processes: gradients averaged over the ranks
    opt = torch.optim.Adam(model.parameters(), lr=fcfg.lr)
    sched = lr_schedule(opt, fcfg)
    mine = dist.shard(fcfg.batch_size)  # this rank's slice of every (global) batch

    def step(i: int) -> float:
        xb, tb = sampler.sample(fcfg.batch_size, rng)
        x = torch.from_numpy(xb).to(device)
        if supervised:
            assert tb is not None
            loss = care_loss(net(x[mine]), torch.from_numpy(tb[mine]).to(device), cfg.care_loss)
        else:
            xin, mask = blind(x, gen)
            loss = n2v_loss(net(xin[mine]), x[mine, -1:], mask[mine])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach())

    def validate() -> float:
        if supervised:
            assert vt is not None
            return float(care_loss(model(vx), vt, cfg.care_loss))
        assert vmask is not None
        return float(n2v_loss(model(vin), vx[:, -1:], vmask))

    fields: dict[str, Any] = {
        "name": name,
        "task": "denoise",
        "version": "0.1.0",
        "inputs": [
            {"name": "raw", "channels": input_channels(k_in), **({"frames": k_in} if k_in > 1 else {})}
        ],
        "outputs": [{"name": "denoised", "channels": [CHANNEL], "denormalize": True}],
        "normalization": {
            "kind": cfg.normalization,
            "offset_adu": offset,
            "scale_adu": scale,
            "low_percentile": cfg.low_percentile,
            "high_percentile": cfg.high_percentile,
        },
        "pixel_size_um": data.pixel_size_um,
        "tile": {"size_px": cfg.tile_px, "overlap_px": cfg.overlap_px, "multiple_px": mult},
        "architecture": cfg.architecture(),
        "provenance": {
            "command": command,
            "data": data.description,
            "seed": fcfg.seed if data_seed is None else data_seed,
            "method": cfg.method,
            "train_fovs": train.names,
            "heldout_fovs": val.names,
            "software": software_versions(),
            "notes": "; ".join([*val.notes, f"training config: {cfg.model_dump_json()}"]),
        },
    }
    result = fit(
        model,
        step,
        validate,
        fcfg,
        checkpoint_dir=checkpoint_dir,
        checkpoint_meta=lambda: {"manifest": fields},
        description=f"{cfg.method} denoise",
        quiet=quiet,
        dist=dist,
    )
    dist.close()
    if not dist.is_main:
        return Path(out), {}
    model = model.cpu().eval()
    path = export_bundle(model, out, manifest_fields=fields, as_zip=as_zip)
    metrics: dict[str, float] = {
        "val_loss": result.best_val,
        "best_step": float(result.best_step),
        "steps_run": float(result.steps_run),
    }
    metrics.update(evaluate_heldout(path, val, cfg.eval_max_frames, k_in))
    reference = "noise-free ground truth" if data.has_ground_truth else "high-SNR targets"
    note = f"stopped_early={result.stopped_early}; held-out metrics vs {reference}"
    record_results(path, fields, metrics, note, as_zip=as_zip)
    return path, metrics
