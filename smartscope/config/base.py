"""What every configuration model shares: the project's one frozen base (re-exported from
:mod:`smartscope.base_model`) and the engine backend choice."""

from __future__ import annotations

from typing import Literal

from smartscope.base_model import FrozenModel

__all__ = ["BackendChoice", "FrozenModel"]


BackendChoice = Literal["auto", "tensorrt", "torch", "onnxruntime"]
"""Engine backend a stage asks for; ``auto`` picks the best available and reports it."""
