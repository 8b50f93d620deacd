"""Parameters of the demo scenarios on the virtual microscope (``smartscope demo``).

Each scenario module in :mod:`smartscope.scenarios` turns one of these into a run
configuration, runs it, scores it against the simulator's ground truth and plots it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from smartscope.config.base import FrozenModel

__all__ = [
    "AOScenario",
    "BleachScenario",
    "EventsPositionsScenario",
    "EventsScenario",
    "LowlightScenario",
    "SMLMScenario",
    "ScenarioConfig",
    "StainScenario",
]


class _Scenario(FrozenModel):
    seed: int = Field(default=0, description="seed of the virtual sample (and its events)")


class BleachScenario(_Scenario):
    """Cells under 488 nm; a controller holds the 99th percentile in a band as the dye bleaches."""

    kind: Literal["bleach"] = "bleach"
    n_frames: int = Field(default=600, gt=0)
    denoise: bool = Field(default=False, description="add the shipped N2V denoiser stage")


class EventsScenario(_Scenario):
    """Mitochondrial fission at random times: slow imaging, fast while an event is under way."""

    kind: Literal["events"] = "events"
    mode: Literal["slow", "fast", "triggered"] = "triggered"
    duration_s: float = Field(default=60.0, gt=0, description="simulated seconds")
    sensor_px: int = Field(default=256, gt=0)
    post_s: float = Field(default=5.0, ge=0, description="an event counts as caught until fission + post_s")
    trigger: dict[str, Any] | None = Field(
        default=None, description="EventTriggerConfig fields that override the defaults"
    )
    detector: dict[str, Any] | None = Field(default=None, description="detector stage fields to override")
    learned_bundle: Path | None = Field(
        default=None, description="events heat-map bundle: trigger on the U-Net instead of the classical map"
    )
    pacing: Literal["AsFastAsPossible", "RealTime"] = Field(
        default="AsFastAsPossible",
        description="virtual camera pacing: AsFastAsPossible renders frames as fast as it can, so the "
        "simulated clock runs ahead of the loop's decisions; RealTime keeps the simulated clock on the "
        "wall clock (a 60 s run takes 60 s), so a switch takes effect on the next frame as on a microscope",
    )


class EventsPositionsScenario(_Scenario):
    """Fission events at several stage positions of an MDA plan: every position slowly, and
    the one where the detector fires in a fast burst while the others keep their schedule."""

    kind: Literal["events_positions"] = "events_positions"
    mode: Literal["slow", "triggered"] = Field(
        default="triggered", description="slow: the plan alone (the baseline); triggered: bursts on events"
    )
    n_positions: int = Field(default=4, ge=1, le=64, description="fields of the sample, side by side")
    duration_s: float = Field(default=60.0, gt=0, description="seconds (the sample's clock follows the wall)")
    slow_interval_s: float = Field(default=1.0, gt=0, description="the plan's time-lapse interval")
    burst_interval_ms: float = Field(default=100.0, ge=0)
    burst_frames: int = Field(default=50, ge=1)
    sensor_px: int = Field(default=128, gt=0)
    post_s: float = Field(default=5.0, ge=0, description="an event counts as caught until fission + post_s")
    trigger: dict[str, Any] | None = Field(
        default=None, description="EventAcquireConfig fields that override the defaults"
    )
    detector: dict[str, Any] | None = Field(default=None, description="detector stage fields to override")


class AOScenario(_Scenario):
    """Beads behind a random aberration; modal sensorless AO through the deformable mirror."""

    kind: Literal["ao"] = "ao"
    aberration_rad: tuple[float, ...] | None = Field(
        default=None, description="Noll amplitudes (j = 1..); None: random from the seed"
    )
    n_frames: int = Field(default=600, gt=0)
    sensor_px: int = Field(default=128, gt=0)
    ao: dict[str, Any] | None = Field(default=None, description="ModalAOConfig fields to override")


class LowlightScenario(_Scenario):
    """Cells at 5 % brightness through the N2V denoiser: fixed power vs the SNR dose controller."""

    kind: Literal["lowlight"] = "lowlight"
    controlled: bool = True
    power_mw: float = Field(default=20.0, ge=0, description="fixed power, or the controller's start")
    target_snr: float = Field(default=2.0, gt=0)
    n_frames: int = Field(default=400, gt=0)
    sensor_px: int = Field(default=256, gt=0)
    interval_ms: float = Field(default=0.0, ge=0)


class SMLMScenario(_Scenario):
    """Blinking emitters; live localization while the 405 nm laser holds the density."""

    kind: Literal["smlm"] = "smlm"
    n_frames: int = Field(default=600, gt=0)
    sensor_px: int = Field(default=256, gt=0)
    target_density_per_um2: float = Field(default=0.5, gt=0)


class StainScenario(_Scenario):
    """Label-free frames become virtual fluorescence live; the operator defocuses for a while."""

    kind: Literal["stain"] = "stain"
    bundle: Path | None = Field(default=None, description="stain bundle; None: the shipped pix2pix")
    n_frames: int = Field(default=60, gt=0)
    sensor_px: int = Field(default=256, gt=0)
    interval_ms: float = Field(default=300.0, ge=0)
    lamp_mw: float = Field(default=1.0, gt=0, description="the lamp power the shipped bundle was trained at")
    defocus_um: float = 1.5
    defocus_frames: tuple[int, int] = (20, 40)


ScenarioConfig = Annotated[
    BleachScenario
    | EventsScenario
    | EventsPositionsScenario
    | AOScenario
    | LowlightScenario
    | SMLMScenario
    | StainScenario,
    Field(discriminator="kind"),
]
