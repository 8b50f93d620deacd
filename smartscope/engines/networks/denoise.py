"""The real-time denoising network (architecture ``denoise_fast``).

:class:`FastDenoiser` takes the current frame and the ``frames - 1`` frames before it
(oldest first, stacked along channels; live imaging provides them) and returns the current
frame denoised. It works at 1/``stride`` resolution: a ``stride x stride``, stride-``stride``
convolution (space-to-depth and a 1x1 mixing in one op), ``blocks`` residual 3x3
convolutions of ``width`` channels there, optionally one coarser level (1/2 of that,
``2 width`` channels), and a 3x3 convolution to ``stride²`` channels put back to full
resolution by a pixel shuffle. Few multiply-adds per pixel and no full-resolution feature
maps, so it runs at video rate on a CPU. Its training objectives are in
:mod:`smartscope.models.denoise.network`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from smartscope.base_model import FrozenModel
from smartscope.engines.networks import NETWORKS, register_network

__all__ = ["ARCHITECTURE", "FastDenoiser", "FastDenoiserConfig"]

ARCHITECTURE = "denoise_fast"


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


if ARCHITECTURE not in NETWORKS:
    register_network(ARCHITECTURE, _build_fast)
