"""DECODE-class network localizer (Speiser et al. 2021) on the shared U-Net.

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
(:data:`OUTPUT_CHANNELS_3D`). Training uses DECODE's loss: a Gaussian approximation of the
Poisson-binomial count likelihood plus the log-likelihood of every true emitter under the
Gaussian mixture the per-pixel outputs define (x, y, photons and, in 3-D, z; no explicit
matching), plus a background MSE.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from smartscope.models.smlm.decode import OUTPUT_CHANNELS, OUTPUT_CHANNELS_3D, DecodeSettings, decode_outputs
from smartscope.models.unet import NETWORKS, UNet2D, UNetConfig, register_network

__all__ = [
    "ARCHITECTURE",
    "OUTPUT_CHANNELS",
    "OUTPUT_CHANNELS_3D",
    "DecodeLoss",
    "DecodeSettings",
    "SMLMNet",
    "SMLMNetConfig",
    "decode_outputs",
]  # decode_outputs, DecodeSettings, OUTPUT_CHANNELS live in .decode (no torch), re-exported

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


class DecodeLoss(nn.Module):
    """DECODE loss on network outputs (physical units) and padded ground truth.

    ``gt_xy_px`` (B, E, 2): emitter positions in pixel-centre units of the output grid;
    ``gt_photons`` (B, E); ``gt_mask`` (B, E) bool for real entries; ``gt_bg`` (B, H, W);
    ``gt_z_nm`` (B, E) for a 3-D network (z enters the mixture in units of
    :data:`Z_UNIT_NM`). ``z_weight`` multiplies the z term of each component's
    log-density (> 1 pushes the network harder on z than on x, y and photons).
    """

    def __init__(
        self, photon_scale_e: float, input_scale_e: float, bg_weight: float = 1.0, z_weight: float = 1.0
    ):
        super().__init__()
        self.photon_scale_e = photon_scale_e
        self.input_scale_e = input_scale_e
        self.bg_weight = bg_weight
        self.z_weight = z_weight

    def forward(
        self,
        out: torch.Tensor,
        gt_xy_px: torch.Tensor,
        gt_photons: torch.Tensor,
        gt_mask: torch.Tensor,
        gt_bg: torch.Tensor,
        gt_z_nm: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        b, c_out, h, w = out.shape
        three_d = c_out == len(OUTPUT_CHANNELS_3D)
        if three_d and gt_z_nm is None:
            raise ValueError("a 3-D network's loss needs gt_z_nm")
        prob = out[:, 0].reshape(b, -1).clamp(1e-6, 1 - 1e-6)
        # count loss: Gaussian approximation of the Poisson-binomial sum of p
        mean = prob.sum(1)
        var = (prob * (1 - prob)).sum(1)
        n_true = gt_mask.float().sum(1)
        count = 0.5 * (n_true - mean) ** 2 / var + 0.5 * torch.log(var)
        # mixture likelihood of every true emitter
        yy, xx = torch.meshgrid(
            torch.arange(h, dtype=out.dtype, device=out.device),
            torch.arange(w, dtype=out.dtype, device=out.device),
            indexing="ij",
        )
        mx = (xx[None] + out[:, 1]).reshape(b, 1, -1)
        my = (yy[None] + out[:, 2]).reshape(b, 1, -1)
        mn = (out[:, 3] / self.photon_scale_e).reshape(b, 1, -1)
        sx = out[:, 5].reshape(b, 1, -1)
        sy = out[:, 6].reshape(b, 1, -1)
        sn = (out[:, 7] / self.photon_scale_e).reshape(b, 1, -1)
        gx = gt_xy_px[:, :, 0:1]
        gy = gt_xy_px[:, :, 1:2]
        gn = (gt_photons / self.photon_scale_e)[:, :, None]
        log_n = (
            -0.5 * ((gx - mx) / sx) ** 2
            - torch.log(sx)
            - 0.5 * ((gy - my) / sy) ** 2
            - torch.log(sy)
            - 0.5 * ((gn - mn) / sn) ** 2
            - torch.log(sn)
            - 1.5 * math.log(2 * math.pi)
        )
        if three_d:
            assert gt_z_nm is not None
            mz = (out[:, 8] / Z_UNIT_NM).reshape(b, 1, -1)
            sz = (out[:, 9] / Z_UNIT_NM).reshape(b, 1, -1)
            gz = (gt_z_nm / Z_UNIT_NM)[:, :, None]
            log_z = -0.5 * ((gz - mz) / sz) ** 2 - torch.log(sz) - 0.5 * math.log(2 * math.pi)
            log_n = log_n + self.z_weight * log_z
        log_w = torch.log(prob) - torch.log(mean)[:, None]
        ll = torch.logsumexp(log_w[:, None, :] + log_n, dim=2)  # (B, E)
        loc = -(ll * gt_mask.float()).sum(1)
        bg = ((out[:, 4] - gt_bg) / self.input_scale_e).pow(2).mean((1, 2))
        total = (count + loc + self.bg_weight * bg * h * w / 100.0).mean()
        return {"loss": total, "count": count.mean(), "loc": loc.mean(), "bg": bg.mean()}
