"""Engine runtime: verified bundles, TensorRT / torch / ONNX Runtime backends, tiling,
and the pipeline stage that runs an engine on live frames."""

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
from smartscope.engines.stage import EngineStage, EngineStageConfig

__all__ = [
    "Bundle",
    "BundleError",
    "Engine",
    "EngineManifest",
    "EngineStage",
    "EngineStageConfig",
    "available_backends",
    "create_backend",
    "find_bundles",
    "load_bundle",
    "select_backend",
    "write_bundle",
]
