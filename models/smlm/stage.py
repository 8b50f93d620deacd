"""SMLM as a pipeline stage: every frame becomes localizations as it arrives.

``StageOutput.rows`` holds the frame's localizations (the table's columns); ``values`` holds
``n_localizations``, ``density_per_um2`` (localizations per µm² of the field in that
frame — what the density controller steers on), ``localized_frame`` (the frame the rows
belong to) and ``mean_photons``. The stage accumulates the run's table and a histogram
super-resolution image; every ``render_every`` frames it emits ``images['superres']``.
With ``output_dir`` set, :meth:`SMLMStage.close` writes the table (native and ThunderSTORM
CSV, Picasso HDF5 + YAML), the Gaussian rendering (TIFF with its pixel size) and a drift
estimate there.

Method ``network`` runs a DECODE-class bundle on (t−1, t, t+1): the rows of frame t come
out when frame t+1 arrives (one frame late; ``flush()`` returns the last frame's). Frames
that do not follow each other (the loop skipped some) are replaced by the centre frame.

Calibration (``smartscope calibrate``): ``camera_file`` replaces ``camera`` (per-pixel sCMOS
maps cropped at ``sensor_origin_px``); ``psf_file`` gives the classical fit a calibrated
spline PSF (3-D: z is fitted). A network bundle trained on a calibrated camera records
its numbers: the stage refuses a bundle whose pixel size or camera does not match the
data's — the message names both — unless ``force``. The detection threshold defaults to
the one chosen on validation data at training time (the bundle's ``calibration``). 3-D
tables add a z-colour-coded render (``superres_z.png``) on close.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smartscope.config.stages import SMLMCameraConfig, SMLMStageConfig
from smartscope.exceptions import InvalidValue
from smartscope.frame import Frame
from smartscope.models.smlm.localize_classical import (
    CameraModel,
    ClassicalConfig,
    ClassicalLocalizer,
)
from smartscope.models.smlm.table import LocTable
from smartscope.pipeline import StageError, StageOutput

if TYPE_CHECKING:
    from smartscope.engines.runtime import Engine
    from smartscope.simulators.psf_models import PSFModel

__all__ = ["PicassoInfo", "SMLMStage", "bundle_mismatches", "camera_model", "write_outputs"]


def camera_model(cfg: SMLMCameraConfig) -> CameraModel:
    """The localizer's camera model from a stage's camera config."""
    emccd = cfg.kind == "emccd" and cfg.em_gain > 1
    return CameraModel(
        offset_adu=cfg.offset_adu - (0.5 if cfg.adc_floor else 0.0),
        e_per_adu=1.0 / cfg.gain_adu_per_e,
        em_gain=cfg.em_gain if emccd else 1.0,
        read_noise_e=cfg.read_noise_e,
        emccd=emccd,
    )


class SMLMStage:
    """Implements :class:`smartscope.pipeline.Stage` for SMLM localization."""

    def __init__(self, config: SMLMStageConfig) -> None:
        from smartscope.models.smlm.calibrate import UserCalibration

        self.config = config
        self.name = config.name
        self.output_dir: Path | None = config.output_dir
        self.pixel_nm = config.pixel_size_um * 1000.0
        self.calibration = UserCalibration.load(config.psf_file, config.camera_file)
        self.fit_psf: PSFModel | None = self.calibration.psf
        if config.psf_model == "gaussian_z" and self.calibration.psf is not None:
            from smartscope.simulators.psf_models import gaussian_z_of

            self.fit_psf = gaussian_z_of(self.calibration.psf)
            if self.fit_psf is None:
                raise InvalidValue(
                    f"psf_model: {config.psf_file} holds no Gaussian-z calibration "
                    "(a 2-D or non-astigmatic PSF)"
                )
        self._camera_by_shape: dict[tuple[int, int], CameraModel] = {}
        self.camera = self._nominal_camera()
        self.engine: Engine | None = None
        self.threshold = 0.5
        if config.method == "network":
            self._open_engine()
        self._classical_cfg = ClassicalConfig(
            pixel_nm=self.pixel_nm,
            psf_sigma_nm=config.psf_sigma_nm,
            fit_sigma=config.fit_sigma,
            roi_px=config.roi_px,
            threshold_sigma=config.threshold_sigma,
            min_prob=config.min_prob,
        )
        self.classical = ClassicalLocalizer(self._classical_cfg, self.camera, self.fit_psf)
        self._buf: list[tuple[int, np.ndarray]] = []  # (index, electrons) for the network
        self._raw: dict[int, np.ndarray] = {}  # camera frames of the buffered indices (refine)
        self._tables: list[LocTable] = []
        self._hist: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self.frames_seen = 0

    def _nominal_camera(self) -> CameraModel:
        """The camera without per-pixel maps (its scalars); maps come per frame shape."""
        from smartscope.models.smlm.localize_classical import camera_model_for

        cam = self.calibration.camera
        return camera_model(self.config.camera) if cam is None else camera_model_for(cam)

    def camera_for(self, shape: tuple[int, int]) -> CameraModel:
        """Camera model for frames of ``shape``: the calibration's per-pixel maps cropped at
        ``sensor_origin_px`` when it has them, else the scalar model."""
        hit = self._camera_by_shape.get(shape)
        if hit is not None:
            return hit
        from smartscope.models.smlm.localize_classical import camera_model_for
        from smartscope.simulators.camera import CameraMaps

        cal, maps = self.calibration.camera, self.calibration.camera_maps
        cam = self.camera
        if cal is not None and maps is not None:
            r0, c0 = self.config.sensor_origin_px
            if r0 + shape[0] > maps.shape[0] or c0 + shape[1] > maps.shape[1]:
                raise StageError(
                    f"stage {self.name!r}: frame {shape} at sensor origin {(r0, c0)} lies outside the "
                    f"camera maps {maps.shape} of {self.config.camera_file}"
                )
            sl = (slice(r0, r0 + shape[0]), slice(c0, c0 + shape[1]))
            sub = CameraMaps.from_arrays(maps.offset_adu[sl], maps.gain_adu_per_e[sl], maps.read_noise_e[sl])
            cam = camera_model_for(cal, maps=sub)
        self._camera_by_shape[shape] = cam
        return cam

    def _open_engine(self) -> None:
        from smartscope.engines.networks.smlm_outputs import OUTPUT_CHANNELS, OUTPUT_CHANNELS_3D
        from smartscope.engines.runtime import Engine

        cfg = self.config
        assert cfg.bundle is not None
        self.engine = Engine.open(cfg.bundle, cfg.backend)
        man = self.engine.manifest
        chans = tuple(man.outputs[0].channels)
        if man.task != "smlm" or chans not in (OUTPUT_CHANNELS, OUTPUT_CHANNELS_3D):
            raise InvalidValue(
                f"bundle {cfg.bundle}: task {man.task!r} with outputs "
                f"{man.outputs[0].channels} is not a DECODE-class SMLM engine"
            )
        problems = bundle_mismatches(man.calibration, man.pixel_size_um, cfg.pixel_size_um, self.camera)
        if problems and not cfg.force:
            where = f"camera {cfg.camera_file}" if cfg.camera_file else "the stage's camera settings"
            raise InvalidValue(
                f"bundle {cfg.bundle} does not match the data ({where}): "
                + "; ".join(problems)
                + ". Retrain on this calibration, or pass force to use it anyway"
            )
        self.threshold = (
            cfg.prob_threshold
            if cfg.prob_threshold is not None
            else float(man.calibration.get("threshold", 0.5))
        )

    # --- localization ------------------------------------------------------------------
    def _network_window(self, frame: Frame) -> tuple[int, np.ndarray] | None:
        """Push the frame; return (centre index, (3, H, W) electrons) when one is ready."""
        e = self.camera_for(frame.shape).to_electrons(frame.image).astype(np.float32)
        self._buf.append((frame.index, e))
        if self.config.refine:
            self._raw[frame.index] = frame.image
            keep = {i for i, _ in self._buf[-3:]}
            self._raw = {i: v for i, v in self._raw.items() if i in keep}
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
        from smartscope.models.smlm.decode import DecodeSettings, decode_outputs
        from smartscope.models.smlm.localize_classical import refine_localizations

        assert self.engine is not None
        out = self.engine.infer(window)["out"]
        tab = decode_outputs(out, centre, self.pixel_nm, DecodeSettings(threshold=self.threshold))
        raw = self._raw.get(centre)
        if self.config.refine and raw is not None and self.calibration.psf is not None:
            cam = self.camera_for((int(raw.shape[0]), int(raw.shape[1])))
            tab = refine_localizations(tab, raw, self.calibration.psf, cam, self.pixel_nm)
        return tab

    def localize(self, frame: Frame) -> LocTable | None:
        """Localizations this frame makes available (None: network still buffering)."""
        if frame.image.ndim != 2:
            raise StageError(f"stage {self.name!r}: expected a (Y, X) frame, got {frame.image.shape}")
        if self.engine is None:
            cam = self.camera_for(frame.shape)
            if cam is not self.classical.camera:
                self.classical = ClassicalLocalizer(self._classical_cfg, cam, self.fit_psf)
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
        self._raw.clear()
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
        """Localization table (CSV, ThunderSTORM CSV, Picasso HDF5 + YAML), Gaussian render
        (calibrated TIFF, float32 at ``render_pixel_nm``; 3-D: z-colour PNG) and drift
        estimate (JSON) into ``folder``."""
        tab = self.table()
        frames = max(self.frames_seen, int(tab.frame.max()) + 1 if len(tab) else 0)
        return write_outputs(
            folder,
            tab,
            self.extent_nm if self._shape is not None else None,
            self.config.render_pixel_nm,
            picasso=self._picasso_info(frames),
        )

    def _picasso_info(self, n_frames: int) -> PicassoInfo | None:
        """What Picasso's YAML needs beside the table: the camera pixel and the field."""
        if self._shape is None:
            return None
        return PicassoInfo(
            pixel_nm=self.pixel_nm,
            width_px=self._shape[1],
            height_px=self._shape[0],
            n_frames=n_frames,
            info={"smartscope method": self.config.method, "PSF sigma (nm)": self.config.psf_sigma_nm},
        )

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


# tolerances a bundle's recorded camera must meet (relative, or absolute ADU for the offset)
_CAMERA_TOLERANCE = {"gain_adu_per_e": 0.05, "em_gain": 0.1, "read_noise_e": 0.3}
_OFFSET_TOLERANCE_ADU = 5.0


def bundle_mismatches(
    calibration: Mapping[str, float],
    bundle_pixel_um: float | None,
    pixel_size_um: float,
    camera: CameraModel,
) -> list[str]:
    """What about a network bundle's recorded calibration does not fit the data: pixel size
    (2 %) and, for a bundle trained on a calibrated camera, its kind, conversion gain (5 %),
    EM gain (10 %), offset (5 ADU) and read noise (30 %). Each entry names both values."""
    out: list[str] = []
    if bundle_pixel_um is not None and not math.isclose(bundle_pixel_um, pixel_size_um, rel_tol=0.02):
        out.append(f"pixel size: data {pixel_size_um * 1000:g} nm, bundle {bundle_pixel_um * 1000:g} nm")
    if calibration.get("camera_calibrated", 0.0) < 0.5:
        return out
    data = {
        "gain_adu_per_e": 1.0 / camera.e_per_adu,
        "em_gain": camera.em_gain,
        "read_noise_e": camera.read_noise_e,
    }
    if bool(calibration.get("camera_emccd", 0.0) > 0.5) != camera.emccd:
        kinds = ("EMCCD", "sCMOS")
        out.append(
            f"camera kind: data {kinds[0] if camera.emccd else kinds[1]}, "
            f"bundle {kinds[0] if calibration.get('camera_emccd', 0.0) > 0.5 else kinds[1]}"
        )
    for key, tol in _CAMERA_TOLERANCE.items():
        ref = calibration.get(f"camera_{key}")
        if ref is not None and not math.isclose(data[key], ref, rel_tol=tol):
            out.append(f"camera {key}: data {data[key]:.4g}, bundle {ref:.4g}")
    ref_off = calibration.get("camera_offset_adu")
    if ref_off is not None and abs(camera.offset_adu - ref_off) > _OFFSET_TOLERANCE_ADU:
        out.append(f"camera offset_adu: data {camera.offset_adu:.4g}, bundle {ref_off:.4g}")
    return out


@dataclass(frozen=True)
class PicassoInfo:
    """The camera field a Picasso file describes (its YAML): pixel, size, frame count."""

    pixel_nm: float
    width_px: int
    height_px: int
    n_frames: int
    info: Mapping[str, object] = field(default_factory=dict)


def write_outputs(
    folder: Path,
    tab: LocTable,
    extent_nm: tuple[float, float] | None,
    render_pixel_nm: float,
    *,
    drift_correct: bool = False,
    picasso: PicassoInfo | None = None,
) -> dict[str, Path]:
    """A localization table's files in ``folder``: table (CSV + ThunderSTORM CSV; Picasso
    HDF5 + YAML when ``picasso`` describes the camera field), Gaussian render (calibrated
    TIFF, float32 at ``render_pixel_nm``; needs the field's ``extent_nm``; 3-D tables also a
    z-colour PNG) and the drift estimate (JSON; from >= 200 frames and >= 500
    localizations). With ``drift_correct`` the table and render are corrected by that
    estimate."""
    from smartscope.models.smlm.io import write_calibrated_tiff, write_picasso
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
    if picasso is not None:
        paths["picasso"] = write_picasso(
            tab,
            folder / "localizations.hdf5",
            pixel_nm=picasso.pixel_nm,
            width_px=picasso.width_px,
            height_px=picasso.height_px,
            n_frames=picasso.n_frames,
            info=picasso.info,
        )
    if extent_nm is not None and len(tab):
        img = render_gaussian(tab, render_pixel_nm, extent_nm)
        paths["superres"] = write_calibrated_tiff(folder / "superres_gaussian.tif", img, render_pixel_nm)
        if tab.has_z:
            from smartscope.models.smlm.render import render_z_color, save_png

            rgb = render_z_color(tab, render_pixel_nm, extent_nm)
            paths["superres_z"] = save_png(rgb, folder / "superres_z.png")
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
