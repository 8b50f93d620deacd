"""The network architectures the engine runtime rebuilds, by name: the registry.

An engine bundle's ``architecture`` block stores a name and its parameters next to the
weights (``weights.npz``, :mod:`smartscope.engines.weights`), so the torch backend and
``smartscope export`` rebuild the exact module without unpickling anything. Each
architecture module of this package registers its name when imported; :func:`build_network`
imports the module that provides a name on first use. Training (``smartscope.models``)
builds the same modules from here.

This module imports no torch: a bundle run by ONNX Runtime or TensorRT never needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["NETWORKS", "build_network", "register_network"]

NETWORKS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}
"""Architecture name -> factory(params), filled as the architecture modules are imported."""

# architecture name -> the module that registers it
_PROVIDERS = {
    "unet2d": "smartscope.engines.networks.unet",
    "denoise_fast": "smartscope.engines.networks.denoise",
    "smlm_decode": "smartscope.engines.networks.smlm",
    "zernike_cnn": "smartscope.engines.networks.ao",
    "stain_generator": "smartscope.engines.networks.stain",
}


def register_network(name: str, factory: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Make ``name`` buildable from a bundle (each architecture module calls this at import)."""
    if name in NETWORKS and NETWORKS[name] is not factory:
        raise ValueError(f"network {name!r} is already registered")
    NETWORKS[name] = factory


def build_network(name: str, params: dict[str, Any]) -> nn.Module:
    """Rebuild the module an engine bundle describes; unknown names fail clearly."""
    if name not in NETWORKS and name in _PROVIDERS:
        importlib.import_module(_PROVIDERS[name])
    try:
        factory = NETWORKS[name]
    except KeyError:
        known = sorted({*NETWORKS, *_PROVIDERS})
        raise ValueError(f"unknown network architecture {name!r}; known: {known}") from None
    return factory(dict(params))
