"""Paired training data for virtual staining: simulator fields or the user's TIFF files.

Every field of view (FOV) holds one or more time points of three aligned arrays:

- ``label_free`` ``(T, H, W)``: the transmitted-light camera frames (ADU);
- ``given`` ``(T, C, H, W)``: the fluorescence frames as acquired (ADU) — what channel
  completion is given for the channels it does not predict;
- ``target`` ``(T, C, H, W)``: what the network should predict. On the simulator it is the
  noise-free, in-focus fluorescence; from disk it is the acquired fluorescence itself;
- ``planes`` (optional) ``(T, P, H, W)``: the label-free frame again at each focus offset of
  ``planes_um`` (a defocus pair), for generators that take several focal planes
  (simulator only for now).

Held-out data are always whole FOVs (:func:`smartscope.models.train_common.split_fovs`).

``--data DIR`` layout: ``DIR/label_free/*.tif`` and one folder per fluorescence channel,
``DIR/<channel>/*.tif``, with matching file names (one file per FOV; a file may be a
``(T, H, W)`` stack of time points). The channel folders are named on the command line
(``--channels nuclei,mitochondria``), which fixes their order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from smartscope.exceptions import InvalidValue

__all__ = ["StainData", "from_tiff_dir", "simulate"]


@dataclass
class StainData:
    label_free: list[np.ndarray]  # per FOV (T, H, W) float32 ADU
    given: list[np.ndarray]  # per FOV (T, C, H, W) float32 ADU
    target: list[np.ndarray]  # per FOV (T, C, H, W) float32
    channels: list[str]
    names: list[str]
    description: str
    pixel_size_um: float | None = None
    has_ground_truth: bool = False
    planes: list[np.ndarray] | None = None  # per FOV (T, P, H, W) float32 ADU
    planes_um: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.label_free) == len(self.given) == len(self.target) == n) or n == 0:
            raise ValueError("label_free, given, target and names must be non-empty and equally long")
        for name, lf, g, t in zip(self.names, self.label_free, self.given, self.target, strict=True):
            want = (lf.shape[0], len(self.channels), *lf.shape[1:])
            if lf.ndim != 3 or g.shape != want or t.shape != want:
                raise InvalidValue(
                    f"FOV {name!r}: label_free {lf.shape}, given {g.shape} and target {t.shape} "
                    f"must be (T, H, W) and (T, {len(self.channels)}, H, W) of the same field"
                )
        if (self.planes is None) != (not self.planes_um):
            raise ValueError("planes and planes_um go together")
        for name, lf, pl in zip(self.names, self.label_free, self.planes or [], strict=False):
            if pl.shape != (lf.shape[0], len(self.planes_um), *lf.shape[1:]):
                raise InvalidValue(f"FOV {name!r}: planes {pl.shape} do not match label_free {lf.shape}")

    def label_free_stack(self, i: int) -> np.ndarray:
        """FOV ``i``'s label-free frames with their planes: ``(T, 1 + P, H, W)``."""
        lf = self.label_free[i][:, None]
        return lf if self.planes is None else np.concatenate([lf, self.planes[i]], axis=1)

    def subset(self, idx: list[int]) -> StainData:
        return StainData(
            label_free=[self.label_free[i] for i in idx],
            given=[self.given[i] for i in idx],
            target=[self.target[i] for i in idx],
            channels=list(self.channels),
            names=[self.names[i] for i in idx],
            description=self.description,
            pixel_size_um=self.pixel_size_um,
            has_ground_truth=self.has_ground_truth,
            planes=None if self.planes is None else [self.planes[i] for i in idx],
            planes_um=self.planes_um,
        )


def simulate(
    n_fields: int,
    field_px: int,
    seed: int,
    *,
    mode: Literal["phase", "brightfield"] = "phase",
    defocus_um: float = 0.0,
    lamp_mw: float = 1.0,
    planes_um: tuple[float, ...] = (),
) -> StainData:
    """Fields from :func:`smartscope.simulators.datasets.stain_fields` (one time point each),
    with the label-free frame also at each focus offset of ``planes_um``."""
    from smartscope.simulators.datasets import stain_fields

    if mode not in ("phase", "brightfield"):
        raise InvalidValue(f"label-free mode must be 'phase' or 'brightfield', got {mode!r}")
    f = stain_fields(
        n_fields,
        field_px,
        seed,
        mode=mode,
        defocus_um=defocus_um,
        lamp_mw=lamp_mw,
        planes_um=planes_um,
    )
    lfp = f.label_free_planes_adu
    return StainData(
        label_free=[f.label_free_adu[i : i + 1] for i in range(n_fields)],
        given=[f.fluorescence_adu[i : i + 1] for i in range(n_fields)],
        target=[f.target[i : i + 1] for i in range(n_fields)],
        channels=list(f.channels),
        names=[f"sim-{seed}-{i:03d}" for i in range(n_fields)],
        description=f.description,
        pixel_size_um=f.pixel_size_um,
        has_ground_truth=True,
        planes=None if lfp is None else [lfp[i : i + 1] for i in range(n_fields)],
        planes_um=tuple(planes_um),
    )


def _read(path: Path) -> np.ndarray:
    import tifffile

    try:
        arr = np.asarray(tifffile.imread(path), dtype=np.float32)
    except Exception as exc:  # tifffile raises several types for a damaged file
        raise InvalidValue(f"{path}: cannot read as TIFF ({exc})") from exc
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InvalidValue(f"{path}: expected a (Y, X) image or (T, Y, X) stack, got shape {arr.shape}")
    return arr


def from_tiff_dir(root: Path, channels: list[str]) -> StainData:
    """Pairs from ``root/label_free/*.tif`` and ``root/<channel>/*.tif`` (same file names)."""
    root = Path(root)
    if not channels:
        raise InvalidValue("--channels: name at least one fluorescence channel folder")
    lf_dir = root / "label_free"
    files = sorted(lf_dir.glob("*.tif*"))
    if not files:
        raise InvalidValue(f"{lf_dir}: no .tif files (expected one label-free file per field of view)")
    lfs, stacks, names = [], [], []
    for f in files:
        lf = _read(f)
        chans = []
        for ch in channels:
            p = root / ch / f.name
            if not p.is_file():
                raise InvalidValue(f"{p}: missing; every label-free file needs its {ch!r} partner")
            a = _read(p)
            if a.shape != lf.shape:
                raise InvalidValue(f"{p}: shape {a.shape} differs from {f} {lf.shape}")
            chans.append(a)
        lfs.append(lf)
        stacks.append(np.stack(chans, axis=1))
        names.append(f.stem)
    if len(files) < 2:
        raise InvalidValue(f"{lf_dir}: need at least 2 fields of view to hold one out, found {len(files)}")
    return StainData(
        label_free=lfs,
        given=stacks,
        target=stacks,
        channels=list(channels),
        names=names,
        description=f"{root} (channels {', '.join(channels)})",
    )
