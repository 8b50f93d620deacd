"""ONNX Runtime backend: the CPU workhorse (and CUDA EP when onnxruntime-gpu is present)."""

from __future__ import annotations

import numpy as np

from smartscope.engines.backends.base import BackendName, BackendUnavailable, Precision
from smartscope.engines.bundle import Bundle

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend:
    name: BackendName = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "cpu",
        precision: Precision = "fp32",
        intra_op_threads: int = 0,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - ort is a dependency of [ml]
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from exc
        if precision != "fp32":
            raise BackendUnavailable(
                f"onnxruntime backend runs the FP32 graph only, precision={precision!r} requested"
            )
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider here")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads > 0:
            opts.intra_op_num_threads = intra_op_threads
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(bundle.onnx_bytes, sess_options=opts, providers=providers)
        self._input = bundle.manifest.inputs[0].name
        self._outputs = [t.name for t in bundle.manifest.outputs]
        self.device = device
        self.precision: Precision = "fp32"

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        arr = np.ascontiguousarray(x, dtype=np.float32)
        res = self._session.run(self._outputs, {self._input: arr})
        return {n: np.asarray(r, dtype=np.float32) for n, r in zip(self._outputs, res, strict=True)}

    def describe(self) -> str:
        prov = self._session.get_providers()[0]
        return f"onnxruntime {self.precision} on {self.device} ({prov})"

    def close(self) -> None:
        pass
