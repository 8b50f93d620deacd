"""Events heat-map network: what it is fed, and how its output is read.

The network predicts where a fission is *about to happen*: its heat map is high at a
constriction that will part within the next ``HORIZON_S`` seconds (see :mod:`.data`), so
the trigger can start the fast mode before the fission moment, not after it.

Input (8 channels, :data:`INPUT_CHANNELS`, from frames offset-corrected and
Gaussian-smoothed with σ = ``SIGMA_PX``; see :func:`make_input`). Frames arrive at an
irregular rate (1 s apart, 100 ms in a burst), so the temporal context is kept on the frame
clock as exponential moving averages (EMAs) rather than as a fixed number of frames: a slow
reference (``REFERENCE_TAU_S``: what the sample looked like before an event began), a
recent one (``RECENT_TAU_S``) and a short one (``SHORT_TAU_S``: the current frame in slow
mode, the mean of the last few frames in a burst, so a burst sharpens the evidence). The
channels: the slow reference, the recent EMA and the current frame (each / the slow
reference's 99th percentile); the shot-noise normalised loss ``(a − b) / sqrt(a + 4)`` as
a robust z-score (median / MAD over the frame) of the current frame, the short EMA and the
recent EMA against the slow reference, and of the short EMA against the recent one
(change still going on); and the time since the previous frame, ``log10(dt / 1 s) + 1``
(1 in slow mode, 0 in a 100 ms burst), as a constant plane. The network is the project's
2-D U-Net (:mod:`smartscope.models.unet`) with one sigmoid output; a frame's score is the
map's maximum away from the border (:func:`frame_score`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from smartscope.config.stages import EVENTS_BORDER_PX as BORDER_PX

__all__ = [
    "BORDER_PX",
    "INPUT_CHANNELS",
    "ReferenceTracker",
    "frame_score",
    "loss_zmap",
    "make_input",
    "smooth",
]

SIGMA_PX = 1.5
REFERENCE_TAU_S = 10.0
RECENT_TAU_S = 1.0
SHORT_TAU_S = 0.3
NOISE_FLOOR_ADU2 = 4.0
OFFSET_ADU = 100.0

INPUT_CHANNELS = [
    "reference",
    "recent",
    "current",
    "loss_z",
    "short_loss_z",
    "recent_loss_z",
    "change_z",
    "frame_interval",
]


def smooth(img: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(img.astype(np.float32) - np.float32(OFFSET_ADU), SIGMA_PX, mode="nearest")


def loss_zmap(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Shot-noise normalised loss ``(ref − cur) / sqrt(ref + var0)`` as a robust z-score."""
    loss = (ref - cur) / np.sqrt(np.maximum(ref, 0.0) + np.float32(NOISE_FLOOR_ADU2))
    med = float(np.median(loss))
    mad = 1.4826 * float(np.median(np.abs(loss - med)))
    return ((loss - med) / max(mad, 1e-6)).astype(np.float32)


def interval_plane(dt_s: float) -> float:
    """The ``frame_interval`` channel's value: ``log10(dt / 1 s) + 1``, clipped to 0…1.5."""
    return float(np.clip(math.log10(max(dt_s, 1e-3)) + 1.0, 0.0, 1.5))


def make_input(
    ref: np.ndarray, recent: np.ndarray, short: np.ndarray, cur: np.ndarray, dt_s: float
) -> np.ndarray:
    """(8, H, W) network input (:data:`INPUT_CHANNELS`) from smoothed, offset-corrected
    images: the slow reference, the recent and short EMAs and the current frame, and the
    time since the previous frame."""
    scale = np.float32(max(float(np.percentile(ref, 99)), 1.0))
    planes = [
        ref / scale,
        recent / scale,
        cur / scale,
        loss_zmap(ref, cur),
        loss_zmap(ref, short),
        loss_zmap(ref, recent),
        loss_zmap(recent, short),
        np.full(ref.shape, interval_plane(dt_s), np.float32),
    ]
    return np.stack(planes).astype(np.float32)


def _ema(old: np.ndarray, new: np.ndarray, dt_s: float, tau_s: float) -> np.ndarray:
    a = 1.0 - math.exp(-dt_s / tau_s)
    return old + np.float32(a) * (new - old)


class ReferenceTracker:
    """The EMAs of :func:`make_input` on the frame clock (slow reference, recent, short).

    ``step`` folds a frame into the recent and short EMAs, builds the input from them and
    the *old* slow reference (an event in progress is not yet part of it), then folds the
    frame into the slow reference."""

    def __init__(self) -> None:
        self.ref: np.ndarray | None = None
        self.recent: np.ndarray | None = None
        self.short: np.ndarray | None = None
        self.t_s = 0.0

    def reset(self) -> None:
        self.ref = self.recent = self.short = None

    def step(self, smoothed: np.ndarray, t_s: float) -> np.ndarray | None:
        """Network input for this frame (None on the first frame), then fold the frame in."""
        if self.ref is None or self.recent is None or self.short is None or self.ref.shape != smoothed.shape:
            self.ref, self.recent, self.short, self.t_s = smoothed, smoothed, smoothed, t_s
            return None
        dt = max(t_s - self.t_s, 0.0)
        self.short = _ema(self.short, smoothed, dt, SHORT_TAU_S)
        x = make_input(self.ref, self.recent, self.short, smoothed, dt)
        self.recent = _ema(self.recent, smoothed, dt, RECENT_TAU_S)
        self.ref = _ema(self.ref, smoothed, dt, REFERENCE_TAU_S)
        self.t_s = t_s
        return x


def frame_score(heat: np.ndarray, border_px: int = BORDER_PX) -> tuple[float, int, int]:
    """(maximum, y, x) of a heat map away from a border band."""
    b = border_px
    inner = heat[b : heat.shape[0] - b, b : heat.shape[1] - b] if b else heat
    iy, ix = divmod(int(np.argmax(inner)), inner.shape[1])
    return float(inner[iy, ix]), iy + b, ix + b
