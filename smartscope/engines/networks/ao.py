"""The aberration estimator's network (``zernike_cnn``): Noll 4…11 amplitudes from one
bead's window (``in_channels`` × ``crop_px``²) — a plain NCHW engine bundle (ONNX), run on
the bead batch.

Three stages of two 3×3 convolutions with batch norm (the second of each of stride 2:
24 → 12 → 6 → 3 px), a convolution over what is left and a 1×1 head: a (N, 8, 1, 1)
map, one channel per mode of :data:`~smartscope.engines.networks.ao_outputs.MODES`. The
architecture is registered, so a bundle's ``architecture`` block (``width``,
``in_channels``, ``crop_px``) rebuilds the torch module for the torch backend.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from smartscope.engines.networks import NETWORKS, register_network
from smartscope.engines.networks.ao_outputs import MODES

__all__ = ["ARCHITECTURE", "build_net"]

ARCHITECTURE = "zernike_cnn"


def _stage(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


def build_net(width: int, in_channels: int, crop_px: int) -> nn.Sequential:
    """The network for ``width`` (first stage's channels; then 2× and 4×), ``in_channels``
    images per bead and windows of ``crop_px``²."""
    w = width
    left = crop_px
    for _ in range(3):
        left = (left - 1) // 2 + 1
    return nn.Sequential(
        *_stage(in_channels, w),
        *_stage(w, 2 * w),
        *_stage(2 * w, 4 * w),
        nn.Conv2d(4 * w, 4 * w, left),  # 1×1 output
        nn.ReLU(),
        nn.Conv2d(4 * w, len(MODES), 1),
    )


def _factory(params: dict[str, Any]) -> nn.Module:
    return build_net(**params)


if ARCHITECTURE not in NETWORKS:
    register_network(ARCHITECTURE, _factory)
