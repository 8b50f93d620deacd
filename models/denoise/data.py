"""Training data for denoising: simulator fields or the user's TIFF files, in camera ADU.

Every field of view (FOV) is a float32 stack ``(T, H, W)`` in ADU; held-out validation
always takes whole FOVs (never interleaved frames of one recording). A single recording
falls back to a spatial split: its right-most strip becomes the held-out field.

``--data DIR`` layouts:

- N2V: ``DIR/*.tif`` - one noisy stack (or image) per FOV;
- CARE: ``DIR/low/*.tif`` and ``DIR/high/*.tif`` with matching file names; ``high`` may be
  one image per FOV for a ``low`` stack of the same FOV.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from smartscope.exceptions import InvalidValue

__all__ = ["SCENARIOS", "DenoiseData", "from_tiff_dir", "simulate", "simulated_field", "split_heldout"]

SCENARIOS: dict[str, tuple[float, ...]] = {
    "lowlight": (5.0, 10.0, 20.0, 40.0, 80.0),
    "verylowlight": (2.0, 4.0, 8.0),
    "fixed20": (20.0,),
}
"""Simulator scenarios: the light levels (peak photons/pixel of the brightest structure,
reference sCMOS) that fields are spread over, field ``i`` at level ``i % len(levels)``."""


@dataclass
class DenoiseData:
    noisy: list[np.ndarray]  # per FOV (T, H, W) float32 ADU
    clean: list[np.ndarray] | None  # per FOV, same shape: CARE target or ground truth
    names: list[str]
    description: str
    pixel_size_um: float | None = None
    has_ground_truth: bool = False  # clean is noise-free truth (simulator), not just high-SNR
    notes: list[str] = field(default_factory=list)

    def subset(self, idx: list[int]) -> DenoiseData:
        return DenoiseData(
            noisy=[self.noisy[i] for i in idx],
            clean=None if self.clean is None else [self.clean[i] for i in idx],
            names=[self.names[i] for i in idx],
            description=self.description,
            pixel_size_um=self.pixel_size_um,
            has_ground_truth=self.has_ground_truth,
            notes=list(self.notes),
        )


def simulate(
    scenario: str,
    *,
    n_fields: int,
    field_px: int,
    seed: int,
    photons: float | None = None,
    pixel_size_um: float = 0.1,
    frames: int = 1,
    max_speed_px: float = 1.0,
) -> DenoiseData:
    """Low-light fields from ``smartscope.simulators.datasets.denoise_pairs``, as sCMOS ADU.

    ``frames > 1``: each field is a live recording of that many frames of a drifting
    sample (``denoise_sequences``, up to ``max_speed_px`` px per frame), named
    ``simseq-...``, for networks that take several frames.

    Fields are spread over the scenario's light levels (or all at ``photons``); level ``k``
    is one ``denoise_pairs`` call with seed ``seed * 100 + k``, so every field is a distinct
    field of view. The simulator returns electrons; ``adu = e * gain + offset - 0.5``
    (reference sCMOS calibration) puts data and truth in the units live frames arrive in.
    """
    from smartscope.simulators.camera import CameraConfig
    from smartscope.simulators.datasets import denoise_pairs, denoise_sequences

    if frames < 1:
        raise InvalidValue(f"frames={frames} must be >= 1")
    if scenario not in SCENARIOS:
        raise InvalidValue(f"unknown scenario {scenario!r}; choose from {sorted(SCENARIOS)}")
    levels = (float(photons),) if photons is not None else SCENARIOS[scenario]
    cam = CameraConfig()

    def to_adu(e: np.ndarray) -> np.ndarray:
        return (e * cam.gain_adu_per_e + cam.offset_adu - 0.5).astype(np.float32)

    noisy: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    names: list[str] = []
    calls = []
    for k, ph in enumerate(levels):
        n = len(range(k, n_fields, len(levels)))
        if n == 0:
            continue
        s = seed * 100 + k
        if frames > 1:
            seq_noisy, seq_clean = denoise_sequences(
                n,
                (field_px, field_px),
                seed=s,
                photons=ph,
                n_frames=frames,
                max_speed_px=max_speed_px,
                pixel_size_um=pixel_size_um,
            )
            noisy += [to_adu(a) for a in seq_noisy]
            clean += [to_adu(a) for a in seq_clean]
            names += [f"simseq-p{ph:g}-s{s}-{j}" for j in range(n)]
            calls.append(
                f"denoise_sequences(n={n}, seed={s}, photons={ph:g}, n_frames={frames}, "
                f"max_speed_px={max_speed_px:g})"
            )
            continue
        noisy_e, clean_e = denoise_pairs(
            n, (field_px, field_px), seed=s, photons=ph, pixel_size_um=pixel_size_um
        )
        noisy += [to_adu(a)[None] for a in noisy_e]
        clean += [to_adu(a)[None] for a in clean_e]
        names += [f"sim-p{ph:g}-s{s}-{j}" for j in range(n)]
        calls.append(f"denoise_pairs(n={n}, seed={s}, photons={ph:g})")
    return DenoiseData(
        noisy=noisy,
        clean=clean,
        names=names,
        description=(
            f"simulator {'; '.join(calls)}, shape=({field_px}, {field_px}), "
            f"channel='mixed', pixel_size_um={pixel_size_um} "
            f"on the reference sCMOS (gain {cam.gain_adu_per_e} ADU/e-, offset "
            f"{cam.offset_adu} ADU); scenario {scenario!r}"
        ),
        pixel_size_um=pixel_size_um,
        has_ground_truth=True,
    )


def _read_stack(path: Path) -> np.ndarray:
    import tifffile

    try:
        arr = np.asarray(tifffile.imread(path))
    except Exception as exc:
        raise InvalidValue(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc})") from exc
    arr = np.squeeze(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InvalidValue(
            f"{path}: expected a 2-D image or a (T, Y, X) stack, got shape {arr.shape} "
            "(multi-channel stacks are not supported by the denoise trainer)"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InvalidValue(f"{path}: pixel type {arr.dtype} is not real-valued")
    return arr.astype(np.float32)


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))


def from_tiff_dir(path: str | Path, method: Literal["n2v", "care"]) -> DenoiseData:
    root = Path(path)
    if not root.is_dir():
        raise InvalidValue(f"--data {root}: not a folder")
    if method == "n2v":
        files = _tiffs(root)
        if not files:
            raise InvalidValue(f"--data {root}: no .tif files (N2V needs noisy stacks)")
        return DenoiseData(
            noisy=[_read_stack(f) for f in files],
            clean=None,
            names=[f.name for f in files],
            description=f"noisy TIFFs in {root} ({len(files)} files)",
        )
    low_dir, high_dir = root / "low", root / "high"
    for d in (low_dir, high_dir):
        if not d.is_dir():
            raise InvalidValue(f"--data {root}: CARE needs {d.name}/ with TIFFs (missing {d})")
    lows = _tiffs(low_dir)
    if not lows:
        raise InvalidValue(f"--data {root}: no .tif files in {low_dir}")
    noisy, clean = [], []
    for f in lows:
        h = high_dir / f.name
        if not h.is_file():
            raise InvalidValue(f"{f}: no matching high-SNR file {h}")
        lo, hi = _read_stack(f), _read_stack(h)
        if hi.shape[0] == 1 and lo.shape[0] > 1:
            hi = np.repeat(hi, lo.shape[0], axis=0)
        if lo.shape != hi.shape:
            raise InvalidValue(f"{f} has shape {lo.shape} but {h} has {hi.shape}")
        noisy.append(lo)
        clean.append(hi)
    return DenoiseData(
        noisy=noisy,
        clean=clean,
        names=[f.name for f in lows],
        description=f"paired TIFFs in {root}/low and {root}/high ({len(lows)} fields)",
    )


def split_heldout(
    data: DenoiseData, val_fraction: float, seed: int, min_px: int
) -> tuple[DenoiseData, DenoiseData]:
    """(train, held-out) by whole FOVs; one FOV only -> its right-most strip is held out."""
    from smartscope.models.train_common import split_fovs

    if len(data.names) >= 2:
        tr, va = split_fovs(len(data.names), val_fraction, seed)
        return data.subset(tr), data.subset(va)
    stack = data.noisy[0]
    w = stack.shape[-1]
    cut = w - max(min_px, round(w * val_fraction))
    if cut < min_px:
        raise InvalidValue(
            f"{data.names[0]}: one field of width {w} px cannot be split into train and "
            f"held-out strips of >= {min_px} px; provide more fields of view"
        )
    name = data.names[0]

    def part(sl: slice, tag: str) -> DenoiseData:
        return DenoiseData(
            noisy=[stack[..., sl].copy()],
            clean=None if data.clean is None else [data.clean[0][..., sl].copy()],
            names=[f"{name}[x {tag}]"],
            description=data.description,
            pixel_size_um=data.pixel_size_um,
            has_ground_truth=data.has_ground_truth,
            notes=[*data.notes, f"single field: spatial split at x={cut}"],
        )

    return part(slice(0, cut), f"0:{cut}"), part(slice(cut, w), f"{cut}:{w}")


def simulated_field(name: str, data: str) -> np.ndarray | None:
    """Re-create the simulated field ``name`` (``sim-p{photons}-s{seed}-{j}``) in ADU.

    ``data`` is the bundle's ``provenance.data`` string written by :func:`simulate`, which
    names every ``denoise_pairs`` call and the field shape; the field is the ``j``-th noisy
    frame of the call with that seed, (1, H, W) float32 ADU. None when ``name`` is not a
    simulated field or ``data`` does not describe the call (the caller asks for a file).
    """
    from smartscope.simulators.camera import CameraConfig
    from smartscope.simulators.datasets import denoise_pairs

    m = re.fullmatch(r"sim-p([0-9.]+)-s(\d+)-(\d+)", name)
    shape = re.search(r"shape=\((\d+), (\d+)\)", data)
    pix = re.search(r"pixel_size_um=([0-9.]+)", data)
    if m is None or shape is None or pix is None:
        return None
    photons, seed, j = float(m.group(1)), int(m.group(2)), int(m.group(3))
    call = re.search(rf"denoise_pairs\(n=(\d+), seed={seed}, photons={photons:g}\)", data)
    if call is None or j >= int(call.group(1)):
        return None
    noisy_e, _ = denoise_pairs(
        int(call.group(1)),
        (int(shape.group(1)), int(shape.group(2))),
        seed=seed,
        photons=photons,
        pixel_size_um=float(pix.group(1)),
    )
    cam = CameraConfig()
    return (noisy_e[j] * cam.gain_adu_per_e + cam.offset_adu - 0.5).astype(np.float32)[None]
