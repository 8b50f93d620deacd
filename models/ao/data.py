"""Training data for the learned aberration estimator: phase-diversity bead crops.

Input: crops of isolated beads in three images taken with the mirror at the current
correction plus ``0``, ``+δ·Z4`` and ``−δ·Z4`` (δ = ``DIVERSITY_RAD`` of defocus; the sign of
the defocus splits the even-mode ambiguity of a single in-focus image). Each 32×32 crop
triple is offset-corrected and divided by the in-focus crop's photon sum (× ``CROP_PX``), so
the network sees shape, not brightness. Targets: amplitudes of Noll modes 4…11 (rad RMS) of
the wavefront before the diversity. Simulated on the virtual microscope (``beads``
scenario, random aberrations of RMS uniform in 0–``max_rms_rad``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from smartscope.simulators.microscope import VirtualMicroscope

__all__ = [
    "CROP_PX",
    "DIVERSITY_RAD",
    "MODES",
    "bead_centres_px",
    "bead_crops",
    "diversity_inputs",
    "simulate_set",
]

MODES = (4, 5, 6, 7, 8, 9, 10, 11)
DIVERSITY_RAD = 1.0
CROP_PX = 32
OFFSET_ADU = 100.0


def bead_centres_px(image: np.ndarray, n_max: int = 64, min_sep_px: int = 16) -> list[tuple[int, int]]:
    """Bead positions (row, col) from the in-focus image: local maxima, brightest first."""
    sm = ndi.gaussian_filter(image.astype(np.float32), 2.0)
    peaks = (sm == ndi.maximum_filter(sm, size=min_sep_px)) & (sm > np.median(sm) + 5 * sm.std() * 0.2)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-sm[ys, xs])
    return [(int(ys[i]), int(xs[i])) for i in order[:n_max]]


def bead_crops(images: Sequence[np.ndarray], centres: Sequence[tuple[int, int]]) -> np.ndarray:
    """(n_beads, len(images), CROP_PX, CROP_PX) normalised crops around ``centres``."""
    h = CROP_PX // 2
    padded = [np.pad(im.astype(np.float32) - OFFSET_ADU, h, mode="edge") for im in images]
    out = np.empty((len(centres), len(images), CROP_PX, CROP_PX), np.float32)
    for k, (y, x) in enumerate(centres):
        for c, p in enumerate(padded):
            out[k, c] = p[y : y + CROP_PX, x : x + CROP_PX]
    bg = np.median(out[:, :, :4, :], axis=(2, 3), keepdims=True)
    out -= bg
    total = np.clip(out[:, :1].sum(axis=(2, 3), keepdims=True), 1.0, None)
    return out / total * CROP_PX


def diversity_inputs(
    measure: Callable[[np.ndarray], np.ndarray], correction_rad: np.ndarray
) -> list[np.ndarray]:
    """The three images: correction, correction + δ·Z4, correction − δ·Z4."""
    imgs = []
    for d in (0.0, DIVERSITY_RAD, -DIVERSITY_RAD):
        c = np.zeros(max(11, correction_rad.size))
        c[: correction_rad.size] = correction_rad
        c[3] += d
        imgs.append(measure(c))
    return imgs


def simulate_set(
    n_aberrations: int, seed: int, max_rms_rad: float = 1.8, sensor_px: int = 128, exposure_ms: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, 3, 32, 32) and targets (N, 8) from the virtual microscope's beads scenario."""
    rng = np.random.default_rng(seed)
    vm = VirtualMicroscope("beads", seed=seed, sensor_px=sensor_px)
    vm.set_exposure_ms(exposure_ms)
    assert vm.smlm is not None
    em = vm.smlm.emitters
    a_nm = vm.pixel_size_um * 1000
    centres = [
        (round(float(y) / a_nm - 0.5), round(float(x) / a_nm - 0.5))
        for y, x in zip(em.y_nm, em.x_nm, strict=True)
    ]
    xs, ys = [], []
    for _ in range(n_aberrations):
        a = np.zeros(11)
        idx = np.asarray(MODES) - 1
        a[idx] = rng.normal(size=idx.size)
        a *= rng.uniform(0.0, max_rms_rad) / max(float(np.sqrt((a[idx] ** 2).sum())), 1e-9)

        def measure(c: np.ndarray, a: np.ndarray = a) -> np.ndarray:
            vm.set_mirror(a + c)
            return vm.render_frame()[0]

        imgs = diversity_inputs(measure, np.zeros(11))
        xs.append(bead_crops(imgs, centres))
        ys.append(np.repeat(a[idx][None], len(centres), axis=0))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)
