"""Sensorless modal adaptive optics through the deformable mirror (2N+1 images per pass).

For N Zernike modes, one pass takes the image at the current correction and, for each
mode, two images with that mode biased by ±``bias_rad`` (2N+1 images). An image-quality
metric ``M`` (point-source sharpness or low-frequency Fourier power) behaves near its
optimum like ``M ∝ exp(−k·(a + c)²)`` in each mode amplitude ``a`` with correction
``c``, so ``ln M`` is a parabola: three samples give the optimum

    c* = c − b · (L₊ − L₋) / (2 · (L₊ + L₋ − 2L₀)),      L = ln M,

bounded to ±``max_step_factor``·b (and to the best sample when ``ln M`` is not concave).
All modes of a pass are updated together; passes repeat with the bias shrunk by
``bias_decay``. Mirror commands never exceed ``stroke_rad`` per mode.

Two forms: :func:`modal_correct` drives any ``measure(correction) -> image`` callable (the
bench drives an MMCore directly: set the mirror, snap); :class:`ModalAOController` runs the
same schedule inside the live loop — it asks for a mirror shape with ``SetMirror``, waits
for a frame acquired with that shape in force (``obs.state.mirror_rad``), scores it,
and moves on; the final correction stays on the mirror.

The virtual microscope has one wavefront, the mirror's. To simulate a sample aberration
``a`` the harness (:class:`smartscope.simulators.harness.AberratedMirror`, and ``base_rad``
of the controller) writes
``a + c`` to the mirror for a correction ``c``; the algorithm only ever sees images and
its own ``c``, and the residual is ``a + c``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smartscope.actions import ActionRequest, SetMirror
from smartscope.config.controllers import ModalAOConfig
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.exceptions import InvalidValue

__all__ = [
    "ModalAOController",
    "ModalResult",
    "image_metric",
    "log_parabola_optimum",
    "modal_correct",
    "residual_rms_rad",
]

MARECHAL_RAD = 2 * math.pi / 14  # λ/14 RMS in rad


# ============================================================================ metric


def image_metric(img: np.ndarray, kind: str = "sharpness", offset_adu: float = 100.0) -> float:
    """Image quality that peaks when the wavefront is flat (higher is better).

    ``sharpness``: Σ s² / (Σ s)² of the background-subtracted signal ``s`` (≈ proportional
    to the peak intensity of point sources, i.e. to the Strehl ratio). ``lowfreq``:
    power of the normalised spectrum in the band 5–30 % of the sampling frequency.
    """
    a = img.astype(np.float64) - offset_adu
    s = np.clip(a - float(np.median(a)), 0.0, None)
    total = float(s.sum())
    if total <= 0:
        raise ValueError("image_metric: no signal above the background")
    if kind == "sharpness":
        return float((s * s).sum() / (total * total) * s.size)
    if kind == "lowfreq":
        f = np.abs(np.fft.rfft2(s)) ** 2 / total**2
        fy = np.fft.fftfreq(s.shape[0])[:, None]
        fx = np.fft.rfftfreq(s.shape[1])[None, :]
        r = np.hypot(fy, fx)
        band = (r >= 0.05) & (r <= 0.30)
        return float(f[band].mean())
    raise InvalidValue(f"metric must be 'sharpness' or 'lowfreq', got {kind!r}")


def log_parabola_optimum(bias: float, m_minus: float, m0: float, m_plus: float, max_step: float) -> float:
    """Offset (from the centre sample) of the optimum of a Gaussian through 3 samples."""
    if min(m_minus, m0, m_plus) <= 0:
        raise ValueError("metric samples must be positive")
    lm, l0, lp = math.log(m_minus), math.log(m0), math.log(m_plus)
    curv = lp + lm - 2 * l0
    if curv >= -1e-12:  # not concave: go to the best sample
        return (-bias, 0.0, bias)[int(np.argmax([lm, l0, lp]))]
    x = -bias * (lp - lm) / (2 * curv)
    return float(min(max(x, -max_step), max_step))


def residual_rms_rad(zernike_rad: Sequence[float] | np.ndarray, skip: Sequence[int] = (1, 2, 3)) -> float:
    """RMS wavefront (rad) of Noll amplitudes, piston/tip/tilt excluded by default."""
    return math.sqrt(sum(float(a) ** 2 for j, a in enumerate(zernike_rad, start=1) if j not in skip))


# ============================================================================ the loop


@dataclass
class ModalResult:
    correction_rad: np.ndarray  # Noll j = 1..n_terms
    images: int
    history: list[dict[str, Any]] = field(default_factory=list)


def _probe_schedule(cfg: ModalAOConfig, bias: float) -> list[tuple[int, float]]:
    """(mode, bias) per image of one pass: the centre first, then −b/+b per mode."""
    out: list[tuple[int, float]] = [(0, 0.0)]
    for j in cfg.modes:
        out += [(j, -bias), (j, bias)]
    return out


def _apply_pass(
    cfg: ModalAOConfig, corr: np.ndarray, bias: float, metrics: Sequence[float]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    new = corr.copy()
    rows = []
    m0 = metrics[0]
    for k, j in enumerate(cfg.modes):
        mm, mp = metrics[1 + 2 * k], metrics[2 + 2 * k]
        step = log_parabola_optimum(bias, mm, m0, mp, cfg.max_step_factor * bias)
        new[j - 1] = corr[j - 1] + step
        rows.append({"mode": j, "bias_rad": bias, "m_minus": mm, "m0": m0, "m_plus": mp, "step_rad": step})
    return new, rows


def _clip_to_stroke(cfg: ModalAOConfig, corr: np.ndarray) -> np.ndarray:
    """The correction limited so base + correction stays within ±stroke per mode."""
    base = np.zeros(cfg.n_terms)
    base[: len(cfg.base_rad)] = cfg.base_rad
    return np.clip(base + corr, -cfg.stroke_rad, cfg.stroke_rad) - base


def modal_correct(
    measure: Callable[[np.ndarray], np.ndarray],
    cfg: ModalAOConfig,
    start_rad: np.ndarray | None = None,
) -> ModalResult:
    """Run the modal schedule on ``measure(correction) -> image`` (correction: Noll j=1..)."""
    corr = np.zeros(cfg.n_terms) if start_rad is None else np.asarray(start_rad, float).copy()
    if corr.size < cfg.n_terms:
        corr = np.concatenate([corr, np.zeros(cfg.n_terms - corr.size)])
    images = 0
    history: list[dict[str, Any]] = []
    bias = cfg.bias_rad
    prev: tuple[np.ndarray, float] | None = None  # last pass's centre and its metric

    def score(c: np.ndarray) -> float:
        nonlocal images
        images += 1
        return image_metric(measure(_clip_to_stroke(cfg, c)), cfg.metric, cfg.offset_adu)

    for p in range(cfg.passes):
        m0 = score(corr)
        for _ in range(cfg.max_backtracks):
            if prev is None or m0 >= prev[1]:
                break
            # the last update made the image worse: go half-way back and look again
            corr = prev[0] + 0.5 * (corr - prev[0])
            m0 = score(corr)
            history.append({"pass": p, "backtrack": True, "m0": m0})
        metrics = [m0]
        for j, b in _probe_schedule(cfg, bias)[1:]:
            probe = corr.copy()
            probe[j - 1] += b
            metrics.append(score(probe))
        prev = (corr.copy(), m0)
        corr, rows = _apply_pass(cfg, corr, bias, metrics)
        corr = _clip_to_stroke(cfg, corr)
        history += [{"pass": p, **r} for r in rows]
        bias *= cfg.bias_decay
    return ModalResult(corr, images, history)


# ============================================================================ live controller


class ModalAOController(ControllerBase):
    """Implements :class:`smartscope.controllers.base.Controller`; see the module doc."""

    def __init__(self, cfg: ModalAOConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.corr = np.zeros(cfg.n_terms)
        self.bias = cfg.bias_rad
        self.pass_no = 0
        self.step = 0  # index into the probe schedule
        self.metrics: list[float] = []
        self.pending: tuple[float, ...] | None = None
        self.settle = 0
        self.done = False
        self.prev: tuple[np.ndarray, float] | None = None
        self.backtracks_left = cfg.max_backtracks
        self.images = 0
        self.history: list[dict[str, Any]] = []

    def _command(self, corr: np.ndarray) -> tuple[float, ...]:
        base = np.zeros(self.cfg.n_terms)
        base[: len(self.cfg.base_rad)] = self.cfg.base_rad
        return tuple(float(v) for v in np.round(base + _clip_to_stroke(self.cfg, corr), 9))

    def _probe(self) -> np.ndarray:
        j, b = _probe_schedule(self.cfg, self.bias)[self.step]
        probe = self.corr.copy()
        if j:
            probe[j - 1] += b
        return probe

    def _ask(self, obs: Observation, corr: np.ndarray, reason: str, **evidence: Any) -> list[ActionRequest]:
        cmd = self._command(corr)
        self.pending = cmd
        self.settle = self.cfg.settle_frames
        return [self.ask(SetMirror(zernike_rad=cmd), reason, obs, **evidence)]

    def update(self, obs: Observation) -> Sequence[ActionRequest]:
        if self.done:
            return []
        if self.pending is None:  # first frame: put the first probe on the mirror
            return self._ask(obs, self._probe(), f"modal AO pass {self.pass_no}: probe {self.step}")
        have = obs.state.mirror_rad or ()
        if len(have) != len(self.pending) or not np.allclose(have, self.pending, atol=1e-6):
            return []  # this frame was taken before the requested shape was in force
        if self.settle > 0:
            self.settle -= 1
            return []
        m = image_metric(obs.frame.image, self.cfg.metric, self.cfg.offset_adu)
        self.images += 1
        n = self.cfg.images_per_pass()
        if self.step == 0:  # the centre of a pass
            if self.prev is not None and m < self.prev[1] and self.backtracks_left > 0:
                self.backtracks_left -= 1
                self.corr = self.prev[0] + 0.5 * (self.corr - self.prev[0])
                self.history.append({"pass": self.pass_no, "backtrack": True, "m0": m})
                return self._ask(
                    obs, self.corr, "modal AO: last update lowered the metric, half-way back", metric=m
                )
            self.metrics = [m]
            self.step = 1
            return self._ask(obs, self._probe(), f"modal AO pass {self.pass_no}: probe 1/{n}", metric=m)
        self.metrics.append(m)
        self.step += 1
        if self.step < n:
            return self._ask(
                obs, self._probe(), f"modal AO pass {self.pass_no}: probe {self.step}/{n}", metric=m
            )
        self.prev = (self.corr.copy(), self.metrics[0])
        self.corr, rows = _apply_pass(self.cfg, self.corr, self.bias, self.metrics)
        self.corr = _clip_to_stroke(self.cfg, self.corr)
        self.history += [{"pass": self.pass_no, **r} for r in rows]
        steps = {f"Z{r['mode']}": round(r["step_rad"], 4) for r in rows}
        self.metrics, self.step = [], 0
        self.pass_no += 1
        self.bias *= self.cfg.bias_decay
        self.backtracks_left = self.cfg.max_backtracks
        if self.pass_no >= self.cfg.passes:
            self.done = True
            return self._ask(obs, self.corr, "modal AO done: final correction", steps_rad=steps, metric=m)
        return self._ask(
            obs, self.corr, f"modal AO pass {self.pass_no}: new centre", steps_rad=steps, metric=m
        )
