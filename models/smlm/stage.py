"""SMLM as a pipeline stage: every frame becomes localizations as it arrives.

``StageOutput.rows`` holds the frame's localizations (DESIGN §6 columns); ``values`` holds
``n_localizations``, ``density_per_um2`` (localizations per µm² of the field in that
frame — what the density controller steers on), ``localized_frame`` (the frame the rows
belong to) and ``mean_photons``. The stage accumulates the run's table and a histogram
super-resolution image; every ``render_every`` frames it emits ``images['superres']``.
With ``output_dir`` set, :meth:`SMLMStage.close` writes the table (native and ThunderSTORM
CSV), the Gaussian rendering (TIFF) and a drift estimate there.

Method ``network`` runs a DECODE-class bundle on (t−1, t, t+1): the rows of frame t come
out when frame t+1 arrives (one frame late; ``flush()`` returns the last frame's). Frames
that do not follow each other (the loop skipped some) are replaced by the centre frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartscope.frame import Frame
from smartscope.models.smlm.localize_classical import (
    CameraModel,
    ClassicalConfig,
    ClassicalLocalizer,
)
from smartscope.models.smlm.table import LocTable
from smartscope.pipeline import StageError, StageOutput

__all__ = ["SMLMCameraConfig", "SMLMStage", "SMLMStageConfig", "write_outputs"]


class SMLMCameraConfig(BaseModel):
    """Camera calibration the localizer needs: ``e⁻ = (ADU − offset) / gain / em_gain``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["scmos", "emccd"] = "scmos"
    offset_adu: float = Field(default=100.0, ge=0)
    gain_adu_per_e: float = Field(default=2.0, gt=0, description="conversion gain after EM gain")
    em_gain: float = Field(default=1.0, ge=1)
    read_noise_e: float = Field(default=0.9, ge=0)
    adc_floor: bool = Field(default=True, description="ADU = floor(...): add ½ ADU back")

    def model(self) -> CameraModel:
        emccd = self.kind == "emccd" and self.em_gain > 1
        return CameraModel(
            offset_adu=self.offset_adu - (0.5 if self.adc_floor else 0.0),
            e_per_adu=1.0 / self.gain_adu_per_e,
            em_gain=self.em_gain if emccd else 1.0,
            read_noise_e=self.read_noise_e,
            emccd=emccd,
        )


class SMLMStageConfig(BaseModel):
    """Pipeline-stage config for single-molecule localization (``kind: smlm``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["smlm"] = "smlm"
    name: str = Field(default="smlm", min_length=1)
    method: Literal["classical", "network"] = "classical"
    bundle: Path | None = Field(default=None, description="DECODE-class bundle (method: network)")
    backend: Literal["auto", "tensorrt", "torch", "onnxruntime"] = "auto"
    pixel_size_um: float = Field(default=0.1, gt=0, le=10)
    camera: SMLMCameraConfig = Field(default_factory=SMLMCameraConfig)
    psf_sigma_nm: float = Field(default=100.0, gt=0, description="Gaussian PSF sigma (≈ 0.21 λ/NA)")
    fit_sigma: bool = False
    roi_px: int = Field(default=7, ge=5)
    threshold_sigma: float = Field(default=4.0, gt=0)
    min_prob: float = Field(default=0.99, ge=0, le=1, description="classical: likelihood-ratio prob")
    prob_threshold: float = Field(default=0.5, gt=0, description="network: 3x3 summed probability")
    area_um2: float | None = Field(
        default=None, gt=0, description="area the density refers to (default: the whole frame)"
    )
    render_pixel_nm: float = Field(default=20.0, gt=0)
    render_every: int = Field(default=0, ge=0, description="emit images['superres'] every N frames")
    output_dir: Path | None = Field(default=None, description="write table/render/drift here on close")

    @model_validator(mode="after")
    def _check(self) -> SMLMStageConfig:
        if self.method == "network":
            if self.bundle is None:
                raise ValueError("bundle: method 'network' needs an engine bundle")
            if not self.bundle.exists():
                raise ValueError(f"bundle: {str(self.bundle)!r} does not exist")
        if self.roi_px % 2 == 0:
            raise ValueError(f"roi_px must be odd, got {self.roi_px}")
        return self

    def build(self) -> SMLMStage:
        return SMLMStage(self)


class SMLMStage:
    """Implements :class:`smartscope.pipeline.Stage` for SMLM localization."""

    def __init__(self, config: SMLMStageConfig) -> None:
        self.config = config
        self.name = config.name
        self.output_dir: Path | None = config.output_dir
        self.pixel_nm = config.pixel_size_um * 1000.0
        self.camera = config.camera.model()
        self.classical = ClassicalLocalizer(
            ClassicalConfig(
                pixel_nm=self.pixel_nm,
                psf_sigma_nm=config.psf_sigma_nm,
                fit_sigma=config.fit_sigma,
                roi_px=config.roi_px,
                threshold_sigma=config.threshold_sigma,
                min_prob=config.min_prob,
            ),
            self.camera,
        )
        self.engine = None
        if config.method == "network":
            from smartscope.engines.runtime import Engine
            from smartscope.models.smlm import network  # registers the architecture

            assert config.bundle is not None
            self.engine = Engine.open(config.bundle, config.backend)
            man = self.engine.manifest
            if man.task != "smlm" or man.outputs[0].channels != list(network.OUTPUT_CHANNELS):
                raise ValueError(
                    f"bundle {config.bundle}: task {man.task!r} with outputs "
                    f"{man.outputs[0].channels} is not a DECODE-class SMLM engine"
                )
            if man.pixel_size_um is not None and not math.isclose(
                man.pixel_size_um, config.pixel_size_um, rel_tol=0.05
            ):
                raise ValueError(
                    f"pixel_size_um: stage has {config.pixel_size_um}, bundle {config.bundle} "
                    f"was trained at {man.pixel_size_um}"
                )
        self._buf: list[tuple[int, np.ndarray]] = []  # (index, electrons) for the network
        self._tables: list[LocTable] = []
        self._hist: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self.frames_seen = 0

    # --- localization ------------------------------------------------------------------
    def _network_window(self, frame: Frame) -> tuple[int, np.ndarray] | None:
        """Push the frame; return (centre index, (3, H, W) electrons) when one is ready."""
        e = self.camera.to_electrons(frame.image).astype(np.float32)
        self._buf.append((frame.index, e))
        if len(self._buf) == 1:
            return None
        if len(self._buf) > 3:
            self._buf.pop(0)
        if len(self._buf) == 2:  # the first frame: no predecessor, replicate it
            (i0, e0), (i1, e1) = self._buf
            return i0, np.stack([e0, e0, e1 if i1 == i0 + 1 else e0])
        (ia, ea), (ib, eb), (ic, ec) = self._buf
        prev = ea if ia == ib - 1 else eb
        nxt = ec if ic == ib + 1 else eb
        return ib, np.stack([prev, eb, nxt])

    def _run_network(self, centre: int, window: np.ndarray) -> LocTable:
        from smartscope.models.smlm.network import DecodeSettings, decode_outputs

        assert self.engine is not None
        out = self.engine.infer(window)["out"]
        return decode_outputs(
            out, centre, self.pixel_nm, DecodeSettings(threshold=self.config.prob_threshold)
        )

    def localize(self, frame: Frame) -> LocTable | None:
        """Localizations this frame makes available (None: network still buffering)."""
        if frame.image.ndim != 2:
            raise StageError(f"stage {self.name!r}: expected a (Y, X) frame, got {frame.image.shape}")
        if self.engine is None:
            return self.classical.localize(frame.image, frame.index)
        win = self._network_window(frame)
        if win is None:
            return None
        return self._run_network(*win)

    def flush(self) -> LocTable | None:
        """Network mode: localize the last buffered frame (with its successor missing)."""
        if self.engine is None or not self._buf:
            return None
        idx, e = self._buf[-1]
        prev = self._buf[-2][1] if len(self._buf) > 1 and self._buf[-2][0] == idx - 1 else e
        self._buf.clear()
        tab = self._run_network(idx, np.stack([prev, e, e]))
        self._accumulate(tab)
        return tab

    def reset(self) -> None:
        """Forget every frame seen: the next frame starts a new sequence (a new chunk)."""
        self._buf.clear()
        self._tables.clear()
        self._hist = None
        self._shape = None
        self.frames_seen = 0

    # --- Stage protocol ----------------------------------------------------------------
    def _accumulate(self, tab: LocTable) -> None:
        self._tables.append(tab)
        if self._hist is not None and len(tab):
            rp = self.config.render_pixel_nm
            col = np.floor(tab.x_nm / rp).astype(np.int64)
            row = np.floor(tab.y_nm / rp).astype(np.int64)
            h, w = self._hist.shape
            ok = (row >= 0) & (row < h) & (col >= 0) & (col < w)
            self._hist += np.bincount(row[ok] * w + col[ok], minlength=h * w).reshape(h, w)

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        if self._shape is None:
            self._shape = frame.shape
            if self.config.render_every or self.output_dir is not None:
                ext = self.extent_nm
                rp = self.config.render_pixel_nm
                self._hist = np.zeros((math.ceil(ext[0] / rp), math.ceil(ext[1] / rp)), np.float32)
        self.frames_seen += 1
        tab = self.localize(frame)
        if tab is None:
            return StageOutput()
        self._accumulate(tab)
        area = self.config.area_um2 or (frame.shape[0] * frame.shape[1] * (self.pixel_nm / 1000.0) ** 2)
        n = len(tab)
        out = StageOutput(
            values={
                "n_localizations": float(n),
                "density_per_um2": n / area,
                "localized_frame": float(tab.frame[0]) if n else float(self._last_index(frame)),
                "mean_photons": float(tab.photons.mean()) if n else 0.0,
            },
            rows=tab.to_rows(),
        )
        every = self.config.render_every
        if every and self._hist is not None and self.frames_seen % every == 0:
            out.images["superres"] = self._hist.copy()
        return out

    def _last_index(self, frame: Frame) -> int:
        return frame.index - 1 if self.engine is not None else frame.index

    @property
    def extent_nm(self) -> tuple[float, float]:
        if self._shape is None:
            raise RuntimeError("no frame seen yet")
        return self._shape[0] * self.pixel_nm, self._shape[1] * self.pixel_nm

    def table(self) -> LocTable:
        """Every localization of the run so far."""
        return LocTable.concat(self._tables)

    def write_outputs(self, folder: Path) -> dict[str, Path]:
        """Localization table (CSV + ThunderSTORM CSV), Gaussian render (TIFF, float32 at
        ``render_pixel_nm``) and drift estimate (JSON) into ``folder``."""
        extent = self.extent_nm if self._shape is not None else None
        return write_outputs(folder, self.table(), extent, self.config.render_pixel_nm)

    def attach_run_dir(self, outputs_dir: Path) -> None:
        """Called by the runner: per-run files go to the run's outputs/ unless configured."""
        if self.output_dir is None:
            self.output_dir = outputs_dir

    def close(self) -> None:
        if self.output_dir is not None:
            self.flush()
            self.write_outputs(self.output_dir)
        if self.engine is not None:
            self.engine.close()


def write_outputs(
    folder: Path,
    tab: LocTable,
    extent_nm: tuple[float, float] | None,
    render_pixel_nm: float,
    *,
    drift_correct: bool = False,
) -> dict[str, Path]:
    """A localization table's files in ``folder``: table (CSV + ThunderSTORM CSV), Gaussian
    render (TIFF, float32 at ``render_pixel_nm``; needs the field's ``extent_nm``) and the
    drift estimate (JSON; from >= 200 frames and >= 500 localizations). With
    ``drift_correct`` the table and render are corrected by that estimate."""
    import tifffile

    from smartscope.models.smlm.render import correct_drift, estimate_drift, render_gaussian

    folder.mkdir(parents=True, exist_ok=True)
    drift = None
    if extent_nm is not None and len(tab):
        n_frames = int(tab.frame.max() - tab.frame.min() + 1)
        if n_frames >= 200 and len(tab) >= 500:
            drift = estimate_drift(tab, n_segments=min(10, n_frames // 100), extent_nm=extent_nm)
    if drift is not None and drift_correct:
        tab = correct_drift(tab, drift)
    paths = {
        "localizations": tab.write_csv(folder / "localizations.csv"),
        "thunderstorm": tab.write_thunderstorm_csv(folder / "localizations_thunderstorm.csv"),
    }
    if extent_nm is not None and len(tab):
        img = render_gaussian(tab, render_pixel_nm, extent_nm)
        p = folder / "superres_gaussian.tif"
        tifffile.imwrite(p, img, metadata={"pixel_size_nm": render_pixel_nm})
        paths["superres"] = p
    if drift is not None:
        p = folder / "drift.json"
        p.write_text(
            json.dumps(
                {
                    "segment_frames": drift.segment_frames.tolist(),
                    "dx_nm": drift.segment_dx_nm.tolist(),
                    "dy_nm": drift.segment_dy_nm.tolist(),
                    "applied": drift_correct,
                },
                indent=1,
            )
        )
        paths["drift"] = p
    return paths
