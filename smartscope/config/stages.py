"""Pipeline stages: one config model per ``kind``, and the union that lists them all.

A stage config says what to build; :mod:`smartscope.registry` builds it. Defaults that
belong to an algorithm (the stain network's test-time augmentations, the event maps'
border) are defined here, once, and the runtime code reads them from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from smartscope.config.base import BackendChoice, FrozenModel
from smartscope.exceptions import InvalidValue

__all__ = [
    "EVENTS_BORDER_PX",
    "STAIN_INPUT_SHIFT_MAX",
    "STAIN_TTA_MAX",
    "EngineStageConfig",
    "EventDetectorConfig",
    "FaultStageConfig",
    "IdentityStageConfig",
    "LearnedEventDetectorConfig",
    "RemoteStageConfig",
    "SMLMCameraConfig",
    "SMLMStageConfig",
    "StageConfig",
    "StainStageConfig",
    "StatsStageConfig",
]

STAIN_TTA_MAX = 4  # mirrored copies of a frame the stain network can average over
STAIN_INPUT_SHIFT_MAX = 6.0  # |z| of the input statistics beyond which a stain is not trusted
EVENTS_BORDER_PX = 4  # edge band the event maps' maximum ignores


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise InvalidValue(f"{what} {str(path)!r} does not exist")
    return path


# ------------------------------------------------------------------ built-ins


class IdentityStageConfig(FrozenModel):
    """Passes the frame through untouched (``kind: identity``): the loop-overhead baseline."""

    kind: Literal["identity"] = "identity"
    name: str = "identity"


class StatsStageConfig(FrozenModel):
    """Frame statistics controllers steer on (``kind: stats``)."""

    kind: Literal["stats"] = "stats"
    name: str = "stats"
    saturation_adu: int = Field(default=65535, gt=0)


class FaultStageConfig(FrozenModel):
    """Deliberately fails at a chosen frame: for fault drills and tests."""

    kind: Literal["fault"] = "fault"
    name: str = "fault"
    at_frame: int = Field(ge=0)
    mode: Literal["raise", "nan", "hang"] = "raise"


# -------------------------------------------------------------------- engines


class EngineStageConfig(FrozenModel):
    """Pipeline-stage config for any engine bundle (``kind: engine``)."""

    kind: Literal["engine"] = "engine"
    name: str = Field(default="denoise", min_length=1, description="stage name; keys its results")
    bundle: Path = Field(description="engine bundle folder or .zip")
    backend: BackendChoice = "auto"
    device: str | None = Field(default=None, description="cpu, cuda:0 ...; None lets the backend choose")
    precision: Literal["fp32", "fp16", "bf16"] | None = None
    outputs: list[str] | None = Field(
        default=None, description="outputs to emit as images (default: all the bundle declares)"
    )
    snr: bool = Field(default=True, description="report noise/SNR values for restoration engines")
    max_batch: int = Field(default=4, ge=1, description="tiles per backend call")

    @field_validator("bundle")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        return _existing(v, "engine bundle")


class StainStageConfig(FrozenModel):
    """Pipeline-stage config for virtual staining (``kind: stain``)."""

    kind: Literal["stain"] = "stain"
    name: str = Field(default="stain", min_length=1)
    bundle: Path = Field(description="virtual-staining bundle (smartscope train stain)")
    backend: BackendChoice = "auto"
    device: str | None = None
    label_free_channel: str = Field(
        default="", description="acquisition channel (preset) of the label-free frames; '' = every frame"
    )
    given: dict[str, str] = Field(
        default_factory=dict,
        description="channel completion: bundle channel -> acquisition channel whose frames are given",
    )
    max_given_age_frames: int = Field(default=8, ge=1, description="older given frames are not used")
    tta: int = Field(
        default=STAIN_TTA_MAX, ge=1, le=STAIN_TTA_MAX, description="mirrored copies; 1 = no disagreement map"
    )
    disagreement_ratio_max: float | None = Field(
        default=None,
        gt=0,
        description="trusted at or below this; None: 1.1 x the bundle's held-out p95/median",
    )
    input_shift_max: float = Field(
        default=STAIN_INPUT_SHIFT_MAX, gt=0, description="trusted at or below this |z|"
    )

    @field_validator("bundle")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        return _existing(v, "stain bundle")


# ----------------------------------------------------------------------- SMLM


class SMLMCameraConfig(FrozenModel):
    """Camera calibration the localizer needs: ``e⁻ = (ADU − offset) / gain / em_gain``."""

    kind: Literal["scmos", "emccd"] = "scmos"
    offset_adu: float = Field(default=100.0, ge=0)
    gain_adu_per_e: float = Field(default=2.0, gt=0, description="conversion gain after EM gain")
    em_gain: float = Field(default=1.0, ge=1)
    read_noise_e: float = Field(default=0.9, ge=0)
    adc_floor: bool = Field(default=True, description="ADU = floor(...): add ½ ADU back")


class SMLMStageConfig(FrozenModel):
    """Pipeline-stage config for single-molecule localization (``kind: smlm``)."""

    kind: Literal["smlm"] = "smlm"
    name: str = Field(default="smlm", min_length=1)
    method: Literal["classical", "network"] = "classical"
    bundle: Path | None = Field(default=None, description="DECODE-class bundle (method: network)")
    backend: BackendChoice = "auto"
    pixel_size_um: float = Field(default=0.1, gt=0, le=10)
    camera: SMLMCameraConfig = Field(default_factory=SMLMCameraConfig)
    camera_file: Path | None = Field(
        default=None, description="camera calibration (smartscope calibrate camera); replaces 'camera'"
    )
    sensor_origin_px: tuple[int, int] = Field(
        default=(0, 0), description="(row, col) of the frame on the sensor, for per-pixel camera maps"
    )
    psf_file: Path | None = Field(default=None, description="PSF calibration (classical: spline fit, 3-D)")
    psf_model: Literal["spline", "gaussian_z"] = Field(
        default="spline", description="classical fit with psf_file: the spline, or its calibrated Gaussian-z"
    )
    psf_sigma_nm: float = Field(default=100.0, gt=0, description="Gaussian PSF sigma (≈ 0.21 λ/NA)")
    fit_sigma: bool = False
    roi_px: int | None = Field(default=None, ge=5, description="fit window (None: by PSF model)")
    threshold_sigma: float = Field(default=4.0, gt=0)
    min_prob: float = Field(default=0.99, ge=0, le=1, description="classical: likelihood-ratio prob")
    prob_threshold: float | None = Field(
        default=None, gt=0, description="network: 3x3 summed probability (None: the bundle's)"
    )
    force: bool = Field(default=False, description="use a network bundle whose calibration does not match")
    refine: bool = Field(
        default=False,
        description="network: polish each detection by the spline MLE of psf_file (neighbours held fixed)",
    )
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
                raise InvalidValue("bundle: method 'network' needs an engine bundle")
            if not self.bundle.exists():
                raise InvalidValue(f"bundle: {str(self.bundle)!r} does not exist")
        if self.roi_px is not None and self.roi_px % 2 == 0:
            raise InvalidValue(f"roi_px must be odd, got {self.roi_px}")
        for name, f in (("camera_file", self.camera_file), ("psf_file", self.psf_file)):
            if f is not None and not f.is_file():
                raise InvalidValue(f"{name}: {str(f)!r} does not exist")
        if self.refine and (self.method != "network" or self.psf_file is None):
            raise InvalidValue("refine: needs method 'network' and a psf_file to fit with")
        if self.psf_model == "gaussian_z" and self.psf_file is None:
            raise InvalidValue("psf_model: 'gaussian_z' needs a psf_file that holds the calibration")
        return self


# --------------------------------------------------------------------- events


class EventDetectorConfig(FrozenModel):
    """Classical event detector stage (``kind: event_detector``)."""

    kind: Literal["event_detector"] = "event_detector"
    name: str = "events"
    offset_adu: float = Field(default=100.0, ge=0, description="camera offset subtracted first")
    sigma_px: float = Field(default=1.5, gt=0, description="Gaussian smoothing before comparison")
    reference_tau_s: float = Field(default=5.0, gt=0, description="memory of the reference image")
    noise_floor_adu2: float = Field(default=4.0, gt=0, description="variance added to the reference")
    border_px: int = Field(default=EVENTS_BORDER_PX, ge=0, description="edge band ignored for the maximum")
    row_min_score: float = Field(default=6.0, description="frames at/above this score get an event row")
    emit_heatmap: bool = Field(default=False, description="save the score map as a stage image")


class LearnedEventDetectorConfig(FrozenModel):
    """U-Net event detector stage (``kind: event_unet``)."""

    kind: Literal["event_unet"] = "event_unet"
    name: str = "events"
    bundle: Path = Field(description="events heat-map engine bundle")
    backend: Literal["auto", "onnxruntime", "torch"] = "auto"
    border_px: int = Field(default=EVENTS_BORDER_PX, ge=0)


# --------------------------------------------------------------------- remote


class RemoteStageConfig(FrozenModel):
    """Pipeline-stage config for a stage run by a ``smartscope worker`` (``kind: remote``)."""

    kind: Literal["remote"] = "remote"
    name: str = Field(default="remote", min_length=1, description="stage name; keys its results")
    address: str = Field(
        default="tcp://127.0.0.1:5570", pattern=r"^tcp://.+:\d+$", description="the worker's tcp://host:port"
    )
    timeout_ms: float = Field(default=500.0, gt=0, description="no answer within this: frame skipped")
    client_secret_key: Path | None = Field(default=None, description="CurveZMQ .key_secret of this side")
    server_public_key: Path | None = Field(default=None, description="the worker's public .key")

    @model_validator(mode="after")
    def _keys_together(self) -> RemoteStageConfig:
        if (self.client_secret_key is None) != (self.server_public_key is None):
            raise InvalidValue("client_secret_key and server_public_key go together (CurveZMQ)")
        return self


StageConfig = Annotated[
    IdentityStageConfig
    | StatsStageConfig
    | FaultStageConfig
    | EngineStageConfig
    | SMLMStageConfig
    | StainStageConfig
    | RemoteStageConfig
    | EventDetectorConfig
    | LearnedEventDetectorConfig,
    Field(discriminator="kind"),
]
