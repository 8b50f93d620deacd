"""The one interface every inference backend implements."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np

from smartscope.exceptions import UserError

__all__ = ["Backend", "BackendName", "BackendUnavailable", "Precision"]

BackendName = Literal["tensorrt", "torch", "onnxruntime"]
Precision = Literal["fp32", "fp16", "bf16"]


class BackendUnavailable(UserError, RuntimeError):
    """The requested backend cannot run here (package missing, no GPU, no weights)."""


@runtime_checkable
class Backend(Protocol):
    """Runs one engine on ``(N, C, H, W)`` float32 host arrays.

    ``run`` includes host->device and device->host transfers, so its latency is what a
    pipeline stage pays. Outputs are float32 host arrays keyed by the manifest's names.
    """

    name: BackendName
    device: str
    precision: Precision

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...
