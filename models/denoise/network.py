"""The denoising network and what it is trained to do.

Two networks:

- the project's 2-D U-Net (:mod:`smartscope.models.unet`), one channel in and out,
  :data:`DEFAULT_UNET` unless the command says otherwise;
- :class:`FastDenoiser` (architecture ``denoise_fast``): a small, real-time network that
  takes the current frame and the ``frames - 1`` frames before it (oldest first, stacked
  along channels; live imaging provides them) and returns the current frame denoised.
  It works at 1/``stride`` resolution: a ``stride x stride``, stride-``stride``
  convolution (space-to-depth and a 1x1 mixing in one op), ``blocks`` residual 3x3
  convolutions of ``width`` channels there, optionally one coarser level (1/2 of that,
  ``2 width`` channels), and a 3x3 convolution to ``stride²`` channels put back to full
  resolution by a pixel shuffle. Few multiply-adds per pixel and no full-resolution
  feature maps, so it runs at video rate on a CPU.

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

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from smartscope.base_model import FrozenModel
from smartscope.models.unet import NETWORKS, UNetConfig, register_network

__all__ = [
    "DEFAULT_UNET",
    "FastDenoiser",
    "FastDenoiserConfig",
    "care_loss",
    "n2v_loss",
    "n2v_mask",
]

DEFAULT_UNET = UNetConfig(depth=2, base_width=16)


class FastDenoiserConfig(FrozenModel):
    """Architecture of :class:`FastDenoiser`; stored verbatim in ``engine.json``."""

    frames: int = Field(
        default=1, ge=1, le=16, description="input frames, oldest first; the last is denoised"
    )
    stride: int = Field(default=4, ge=1, le=8, description="space-to-depth factor")
    width: int = Field(default=32, ge=4, description="channels at 1/stride resolution")
    blocks: int = Field(default=2, ge=0, le=16, description="residual 3x3 convolutions at 1/stride")
    coarse: bool = Field(default=True, description="one more level at 1/(2 stride), 2 width channels")
    residual: bool = Field(default=True, description="add the current (last) input frame to the output")

    @property
    def size_multiple(self) -> int:
        return self.stride * (2 if self.coarse else 1)


class FastDenoiser(nn.Module):
    """``(N, frames, H, W)`` -> ``(N, 1, H, W)``; H, W multiples of :attr:`size_multiple`."""

    def __init__(self, config: FastDenoiserConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg = config if config is not None else FastDenoiserConfig(**kwargs)
        self.config = cfg
        s, w = cfg.stride, cfg.width
        self.encode = nn.Conv2d(cfg.frames, w, s, stride=s)
        self.blocks = nn.ModuleList(nn.Conv2d(w, w, 3, padding=1) for _ in range(cfg.blocks))
        if cfg.coarse:
            self.down = nn.Conv2d(w, 2 * w, 2, stride=2)
            self.mid = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
            self.up = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.decode = nn.Conv2d(w, s * s, 3, padding=1)
        self.act = nn.ReLU()

    @property
    def size_multiple(self) -> int:
        return self.config.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.encode(x))
        if self.config.coarse:
            d = self.act(self.down(h))
            h = h + self.up(self.act(self.mid(d)))
        for conv in self.blocks:
            h = h + self.act(conv(h))
        out = nn.functional.pixel_shuffle(self.decode(h), self.config.stride)
        if self.config.residual:
            out = out + x[:, -1:]
        return out


def _build_fast(params: dict[str, Any]) -> nn.Module:
    return FastDenoiser(FastDenoiserConfig(**params))


if "denoise_fast" not in NETWORKS:
    register_network("denoise_fast", _build_fast)


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
