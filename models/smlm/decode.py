"""DECODE-class network outputs -> localizations, in numpy (no torch: runs in an inference-only
install; the network and its training are in :mod:`smartscope.models.smlm.network`).

The graph's output has one 8-channel tensor per pixel of the centre frame,
:data:`OUTPUT_CHANNELS` (prob, sub-pixel dx/dy, photons, bg, sx/sy uncertainties, sphot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from smartscope.models.smlm.table import LocTable

__all__ = ["OUTPUT_CHANNELS", "DecodeSettings", "decode_outputs"]

OUTPUT_CHANNELS: tuple[str, ...] = ("prob", "dx", "dy", "photons", "bg", "sx", "sy", "sphot")


@dataclass(frozen=True, slots=True)
class DecodeSettings:
    """How probability maps become localizations."""

    threshold: float = 0.5  # on the 3x3 summed probability at a local maximum
    min_prob_px: float = 0.05


def decode_outputs(
    out: np.ndarray,
    frame_index: int,
    pixel_nm: float,
    settings: DecodeSettings | None = None,
    origin_px: tuple[int, int] = (0, 0),
) -> LocTable:
    """Per-pixel outputs (8, H, W) → localization table for one frame.

    A detection is a pixel whose probability is the maximum of its 3x3 neighbourhood and
    whose 3x3 summed probability exceeds ``threshold`` (emitters split across two pixels
    count once); ``prob`` = that sum, capped at 1.
    """
    s = settings or DecodeSettings()
    if out.ndim != 3 or out.shape[0] != len(OUTPUT_CHANNELS):
        raise ValueError(f"network output must be (8, H, W) {OUTPUT_CHANNELS}, got {out.shape}")
    p = out[0]
    psum = ndimage.uniform_filter(p, size=3, mode="constant") * 9.0
    # a tiny position ramp breaks ties, so an emitter split evenly over two pixels counts once
    ramp = np.arange(p.size, dtype=np.float64).reshape(p.shape) / p.size * 1e-6
    pt = p.astype(np.float64) + ramp
    peak = (pt == ndimage.maximum_filter(pt, size=3, mode="constant")) & (psum > s.threshold)
    peak &= p > s.min_prob_px
    r, c = np.nonzero(peak)
    x_px = c + out[1, r, c] + origin_px[1]
    y_px = r + out[2, r, c] + origin_px[0]
    return LocTable.from_columns(
        frame=np.full(r.size, frame_index, np.int64),
        x_nm=(x_px + 0.5) * pixel_nm,
        y_nm=(y_px + 0.5) * pixel_nm,
        photons=out[3, r, c],
        bg=out[4, r, c],
        sigma_x_nm=out[5, r, c] * pixel_nm,
        sigma_y_nm=out[6, r, c] * pixel_nm,
        prob=np.minimum(psum[r, c], 1.0),
    )
