"""The denoising network and what it is trained to do.

Two networks, defined beside the engine runtime that rebuilds them:

- the project's 2-D U-Net (:mod:`smartscope.engines.networks.unet`), one channel in and
  out, :data:`DEFAULT_UNET` unless the command says otherwise;
- the real-time :class:`~smartscope.engines.networks.denoise.FastDenoiser` (architecture
  ``denoise_fast``, :mod:`smartscope.engines.networks.denoise`).

Two objectives train them:

- **Noise2Void** (Krull et al. 2019): blind-spot training on the noisy data alone. A
  stratified random subset of pixels is hidden from the network by replacing each with a
  random neighbour from a ``(2r+1)^2`` window (never itself); the loss compares the
  network's prediction at those pixels with their original noisy values. With pixel-wise
  independent, zero-mean noise the minimiser is the clean signal.
- **CARE** (Weigert et al. 2018): supervised restoration from paired low/high-SNR images.

In the loop a denoising bundle runs in the generic engine stage
(:mod:`smartscope.engines.stage`), which also reports the frame's SNR for controllers.
"""

from __future__ import annotations

from typing import Literal

import torch

from smartscope.engines.networks.unet import UNetConfig

__all__ = [
    "DEFAULT_UNET",
    "care_loss",
    "n2v_loss",
    "n2v_mask",
]

DEFAULT_UNET = UNetConfig(depth=2, base_width=16)


def n2v_mask(
    x: torch.Tensor, fraction: float, generator: torch.Generator, radius: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blind-spot input and mask for a batch ``x`` of shape ``(B, C, H, W)``.

    One pixel per ``s x s`` grid box is masked, ``s = round(1 / sqrt(fraction))``, at a
    random position inside the box (stratified sampling as in N2V). Each masked pixel
    (all channels) takes the value of a random neighbour at offset ``(dy, dx)`` in
    ``[-radius, radius]^2 \\ {(0, 0)}``; an offset leaving the patch is mirrored.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction} must be in (0, 1)")
    b, _c, h, w = x.shape
    if not 1 <= radius < min(h, w) // 2:
        raise ValueError(f"radius={radius} must be >= 1 and < half the patch size")
    box = max(1, round(fraction**-0.5))
    gy = torch.arange(0, h, box, device=x.device)
    gx = torch.arange(0, w, box, device=x.device)
    ny, nx = len(gy), len(gx)
    k = ny * nx
    dev = x.device

    def rand(high: int, size: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, high, size, generator=generator).to(dev)

    ys = (gy[None, :, None] + rand(box, (b, ny, nx))).clamp_max(h - 1).reshape(b, k)
    xs = (gx[None, None, :] + rand(box, (b, ny, nx))).clamp_max(w - 1).reshape(b, k)
    side = 2 * radius + 1
    pick = rand(side * side - 1, (b, k))
    pick = pick + (pick >= (side * side) // 2).long()  # skip the centre (0, 0)
    dy = pick // side - radius
    dx = pick % side - radius

    def inside(v: torch.Tensor, d: torch.Tensor, n: int) -> torch.Tensor:
        # an offset that leaves the patch is mirrored (v - d), so the source is never v itself
        s = v + d
        return torch.where((s < 0) | (s > n - 1), v - d, s)

    sy = inside(ys, dy, h)
    sx = inside(xs, dx, w)
    bi = torch.arange(b, device=dev)[:, None].expand(b, k)
    out = x.clone()
    out[bi, :, ys, xs] = x[bi, :, sy, sx]
    mask = torch.zeros((b, 1, h, w), dtype=torch.bool, device=dev)
    mask[bi, 0, ys, xs] = True
    return out, mask


def n2v_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked (blind-spot) pixels only."""
    m = mask.expand_as(pred)
    return ((pred - target)[m] ** 2).mean()


def care_loss(pred: torch.Tensor, target: torch.Tensor, kind: Literal["mse", "mae"] = "mse") -> torch.Tensor:
    """Pixel-wise loss against the high-SNR target (MSE maximises PSNR; MAE is robust)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    diff = pred - target
    return (diff * diff).mean() if kind == "mse" else diff.abs().mean()
