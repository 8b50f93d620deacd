"""Engine runtime: verified bundles, TensorRT / torch / ONNX Runtime backends, tiling.

The pipeline stage that runs an engine on live frames is :mod:`smartscope.engines.stage`.
"""

from smartscope.engines.backends import available_backends, create_backend, select_backend
from smartscope.engines.bundle import (
    Bundle,
    BundleError,
    EngineManifest,
    find_bundles,
    load_bundle,
    write_bundle,
)
from smartscope.engines.runtime import Engine

__all__ = [
    "Bundle",
    "BundleError",
    "Engine",
    "EngineManifest",
    "available_backends",
    "create_backend",
    "find_bundles",
    "load_bundle",
    "select_backend",
    "write_bundle",
]
