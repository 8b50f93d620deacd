"""Test and bench harnesses that drive the virtual microscope through MMCore directly.

:class:`AberratedMirror` simulates a sample aberration for sensorless AO: the virtual
microscope has one wavefront, the deformable mirror's, so a sample aberration ``a`` and a
correction ``c`` are written to the mirror together as ``a + c``; the algorithm under test
only ever sees the images and its own ``c``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["AberratedMirror"]


class AberratedMirror:
    """MMCore harness: a sample aberration ``a`` plus the correction on the mirror, then a snap."""

    def __init__(
        self, core: Any, aberration_rad: Sequence[float] | np.ndarray, mirror: str = "Mirror"
    ) -> None:
        self.core = core
        self.mirror = mirror
        self.aberration = np.asarray(aberration_rad, float)
        self.images = 0

    def total(self, correction_rad: np.ndarray) -> np.ndarray:
        n = max(self.aberration.size, np.asarray(correction_rad).size)
        tot = np.zeros(n)
        tot[: self.aberration.size] += self.aberration
        tot[: np.asarray(correction_rad).size] += correction_rad
        return tot

    def __call__(self, correction_rad: np.ndarray) -> np.ndarray:
        tot = self.total(correction_rad)
        for j, v in enumerate(tot, start=1):
            self.core.setProperty(self.mirror, f"Z{j}", float(v))
        self.core.snapImage()
        self.images += 1
        return np.asarray(self.core.getImage())
