"""The aberration estimator's network: five 3×3 convolutions (three of stride 2) and a final
4×4 convolution, giving a (N, 8, 1, 1) map of Noll 4…11 amplitudes for a 3×32×32 crop — a
plain NCHW engine bundle (ONNX), run with the bundle's backend on the crop batch.
"""

from __future__ import annotations

from typing import Any

from smartscope.models.ao.data import MODES

__all__ = ["build_net"]


def build_net(width: int = 32) -> Any:
    import torch
    from torch import nn

    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1, stride=2),  # 16
        nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2),  # 8
        nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2),  # 4
        nn.ReLU(),
        nn.Conv2d(2 * w, len(MODES), 4),  # 1×1 for a 32×32 crop
    ).to(torch.float32)
