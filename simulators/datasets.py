"""Training/evaluation data straight from the simulator (no Micro-Manager needed)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .camera import CameraConfig, expected_electrons, expose
from .scene import CellScene, SMLMScene

__all__ = ["denoise_pairs", "smlm_frames", "stain_pairs"]

Channel = Literal["nuclei", "mitochondria", "membrane", "mixed"]


def _field_seed(seed: int, i: int) -> int:
    return int(seed) * 1_000_003 + int(i) * 7_919 + 17


def denoise_pairs(
    n: int,
    shape: tuple[int, int] = (128, 128),
    seed: int = 0,
    photons: float = 20.0,
    channel: Channel = "mixed",
    pixel_size_um: float = 0.1,
    camera: CameraConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Low-light noisy / noise-free pairs of the same cell field: ``(noisy, clean)``.

    Both float32 arrays of shape ``[n, Y, X]`` in **photoelectrons** (e⁻):

    - ``clean`` = expected photoelectrons per pixel, QE·photons + dark (the noise-free
      signal the camera would record on average);
    - ``noisy`` = a simulated sCMOS frame (Poisson shot noise, per-pixel read noise,
      offset and gain maps, 16-bit quantisation) converted back to electrons with the
      nominal calibration: ``(ADU + ½ − offset_adu) / gain_adu_per_e`` (the ½ undoes
      the ADC's floor). Its mean matches ``clean`` up to the per-pixel map spread.

    ``photons`` sets the light level: the brightest structure (99.9th percentile of the
    blurred density) receives about ``photons`` photons per pixel; background
    (autofluorescence) is 2 % of that. Sample ``i`` is its own field of view (cell
    geometry seeded by ``(seed, i)``), so callers can split train/validation by index.
    ``channel``: one fluorescence channel, or ``"mixed"`` cycling nuclei → mitochondria →
    membrane by index. A typical normalisation for networks: divide both by ``photons``.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if photons <= 0:
        raise ValueError(f"photons={photons} must be > 0")
    cam = camera or CameraConfig()
    chans = ["nuclei", "mitochondria", "membrane"]
    noisy = np.empty((n, *shape), np.float32)
    clean = np.empty((n, *shape), np.float32)
    for i in range(n):
        fs = _field_seed(seed, i)
        ch = chans[i % 3] if channel == "mixed" else channel
        scene = CellScene(shape, pixel_size_um, seed=fs)
        sig = scene.blurred(ch)
        peak = float(np.percentile(sig, 99.9)) or 1.0
        ph = (sig / peak * photons + 0.02 * photons).astype(np.float32)
        rng = np.random.default_rng(fs + 1)
        frame = expose(cam, ph, rng)
        clean[i] = expected_electrons(cam, ph)
        noisy[i] = (frame.astype(np.float32) + 0.5 - cam.offset_adu) / cam.gain_adu_per_e
    return noisy, clean


def stain_pairs(
    n: int,
    shape: tuple[int, int] = (128, 128),
    seed: int = 0,
    mode: Literal["phase", "brightfield"] = "phase",
    pixel_size_um: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Label-free input and fluorescence targets of the same field for virtual staining.

    Returns ``(label_free [n, Y, X], fluorescence [n, 3, Y, X])``, float32, noise-free:
    label-free intensity with background 1; fluorescence = density ⊗ emission PSF for
    channels (nuclei, mitochondria, membrane), each in units of the channel density
    (≈ 0..1). Sample ``i`` is its own field of view.
    """
    lf = np.empty((n, *shape), np.float32)
    fl = np.empty((n, 3, *shape), np.float32)
    for i in range(n):
        scene = CellScene(shape, pixel_size_um, seed=_field_seed(seed, i))
        lf[i] = scene.label_free(mode)
        for c, ch in enumerate(("nuclei", "mitochondria", "membrane")):
            fl[i, c] = scene.blurred(ch)
    return lf, fl


def smlm_frames(
    n_frames: int,
    shape: tuple[int, int] = (64, 64),
    seed: int = 0,
    activation_mw: float = 1.0,
    **scene_kwargs: object,
) -> tuple[np.ndarray, dict[str, np.ndarray], SMLMScene]:
    """``n_frames`` SMLM frames (uint16 [T, Y, X]) and the concatenated ground truth."""
    scene = SMLMScene(shape, seed=seed, **scene_kwargs)  # type: ignore[arg-type]
    frames = np.empty((n_frames, *scene.shape), np.uint16)
    tables = []
    for t in range(n_frames):
        frames[t], gt = scene.step(activation_mw)
        tables.append(gt)
    gt_all = {k: np.concatenate([g[k] for g in tables]) for k in tables[0]}
    return frames, gt_all, scene
