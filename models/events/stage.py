"""Event detectors as pipeline stages: the classical loss map and the learned heat map.

Both report ``event_score`` (higher: an event more likely under way), its position in
full-sensor pixels (``event_y_px``/``event_x_px``, ROI offset added) for the trigger
(:class:`smartscope.controllers.events.EventTriggerController`).

Classical (:class:`ClassicalEventDetector`, ``kind: event_detector``): a fission event
shows as a local *loss* of signal on a mitochondrion (the tube constricts, then parts).
Each frame is offset-corrected and smoothed with a Gaussian of ``sigma_px``; a reference
image follows the sample with an exponential moving average of time constant
``reference_tau_s`` (on the frame clock, so fast and slow modes age it alike). The loss map
``(ref − cur) / sqrt(ref + var0)`` is shot-noise normalised, then made a robust z-score over
the frame (median / MAD), so the score does not depend on brightness. The score is the
map's maximum away from the border; frames whose score reaches ``row_min_score`` get a row.

Learned (:class:`LearnedEventDetector`, ``kind: event_unet``): the heat-map U-Net of
:mod:`.network` on the 5-channel input it assembles; the score is the heat map's maximum
(0…1). The bundle's ``calibration`` holds trigger thresholds chosen on held-out frames
(:func:`trigger_thresholds`). A change of ROI starts a new reference in both.

Both keep one reference per field of view (:func:`reference_key`): each stage position
(and grid tile) of an MDA plan, per channel and focus plane, so frames of a
multi-position run are compared with earlier frames of the same place only; a burst at a
position (``AcquireAt``) shares that position's reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from smartscope.config.stages import EventDetectorConfig, LearnedEventDetectorConfig
from smartscope.engines.bundle import load_bundle
from smartscope.engines.runtime import Engine
from smartscope.exceptions import InvalidValue
from smartscope.frame import Frame, frame_time_s
from smartscope.models.events.network import INPUT_CHANNELS, ReferenceTracker, frame_score, smooth
from smartscope.pipeline import StageOutput

__all__ = ["ClassicalEventDetector", "LearnedEventDetector", "reference_key", "trigger_thresholds"]


def trigger_thresholds(bundle: Path) -> dict[str, float]:
    """``{"on_threshold", "off_threshold"}`` for :class:`EventTriggerConfig` from a bundle's
    calibration (chosen on held-out frames at training time)."""
    cal = load_bundle(bundle).manifest.calibration
    missing = [k for k in ("trigger_on_threshold", "trigger_off_threshold") if k not in cal]
    if missing:
        raise InvalidValue(f"{bundle}: engine.json calibration lacks {missing} (not an events bundle?)")
    return {"on_threshold": cal["trigger_on_threshold"], "off_threshold": cal["trigger_off_threshold"]}


def reference_key(frame: Frame) -> tuple[str, str, float | None]:
    """Which reference a frame is compared with: its field (stage position and grid tile of
    an MDA plan — a burst there shares it; else its image series), its channel and its
    focus plane. A plain stream has one key."""
    axes = frame.axes
    place = frame.series
    if "p" in axes:
        place = f"p{axes['p']}" + (f"-g{axes['g']}" if "g" in axes else "")
    z = frame.state.z_um if frame.state is not None and axes else None
    return place, frame.channel if axes else "", None if z is None else round(z, 2)


@dataclass(slots=True)
class _Reference:
    image: np.ndarray
    t_s: float
    roi: tuple[int, ...]


class ClassicalEventDetector:
    """Implements :class:`smartscope.pipeline.Stage` (see the module doc)."""

    def __init__(self, cfg: EventDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._refs: dict[tuple[str, str, float | None], _Reference] = {}
        self._ref: np.ndarray | None = None  # the reference of the frame in hand

    def reset(self) -> None:
        self._refs.clear()
        self._ref = None

    def score_map(self, smoothed: np.ndarray) -> np.ndarray:
        """Robust z-score of the local loss against the reference (needs a reference)."""
        assert self._ref is not None
        ref = self._ref
        loss = (ref - smoothed) / np.sqrt(np.maximum(ref, 0.0) + self.cfg.noise_floor_adu2)
        med = float(np.median(loss))
        mad = 1.4826 * float(np.median(np.abs(loss - med)))
        return ((loss - med) / max(mad, 1e-6)).astype(np.float32)

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        img = frame.image.astype(np.float32) - np.float32(self.cfg.offset_adu)
        smoothed = ndi.gaussian_filter(img, self.cfg.sigma_px, mode="nearest")
        t = frame_time_s(frame)
        roi = frame.roi
        key = reference_key(frame)
        held = self._refs.get(key)
        if held is None or held.image.shape != smoothed.shape or roi != held.roi:
            # first frame of this field, or the field changed (ROI): start a new reference
            self._refs[key] = _Reference(smoothed, t, roi)
            return StageOutput(values={"event_score": 0.0, "event_y_px": -1.0, "event_x_px": -1.0})
        self._ref = held.image
        zmap = self.score_map(smoothed)
        b = self.cfg.border_px
        inner = zmap[b : zmap.shape[0] - b, b : zmap.shape[1] - b] if b else zmap
        k = int(np.argmax(inner))
        iy, ix = divmod(k, inner.shape[1])
        score = float(inner[iy, ix])
        y_px = float(iy + b + roi[1])
        x_px = float(ix + b + roi[0])
        dt = max(t - held.t_s, 0.0)
        alpha = 1.0 - math.exp(-dt / self.cfg.reference_tau_s) if dt > 0 else 0.5
        held.image = held.image + np.float32(alpha) * (smoothed - held.image)
        held.t_s = t
        out = StageOutput(values={"event_score": score, "event_y_px": y_px, "event_x_px": x_px})
        if score >= self.cfg.row_min_score:
            out.rows.append({"t_s": t, "score": score, "y_px": y_px, "x_px": x_px})
        if self.cfg.emit_heatmap:
            out.images["score"] = zmap
        return out

    def close(self) -> None:
        self.reset()


class LearnedEventDetector:
    """Implements :class:`smartscope.pipeline.Stage` (see the module doc)."""

    def __init__(self, cfg: LearnedEventDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.engine = Engine.open(cfg.bundle, cfg.backend)
        have = self.engine.manifest.inputs[0].channels
        if list(have) != INPUT_CHANNELS:
            raise InvalidValue(
                f"bundle: {cfg.bundle}: events bundle input channels are {have}, this stage feeds "
                f"{INPUT_CHANNELS}; retrain it with this version"
            )
        self._trackers: dict[tuple[str, str, float | None], tuple[ReferenceTracker, tuple[int, ...]]] = {}

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        cur = smooth(frame.image)
        roi = frame.roi
        key = reference_key(frame)
        tracker, held_roi = self._trackers.setdefault(key, (ReferenceTracker(), roi))
        if roi != held_roi:  # the field changed: start a new reference
            tracker.reset()
            self._trackers[key] = (tracker, roi)
        x = tracker.step(cur, frame_time_s(frame))
        if x is None:
            return StageOutput(values={"event_score": 0.0, "event_y_px": -1.0, "event_x_px": -1.0})
        heat = self.engine.infer(x)["heat"][0]
        score, iy, ix = frame_score(heat, self.cfg.border_px)
        return StageOutput(
            values={
                "event_score": score,
                "event_y_px": float(iy + roi[1]),
                "event_x_px": float(ix + roi[0]),
            }
        )

    def close(self) -> None:
        self.engine.close()
