"""What each output channel of the SMLM network (``smlm_decode``) holds, in order.

The network (:mod:`smartscope.engines.networks.smlm`) writes this layout and the decoder
(:mod:`smartscope.models.smlm.decode`) reads it; this module imports no torch, so an
inference-only install decodes the ONNX graph's output with it.
"""

from __future__ import annotations

__all__ = ["OUTPUT_CHANNELS", "OUTPUT_CHANNELS_3D"]

OUTPUT_CHANNELS: tuple[str, ...] = ("prob", "dx", "dy", "photons", "bg", "sx", "sy", "sphot")
"""A 2-D network's channels."""

OUTPUT_CHANNELS_3D: tuple[str, ...] = (*OUTPUT_CHANNELS, "z", "sz")
"""A 3-D network's channels: a 2-D one's, then the height above focus and its uncertainty."""
