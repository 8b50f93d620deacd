"""The learned aberration estimator at run time: one image behind a known defocus bias in,
Noll 1…11 amplitudes out (the median over the beads found); applied iteratively.

Each step takes one image with the mirror at ``correction + δ·Z4`` (:data:`DIVERSITY_RAD`),
estimates the wavefront before the bias and subtracts it from the correction: the next
image then shows a smaller residual, which the network estimates more precisely. A
correction of ``steps`` steps costs ``steps`` images. Driven by a ``measure(correction) ->
image`` callable (bench and tests drive an MMCore directly), not by the live loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from smartscope.engines.runtime import Engine
from smartscope.exceptions import InvalidValue
from smartscope.models.ao.data import DIVERSITY_RAD, bead_centres_px, bead_crops, center_windows

__all__ = ["INPUT_CHANNELS", "LearnedZernikeEstimator"]

INPUT_CHANNELS = ["defocus_plus"]


def biased(correction_rad: np.ndarray) -> np.ndarray:
    """The mirror command of an estimator image: the correction plus ``+δ·Z4`` (Noll 1…≥11)."""
    c = np.zeros(max(11, correction_rad.size))
    c[: correction_rad.size] = correction_rad
    c[3] += DIVERSITY_RAD
    return c


class LearnedZernikeEstimator:
    """Runs a Zernike bundle (see the module doc)."""

    def __init__(self, bundle: str | Path, backend: str = "auto") -> None:
        self.engine = Engine.open(bundle, backend)  # type: ignore[arg-type]
        have = list(self.engine.manifest.inputs[0].channels)
        if have != INPUT_CHANNELS:
            self.engine.close()
            raise InvalidValue(
                f"{bundle}: aberration bundle input channels are {have}, this estimator feeds "
                f"{INPUT_CHANNELS}; retrain it with this version (smartscope train zernike)"
            )
        self.modes = tuple(int(c[1:]) for c in self.engine.manifest.outputs[0].channels)

    def estimate(self, image: np.ndarray) -> np.ndarray:
        """Noll 1…11 amplitudes (rad RMS) of the wavefront before the bias, from one image
        taken behind ``+δ·Z4``: the median over the beads found."""
        centres = bead_centres_px(image)
        if not centres:
            raise ValueError("LearnedZernikeEstimator: no beads found in the image")
        x = center_windows(bead_crops([image], centres)[:, 0])[:, None]
        out = self.engine.backend.run(x)
        z = np.asarray(next(iter(out.values())))[:, :, 0, 0]
        a = np.zeros(max(11, max(self.modes)))
        for k, j in enumerate(self.modes):
            a[j - 1] = float(np.median(z[:, k]))
        return a

    def correct(
        self,
        measure: Callable[[np.ndarray], np.ndarray],
        start_rad: np.ndarray | None = None,
        steps: int = 3,
    ) -> np.ndarray:
        """``steps`` estimate-and-correct steps from ``start`` (one image each); returns the
        correction."""
        c = np.zeros(11) if start_rad is None else np.asarray(start_rad, float).copy()
        for _ in range(steps):
            c = c - self.estimate(measure(biased(c)))[: c.size]
        return c

    def close(self) -> None:
        self.engine.close()
