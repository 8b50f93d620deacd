"""DECODE-class network localizer (Speiser et al. 2021) on the shared U-Net (``smlm_decode``).

Input: three consecutive frames (t-1, t, t+1) in photoelectrons divided by
``input_scale_e`` (channels of one tensor). Output: one tensor of 8 channels per pixel of
frame t, in physical units (the scales are constants inside the graph):

====== =================================================================
prob   detection probability that an emitter's centre lies in this pixel
dx, dy sub-pixel offset of that emitter from the pixel centre (px, ±1)
photons detected photons (photoelectrons) of that emitter in frame t
bg     background (photoelectrons per pixel)
sx, sy localization uncertainty (px, 1 s.d.)
sphot  photon uncertainty (photoelectrons, 1 s.d.)
z      (3-D networks) height above the focal plane, nm, within ``z_range_nm``
sz     (3-D networks) its uncertainty, nm (1 s.d.)
====== =================================================================

A 2-D network has the first 8 channels (:data:`OUTPUT_CHANNELS`), a 3-D one all 10
(:data:`OUTPUT_CHANNELS_3D`), named in :mod:`smartscope.engines.networks.smlm_outputs`.
The loss that trains it is in :mod:`smartscope.models.smlm.network`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from smartscope.engines.networks import NETWORKS, register_network
from smartscope.engines.networks.smlm_outputs import OUTPUT_CHANNELS, OUTPUT_CHANNELS_3D
from smartscope.engines.networks.unet import UNet2D, UNetConfig

__all__ = ["ARCHITECTURE", "N_FRAMES", "Z_UNIT_NM", "SMLMNet", "SMLMNetConfig"]

ARCHITECTURE = "smlm_decode"
N_FRAMES = 3
Z_UNIT_NM = 100.0  # scale of the z uncertainty output (≈ one camera pixel)


class SMLMNetConfig(BaseModel):
    """Architecture of :class:`SMLMNet`; stored in the bundle's ``architecture.params``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    depth: int = Field(default=2, ge=1, le=4)
    base_width: int = Field(default=24, ge=4)
    norm: str = "none"
    input_scale_e: float = Field(default=100.0, gt=0, description="photoelectrons per input unit")
    photon_scale_e: float = Field(default=1000.0, gt=0, description="photons per output unit")
    z_range_nm: tuple[float, float] | None = Field(
        default=None, description="3-D: the z range the network predicts within (None: 2-D)"
    )

    @property
    def output_channels(self) -> tuple[str, ...]:
        return OUTPUT_CHANNELS_3D if self.z_range_nm is not None else OUTPUT_CHANNELS


class SMLMNet(nn.Module):
    """Shared :class:`UNet2D` trunk (3 frames in) + DECODE output activations (+ z)."""

    def __init__(self, config: SMLMNetConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg = config if config is not None else SMLMNetConfig(**kwargs)
        self.config = cfg
        self.unet = UNet2D(
            UNetConfig(
                in_channels=N_FRAMES,
                out_channels=len(cfg.output_channels),
                depth=cfg.depth,
                base_width=cfg.base_width,
                norm=cfg.norm,  # type: ignore[arg-type]
            )
        )
        bias = self.unet.head.bias
        assert bias is not None
        with torch.no_grad():  # start from a low detection probability (~2 %)
            bias[0].fill_(-4.0)

    @property
    def size_multiple(self) -> int:
        return self.unet.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.unet(x)
        cfg = self.config
        prob = torch.sigmoid(raw[:, 0:1])
        offs = torch.tanh(raw[:, 1:3])
        photons = nn.functional.softplus(raw[:, 3:4]) * cfg.photon_scale_e
        bg = nn.functional.softplus(raw[:, 4:5]) * cfg.input_scale_e
        sxy = torch.sigmoid(raw[:, 5:7]) * 3.0 + 0.01
        sphot = (torch.sigmoid(raw[:, 7:8]) * 3.0 + 0.01) * cfg.photon_scale_e
        parts = [prob, offs, photons, bg, sxy, sphot]
        if cfg.z_range_nm is not None:
            lo, hi = cfg.z_range_nm
            half = 0.55 * (hi - lo)  # a little beyond the range, so its ends are reachable
            parts.append(0.5 * (lo + hi) + half * torch.tanh(raw[:, 8:9]))
            parts.append((torch.sigmoid(raw[:, 9:10]) * 3.0 + 0.01) * Z_UNIT_NM)
        return torch.cat(parts, dim=1)


def _factory(params: dict[str, Any]) -> nn.Module:
    return SMLMNet(SMLMNetConfig(**params))


if ARCHITECTURE not in NETWORKS:
    register_network(ARCHITECTURE, _factory)
