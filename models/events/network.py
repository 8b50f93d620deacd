"""Events heat-map network: what it is fed, and how its output is read.

Input (5 channels, from frames offset-corrected and Gaussian-smoothed with σ =
``SIGMA_PX``, see :func:`make_input`): two references kept on the frame clock as
exponential moving averages — the slow one (``REFERENCE_TAU_S``, exactly as the classical
detector keeps it) and a recent one (``RECENT_TAU_S``) — and the current frame, all divided
by the slow reference's 99th percentile; plus the classical detector's shot-noise
normalised loss map ``(ref − cur) / sqrt(ref + 4)`` as a robust z-score, against the slow
and against the recent reference. The network is the project's 2-D U-Net
(:mod:`smartscope.engines.networks.unet`) with one sigmoid output: an event heat map (0…1); a
frame's score is the map's maximum away from the border (:func:`frame_score`).
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
REFERENCE_TAU_S = 5.0
RECENT_TAU_S = 1.0
NOISE_FLOOR_ADU2 = 4.0
Z_SCALE = 1.0
OFFSET_ADU = 100.0


def smooth(img: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(img.astype(np.float32) - np.float32(OFFSET_ADU), SIGMA_PX, mode="nearest")


def loss_zmap(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Shot-noise normalised loss ``(ref − cur) / sqrt(ref + var0)`` as a robust z-score."""
    loss = (ref - cur) / np.sqrt(np.maximum(ref, 0.0) + np.float32(NOISE_FLOOR_ADU2))
    med = float(np.median(loss))
    mad = 1.4826 * float(np.median(np.abs(loss - med)))
    return ((loss - med) / max(mad, 1e-6)).astype(np.float32)


def make_input(ref: np.ndarray, cur: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """(5, H, W) network input from smoothed, offset-corrected frames: the slow reference,
    the recent reference and the current frame (all / the slow reference's 99th
    percentile), and the loss z-maps of the current frame against the slow and against the
    recent reference (/ ``Z_SCALE``)."""
    scale = np.float32(max(float(np.percentile(ref, 99)), 1.0))
    z_slow = loss_zmap(ref, cur) / np.float32(Z_SCALE)
    z_recent = loss_zmap(recent, cur) / np.float32(Z_SCALE)
    return np.stack([ref / scale, recent / scale, cur / scale, z_slow, z_recent]).astype(np.float32)


INPUT_CHANNELS = ["reference", "recent", "current", "loss_z", "recent_loss_z"]


class ReferenceTracker:
    """Exponential-moving-average references on the frame clock: the slow one
    (``REFERENCE_TAU_S``, as the classical detector keeps it) and a recent one
    (``RECENT_TAU_S``: what changed in the last second — motion still going on)."""

    def __init__(self) -> None:
        self.ref: np.ndarray | None = None
        self.recent: np.ndarray | None = None
        self.t_s = 0.0

    def reset(self) -> None:
        self.ref = self.recent = None

    def step(self, smoothed: np.ndarray, t_s: float) -> np.ndarray | None:
        """Network input for this frame (None on the first frame), then fold the frame in."""
        if self.ref is None or self.recent is None or self.ref.shape != smoothed.shape:
            self.ref, self.recent, self.t_s = smoothed, smoothed, t_s
            return None
        x = make_input(self.ref, smoothed, self.recent)
        dt = max(t_s - self.t_s, 0.0)
        a_slow = 1.0 - math.exp(-dt / REFERENCE_TAU_S)
        a_recent = 1.0 - math.exp(-dt / RECENT_TAU_S)
        self.ref = self.ref + np.float32(a_slow) * (smoothed - self.ref)
        self.recent = self.recent + np.float32(a_recent) * (smoothed - self.recent)
        self.t_s = t_s
        return x


def frame_score(heat: np.ndarray, border_px: int = BORDER_PX) -> tuple[float, int, int]:
    """(maximum, y, x) of a heat map away from a border band."""
    b = border_px
    inner = heat[b : heat.shape[0] - b, b : heat.shape[1] - b] if b else heat
    iy, ix = divmod(int(np.argmax(inner)), inner.shape[1])
    return float(inner[iy, ix]), iy + b, ix + b
