"""A small, configurable 2-D U-Net shared by every engine (denoise, SMLM, staining, events).

The network is described by a JSON-serialisable :class:`UNetConfig`; an engine bundle
stores that description next to its weights, so the torch backend can rebuild the exact
module without unpickling anything (see :mod:`smartscope.engines.weights`).

Spatial sizes must be multiples of ``2**depth``; :func:`UNet2D.size_multiple` says which.
The engine runtime pads frames to that multiple before inference.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from smartscope.base_model import FrozenModel
from smartscope.engines.networks import NETWORKS, register_network

__all__ = ["ARCHITECTURE", "UNet2D", "UNetConfig"]

ARCHITECTURE = "unet2d"


class UNetConfig(FrozenModel):
    """Architecture of :class:`UNet2D`; stored verbatim in ``engine.json``."""

    in_channels: int = Field(default=1, ge=1)
    out_channels: int = Field(default=1, ge=1)
    depth: int = Field(default=2, ge=1, le=6, description="number of 2x down-samplings")
    base_width: int = Field(default=16, ge=2, description="channels of the first level; doubles per level")
    norm: Literal["none", "batch", "group"] = "none"
    residual: bool = Field(
        default=False,
        description="add the input to the output (requires in_channels == out_channels)",
    )
    final_activation: Literal["none", "sigmoid", "softplus"] = "none"


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        )


class UNet2D(nn.Module):
    """U-Net (Ronneberger 2015) with max-pool down, nearest-upsample + conv up, skip concat.

    Input and output are ``(N, C, H, W)`` float tensors with ``H, W`` multiples of
    ``2**depth``. Nearest upsampling + 1x1 conv (instead of transposed conv) avoids
    checkerboard artefacts and exports to ONNX/TensorRT with dynamic H/W.
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg = config if config is not None else UNetConfig(**kwargs)
        if cfg.residual and cfg.in_channels != cfg.out_channels:
            raise ValueError("UNetConfig.residual requires in_channels == out_channels")
        self.config = cfg
        widths = [cfg.base_width * 2**i for i in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        cin = cfg.in_channels
        for w in widths[:-1]:
            self.down.append(_DoubleConv(cin, w, cfg.norm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = _DoubleConv(widths[-2], widths[-1], cfg.norm)
        self.up_proj = nn.ModuleList()
        self.up = nn.ModuleList()
        for lvl in range(cfg.depth - 1, -1, -1):
            self.up_proj.append(nn.Conv2d(widths[lvl + 1], widths[lvl], 1))
            self.up.append(_DoubleConv(2 * widths[lvl], widths[lvl], cfg.norm))
        self.head = nn.Conv2d(widths[0], cfg.out_channels, 1)

    @property
    def size_multiple(self) -> int:
        return int(2**self.config.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for proj, block, skip in zip(self.up_proj, self.up, reversed(skips), strict=True):
            h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(torch.cat([proj(h), skip], dim=1))
        out = self.head(h)
        if self.config.residual:
            out = out + x
        if self.config.final_activation == "sigmoid":
            out = torch.sigmoid(out)
        elif self.config.final_activation == "softplus":
            out = nn.functional.softplus(out)
        return out


def _build(params: dict[str, Any]) -> nn.Module:
    return UNet2D(UNetConfig(**params))


if ARCHITECTURE not in NETWORKS:
    register_network(ARCHITECTURE, _build)
