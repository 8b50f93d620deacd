"""A user's measured camera: the file ``smartscope calibrate camera`` writes.

:class:`CameraCalibration` is a frozen JSON model (offset, conversion gain, EM gain, read
noise, optionally per-pixel sCMOS maps in an ``.npz`` beside it). Everything that turns
camera ADU into photoelectrons, or photons into ADU, accepts it: the localizers (through
``smartscope.models.smlm.localize_classical.camera_model_for``), the trainer and the simulator
(:meth:`CameraCalibration.sim_config` + :meth:`CameraCalibration.maps` for
:func:`.camera.expose`).

Conventions: ``offset_adu`` is the *measured mean dark level*, so a localizer converts
``e = (ADU − offset_adu) / (gain_adu_per_e · em_gain)`` with no further correction. The
simulator's ADC floors (``ADU = floor(e·gain + offset)``, :mod:`.camera`), whose mean dark
level is its offset − ½: :meth:`CameraCalibration.sim_config` and
:meth:`CameraCalibration.sim_maps` add the ½ back. ``read_noise_e`` is the rms read noise
in electrons at the ADC. Photons are detected photoelectrons (``qe`` = 1) unless the user
states a quantum efficiency.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from smartscope.base_model import FrozenModel
from smartscope.exceptions import InvalidValue

from .camera import CameraConfig, CameraMaps

__all__ = ["CameraCalibration", "load_camera"]


class CameraCalibration(FrozenModel):
    """A camera model measured from dark and flat frames (photon-transfer curve).

    Attributes
    ----------
    kind : "scmos" or "emccd" (EMCCD: excess noise F² = 2 on the shot noise).
    offset_adu : mean dark level, ADU (per-pixel map in ``maps_file`` for sCMOS).
    gain_adu_per_e : conversion gain, ADU per electron at the ADC (after EM gain).
    em_gain : EM gain the camera was set to (1 for sCMOS).
    read_noise_e : rms read noise, electrons at the ADC (median of the map for sCMOS).
    qe : quantum efficiency used when photons are simulated (1: photons = photoelectrons).
    shape : sensor (rows, cols) the maps cover; None without maps.
    maps_file : ``.npz`` beside this file with ``offset_adu``, ``gain_adu_per_e``,
        ``read_noise_e`` (each ``shape``), or None.
    maps_sha256 : sha256 of that file (checked on load).
    source : how it was measured (files, frames, fit statistics).
    """

    kind: Literal["scmos", "emccd"] = "scmos"
    offset_adu: float = Field(ge=0)
    gain_adu_per_e: float = Field(gt=0)
    em_gain: float = Field(default=1.0, ge=1)
    read_noise_e: float = Field(ge=0)
    qe: float = Field(default=1.0, gt=0, le=1)
    shape: tuple[int, int] | None = None
    maps_file: str | None = None
    maps_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    source: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> CameraCalibration:
        if self.kind == "emccd" and self.em_gain <= 1:
            raise InvalidValue("em_gain: an EMCCD calibration needs the EM gain the camera was set to (> 1)")
        if (self.maps_file is None) != (self.shape is None):
            raise InvalidValue("maps_file and shape go together")
        return self

    @property
    def emccd(self) -> bool:
        return self.kind == "emccd" and self.em_gain > 1

    @property
    def total_gain_adu_per_e(self) -> float:
        """ADU per photoelectron (EM gain included)."""
        return self.gain_adu_per_e * self.em_gain

    def sim_config(self, exposure_ms: float = 10.0) -> CameraConfig:
        """The simulator's camera with these numbers (no drawn spread: maps come from
        :meth:`maps`). Dark current is part of the measured offset, so it is zero here."""
        return CameraConfig(
            kind=self.kind,
            qe=self.qe,
            read_noise_e=self.read_noise_e,
            gain_adu_per_e=self.gain_adu_per_e,
            offset_adu=self.offset_adu + 0.5,
            em_gain=self.em_gain,
            full_well_e=max(30_000.0, 65535.0 / self.gain_adu_per_e),
            dark_e_per_s=0.0,
            exposure_ms=exposure_ms,
            offset_spread_adu=0.0,
            gain_spread_rel=0.0,
            read_noise_spread_rel=0.0,
        )

    @staticmethod
    def sim_maps(maps: CameraMaps | None) -> CameraMaps | None:
        """Measured maps → the simulator's (offset + ½ ADU for its flooring ADC)."""
        if maps is None:
            return None
        return CameraMaps.from_arrays(maps.offset_adu + 0.5, maps.gain_adu_per_e, maps.read_noise_e)

    # --- files --------------------------------------------------------------------------
    def save(self, path: str | Path, maps: CameraMaps | None = None) -> Path:
        """Write the JSON (and ``<stem>_maps.npz`` when ``maps`` are given)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        cal = self
        if maps is not None:
            mp = p.with_name(p.stem + "_maps.npz")
            with mp.open("wb") as fh:
                np.savez_compressed(
                    fh,
                    offset_adu=maps.offset_adu.astype(np.float32),
                    gain_adu_per_e=maps.gain_adu_per_e.astype(np.float32),
                    read_noise_e=maps.read_noise_e.astype(np.float32),
                )
            digest = hashlib.sha256(mp.read_bytes()).hexdigest()
            cal = self.model_copy(update={"maps_file": mp.name, "maps_sha256": digest, "shape": maps.shape})
        p.write_text(cal.model_dump_json(indent=2) + "\n")
        return p

    def load_maps(self, folder: Path) -> CameraMaps | None:
        if self.maps_file is None:
            return None
        mp = folder / self.maps_file
        if not mp.is_file():
            raise FileNotFoundError(f"camera maps file {mp} (maps_file in the calibration) does not exist")
        data = mp.read_bytes()
        if self.maps_sha256 is not None and hashlib.sha256(data).hexdigest() != self.maps_sha256:
            raise InvalidValue(f"{mp}: sha256 does not match maps_sha256 in the camera calibration")
        with np.load(mp, allow_pickle=False) as z:
            maps = CameraMaps.from_arrays(z["offset_adu"], z["gain_adu_per_e"], z["read_noise_e"])
        if self.shape is not None and maps.shape != tuple(self.shape):
            raise InvalidValue(f"{mp}: maps are {maps.shape}, the calibration says shape {self.shape}")
        return maps


def load_camera(path: str | Path) -> tuple[CameraCalibration, CameraMaps | None]:
    """Read a camera calibration (and its per-pixel maps, when it has them)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"camera file {p} does not exist")
    try:
        doc = json.loads(p.read_text())
        cal = CameraCalibration.model_validate(doc)
    except json.JSONDecodeError as exc:
        raise InvalidValue(f"{p}: not valid JSON ({exc})") from exc
    except ValidationError as exc:
        errs = "; ".join(
            f"field {'.'.join(str(x) for x in e['loc']) or '(root)'!r}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidValue(f"{p}: {errs}") from exc
    return cal, cal.load_maps(p.parent)
