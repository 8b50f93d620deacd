"""The learned aberration estimator at run time: three diversity images in, Noll 1…11
amplitudes out (the median over the beads found). It is driven by a ``measure(correction)
-> image`` callable (bench and tests drive an MMCore directly), not by the live loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from smartscope.engines.runtime import Engine
from smartscope.models.ao.data import bead_centres_px, bead_crops, diversity_inputs

__all__ = ["LearnedZernikeEstimator"]


class LearnedZernikeEstimator:
    """Runs a Zernike bundle: three diversity images in, Noll 1..11 amplitudes out."""

    def __init__(self, bundle: str | Path, backend: str = "auto") -> None:
        self.engine = Engine.open(bundle, backend)  # type: ignore[arg-type]
        self.modes = tuple(int(c[1:]) for c in self.engine.manifest.outputs[0].channels)

    def estimate(self, images: Sequence[np.ndarray]) -> np.ndarray:
        centres = bead_centres_px(images[0])
        if not centres:
            raise ValueError("LearnedZernikeEstimator: no beads found in the in-focus image")
        crops = bead_crops(images, centres)
        out = self.engine.backend.run(crops)
        z = np.asarray(next(iter(out.values())))[:, :, 0, 0]
        a = np.zeros(max(11, max(self.modes)))
        for k, j in enumerate(self.modes):
            a[j - 1] = float(np.median(z[:, k]))
        return a

    def correct(
        self, measure: Callable[[np.ndarray], np.ndarray], start_rad: np.ndarray | None = None
    ) -> np.ndarray:
        """One-step correction: 3 images at ``start``, returns start − estimate."""
        start = np.zeros(11) if start_rad is None else np.asarray(start_rad, float)
        return start - self.estimate(diversity_inputs(measure, start))[: start.size]

    def close(self) -> None:
        self.engine.close()
