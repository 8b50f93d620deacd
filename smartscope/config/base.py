"""The one base of every configuration model: frozen, unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["BackendChoice", "FrozenModel"]


class FrozenModel(BaseModel):
    """Immutable once validated; a typo in a key is an error, not a silent default; NaN and
    infinity are refused everywhere (a limit of ``.inf`` is no limit)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


BackendChoice = Literal["auto", "tensorrt", "torch", "onnxruntime"]
"""Engine backend a stage asks for; ``auto`` picks the best available and reports it."""
