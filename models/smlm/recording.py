"""What a user's SMLM recording looks like: the ranges a network trained for it should cover.

:func:`recording_stats` localizes a sample of the recording's frames with the classical fit
(the user's calibrated PSF and camera) and summarises photons per localization, background
per pixel and localizations per µm² per frame as percentiles (:class:`RecordingStats`).
``smartscope train smlm --like STACK`` draws its training data from
:meth:`RecordingStats.training_ranges` (widened: the classical fit misses dim and crowded
emitters) and chooses its detection threshold on data drawn from
:meth:`RecordingStats.validation_ranges` (the recording's own central ranges). The file is
identified by name and sha256, never by its path (bundles travel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartscope.exceptions import InvalidValue
from smartscope.models.smlm.localize_classical import CameraModel, ClassicalConfig, ClassicalLocalizer
from smartscope.simulators.psf_models import PSFModel, file_sha256

__all__ = ["RecordingStats", "recording_stats"]

Range = tuple[float, float]


@dataclass(frozen=True)
class RecordingStats:
    """Percentiles (10, 50, 90) of a recording's localizations, and where they came from.

    Attributes
    ----------
    file, sha256 : the recording's file name (no folder) and content hash.
    frames_total, frames_sampled : frames in the file, frames localized for these numbers.
    localizations : localizations found in the sampled frames.
    photons, bg, density : (p10, p50, p90) of photons per localization, background
        photons per pixel, localizations per µm² per frame.
    """

    file: str
    sha256: str
    frames_total: int
    frames_sampled: int
    localizations: int
    photons: tuple[float, float, float]
    bg: tuple[float, float, float]
    density: tuple[float, float, float]

    def training_ranges(self) -> dict[str, Range]:
        """Photons, background and density ranges for training data: the recording's 10–90 %
        ranges widened (photons ×½…×2, background ÷1.5…×1.5, density ÷2…×2.5: the classical
        fit misses dim and crowded emitters, so the real ones reach further)."""
        p, b, d = self.photons, self.bg, self.density
        return {
            "photons": (max(100.0, p[0] / 2), max(p[2] * 2, 400.0)),
            "bg_photons": (max(0.5, b[0] / 1.5), max(b[2] * 1.5, 2.0)),
            "density_per_um2": (max(0.01, d[0] / 2), min(max(d[2] * 2.5, 0.1), 8.0)),
        }

    def validation_ranges(self) -> dict[str, Range]:
        """Ranges of data rendered like the recording (threshold choice, held-out scores)."""
        p, b, d = self.photons, self.bg, self.density
        return {
            "photons": (max(100.0, p[0]), max(p[2], 200.0)),
            # a background fitted among crowded emitters takes in some of their light
            "bg_photons": (max(0.5, b[0] / 1.25), max(b[2], 1.0)),
            "density_per_um2": (max(0.01, d[0]), min(max(d[2] * 1.5, 0.05), 8.0)),
        }

    def calibration_fields(self) -> dict[str, float]:
        """The numbers as a bundle's ``calibration`` entries (``like_*``)."""
        out = {"like_frames_sampled": float(self.frames_sampled)}
        out["like_localizations"] = float(self.localizations)
        for name, q in (("photons", self.photons), ("bg", self.bg), ("density_per_um2", self.density)):
            for tag, v in zip(("p10", "p50", "p90"), q, strict=True):
                out[f"like_{name}_{tag}"] = float(v)
        return out

    def describe(self) -> str:
        """One line for provenance: file, hash and the measured ranges."""

        def q(v: tuple[float, float, float]) -> str:
            return "/".join(f"{x:.3g}" for x in v)

        return (
            f"like recording {self.file} sha256={self.sha256} ({self.frames_sampled} of {self.frames_total} "
            f"frames, {self.localizations} localizations; p10/p50/p90 photons {q(self.photons)}, "
            f"bg {q(self.bg)} /px, density {q(self.density)} /µm²)"
        )


def recording_stats(
    path: Path,
    frames: np.ndarray,
    camera: CameraModel,
    pixel_nm: float,
    psf: PSFModel | None = None,
    max_frames: int = 200,
) -> RecordingStats:
    """Localize up to ``max_frames`` frames spread over ``frames`` (T, Y, X ADU, the recording
    read from ``path``) and summarise them. ``psf``: the calibrated PSF (None: a Gaussian)."""
    data = np.asarray(frames)
    if data.ndim != 3 or data.shape[0] < 1:
        raise InvalidValue(f"--like {Path(path).name}: expected (T, Y, X) frames, got shape {data.shape}")
    picks = np.unique(np.linspace(0, data.shape[0] - 1, min(max_frames, data.shape[0])).round().astype(int))
    loc = ClassicalLocalizer(ClassicalConfig(pixel_nm=pixel_nm), camera, psf=psf)
    area_um2 = data.shape[1] * data.shape[2] * (pixel_nm / 1000.0) ** 2
    photons, bgs, dens = [], [], []
    for t in picks.tolist():
        tab = loc.localize(data[t], t)
        dens.append(len(tab) / area_um2)
        if len(tab):
            photons.append(tab.photons)
            bgs.append(float(np.median(tab.bg)))
        else:  # no emitter: the frame's own level is its background
            bgs.append(max(float(np.percentile(camera.to_electrons(data[t]), 30)), 0.0))
    ph = np.concatenate(photons) if photons else np.zeros(0)
    if ph.size < 10:
        raise InvalidValue(
            f"--like {Path(path).name}: only {ph.size} localizations in {picks.size} frames; "
            "check the camera calibration and pixel size"
        )

    def pct(v: np.ndarray) -> tuple[float, float, float]:
        a, b, c = np.percentile(v, [10, 50, 90])
        return float(a), float(b), float(c)

    return RecordingStats(
        file=Path(path).name,
        sha256=file_sha256(path),
        frames_total=int(data.shape[0]),
        frames_sampled=int(picks.size),
        localizations=int(ph.size),
        photons=pct(ph),
        bg=pct(np.asarray(bgs)),
        density=pct(np.asarray(dens)),
    )
