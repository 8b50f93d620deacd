"""DECODE's loss (Speiser et al. 2021), which trains the SMLM network
(:mod:`smartscope.engines.networks.smlm`): a Gaussian approximation of the Poisson-binomial
count likelihood plus the log-likelihood of every true emitter under the Gaussian mixture
the per-pixel outputs define (x, y, photons and, in 3-D, z; no explicit matching), plus a
background MSE.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smartscope.engines.networks.smlm import Z_UNIT_NM
from smartscope.engines.networks.smlm_outputs import OUTPUT_CHANNELS_3D

__all__ = ["DecodeLoss"]


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
