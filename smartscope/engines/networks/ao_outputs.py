"""What the aberration estimator (``zernike_cnn``) returns: one amplitude per Noll mode.

The network (:mod:`smartscope.engines.networks.ao`) has one output channel per mode here;
training and the learned AO stage (:mod:`smartscope.models.ao`) read the same modes. This
module imports no torch, so an inference-only install runs the stage with it.
"""

from __future__ import annotations

__all__ = ["MODES"]

MODES = (4, 5, 6, 7, 8, 9, 10, 11)
"""Noll indices of the estimated Zernike modes, in output-channel order (rad RMS)."""
