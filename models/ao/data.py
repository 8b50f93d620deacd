"""Training data and inputs of the learned aberration estimator: bead crops behind a known
defocus bias.

The estimator sees one image taken with the mirror at the current correction plus
``+δ·Z4`` (δ = ``DIVERSITY_RAD`` of defocus: the known bias splits the sign ambiguity of
the even modes that an in-focus image leaves) and returns the Noll 4…11 amplitudes (rad
RMS) of the wavefront before the bias; applied iteratively (:mod:`.stage`), one image per
step. Per bead: a ``CROP_PX``² crop around its position, offset and background removed
(:func:`bead_crops`); then a ``INPUT_PX``² window centred on the crop's intensity centroid
and divided by its photon sum (× ``INPUT_PX``), so the network sees shape, not brightness
or position (:func:`center_windows`; training draws a ±1 px jitter).

Simulated on the virtual microscope (``beads`` scenario, random aberrations of RMS
uniform in 0–``max_rms_rad``): :func:`simulate_set` renders three images per aberration
(0, +δ·Z4, −δ·Z4) and keeps ``CROP_PX`` crops at the true bead positions.
:func:`single_image_set` turns them into estimator samples: the +δ crop with the
aberration ``a``, and the −δ crop turned by 180° with ``−a`` (a PSF is the 180° turn of the
PSF of the negated wavefront, so ``a − δ·Z4`` turned is ``−a + δ·Z4``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from smartscope.engines.networks.ao_outputs import MODES

__all__ = [
    "CROP_PX",
    "DIVERSITY_RAD",
    "INPUT_PX",
    "bead_centres_px",
    "bead_crops",
    "center_windows",
    "random_aberration",
    "simulate_set",
    "single_image_set",
    "valid_samples",
]

DIVERSITY_RAD = 1.0
CROP_PX = 32
INPUT_PX = 24
OFFSET_ADU = 100.0


def bead_centres_px(image: np.ndarray, n_max: int = 64, min_sep_px: int = 16) -> list[tuple[int, int]]:
    """Bead positions (row, col): local maxima of the smoothed image, brightest first."""
    sm = ndi.gaussian_filter(image.astype(np.float32), 2.0)
    peaks = (sm == ndi.maximum_filter(sm, size=min_sep_px)) & (sm > np.median(sm) + 5 * sm.std() * 0.2)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-sm[ys, xs])
    return [(int(ys[i]), int(xs[i])) for i in order[:n_max]]


def bead_crops(images: Sequence[np.ndarray], centres: Sequence[tuple[int, int]]) -> np.ndarray:
    """(n_beads, len(images), CROP_PX, CROP_PX) crops around ``centres``: offset and
    background (median of the top rows) removed, divided by the first image's photon sum
    (× ``CROP_PX``)."""
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


def center_windows(crops: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """(N, INPUT_PX, INPUT_PX) windows of (N, CROP_PX, CROP_PX) crops, centred on each
    crop's intensity centroid (positive part) and divided by the window's sum
    (× ``INPUT_PX``); ``rng`` adds a random ±1 px shift per window (training)."""
    n = len(crops)
    pos = np.clip(crops.astype(np.float32), 0.0, None)
    mass = np.clip(pos.sum(axis=(1, 2)), 1e-6, None)
    grid = np.arange(CROP_PX, dtype=np.float32)
    cy = (pos.sum(axis=2) * grid).sum(axis=1) / mass
    cx = (pos.sum(axis=1) * grid).sum(axis=1) / mass
    y0 = np.rint(cy - (INPUT_PX - 1) / 2).astype(int)
    x0 = np.rint(cx - (INPUT_PX - 1) / 2).astype(int)
    if rng is not None:
        y0 += rng.integers(-1, 2, n)
        x0 += rng.integers(-1, 2, n)
    lim = CROP_PX - INPUT_PX
    y0, x0 = np.clip(y0, 0, lim), np.clip(x0, 0, lim)
    out = np.empty((n, INPUT_PX, INPUT_PX), np.float32)
    for k in range(n):
        out[k] = crops[k, y0[k] : y0[k] + INPUT_PX, x0[k] : x0[k] + INPUT_PX]
    total = np.clip(out.sum(axis=(1, 2), keepdims=True), 1e-3, None)
    return out / total * INPUT_PX


def valid_samples(x3: np.ndarray) -> np.ndarray:
    """Which :func:`simulate_set` crops hold a bead in all three images: the in-focus crop
    was normalised by its own photon sum (sum = ``CROP_PX``), the biased ones hold about as
    much light (0.5–2×) and nothing is extreme. Beads bleach during a simulated chunk; their
    later crops are background only (about 2 % of them), which would dominate the loss."""
    s = x3.astype(np.float32).sum(axis=(2, 3))
    m = np.abs(x3.astype(np.float32)).max(axis=(1, 2, 3))
    lo, hi = 0.5 * CROP_PX, 2.0 * CROP_PX
    biased_ok = (s[:, 1] > lo) & (s[:, 1] < hi) & (s[:, 2] > lo) & (s[:, 2] < hi)
    return np.asarray((np.abs(s[:, 0] - CROP_PX) < 0.5) & biased_ok & (m < 10.0))


def single_image_set(x3: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Estimator samples from :func:`simulate_set` crops (N, 3, …) and targets (N, 8): the
    +δ crops with ``y`` and the −δ crops turned by 180° with ``−y`` ((2N, CROP_PX, CROP_PX))."""
    turned = x3[:, 2, ::-1, ::-1]
    return np.concatenate([x3[:, 1], turned]), np.concatenate([y, -y])


def random_aberration(
    seed: int, rms_range_rad: tuple[float, float] = (0.5, 1.5), modes: Sequence[int] = range(4, 12)
) -> np.ndarray:
    """Random Noll amplitudes (j = 1..max(modes)) with total RMS uniform in the range."""
    rng = np.random.default_rng(seed)
    a = np.zeros(max(modes))
    idx = np.asarray(list(modes)) - 1
    a[idx] = rng.normal(size=idx.size)
    a *= rng.uniform(*rms_range_rad) / float(np.sqrt((a[idx] ** 2).sum()))
    return a


def simulate_set(
    n_aberrations: int, seed: int, max_rms_rad: float = 2.0, sensor_px: int = 128, exposure_ms: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, 3, 32, 32) at 0, +δ·Z4, −δ·Z4 and targets (N, 8) from the virtual
    microscope's beads scenario (16 beads per aberration, at their true positions)."""
    from smartscope.simulators.microscope import VirtualMicroscope

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
        imgs = []
        for d in (0.0, DIVERSITY_RAD, -DIVERSITY_RAD):
            c = a.copy()
            c[3] += d
            vm.set_mirror([float(v) for v in c])
            imgs.append(vm.render_frame()[0])
        xs.append(bead_crops(imgs, centres))
        ys.append(np.repeat(a[idx][None], len(centres), axis=0))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)
