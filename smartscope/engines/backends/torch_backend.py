"""torch backend: the network rebuilt from :mod:`smartscope.engines.networks` + the bundle's
``weights.npz``.

Why not run the ONNX graph in torch: there is no maintained ONNX->torch converter in this
environment, and the FP32 torch module is the reference every backend is checked
against. The bundle therefore carries the architecture name and parameters plus the
weights as a plain ``.npz`` (loaded with ``allow_pickle=False``), and this backend
rebuilds the module from the architectures in :mod:`smartscope.engines.networks`. On CUDA it runs FP16/BF16 in
``channels_last``, optionally through ``torch.compile`` and a captured CUDA graph per
input shape; on CPU it runs FP32 eager (or compiled).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from smartscope.engines.backends.base import BackendName, BackendUnavailable, Precision
from smartscope.engines.bundle import Bundle

__all__ = ["TorchBackend", "build_torch_module"]

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def build_torch_module(bundle: Bundle) -> torch.nn.Module:
    """The FP32 reference module of ``bundle`` (eval mode, on CPU)."""
    from smartscope.engines.networks import build_network
    from smartscope.engines.weights import state_from_npz_bytes

    arch = bundle.manifest.architecture
    if arch is None or bundle.weights_bytes is None:
        raise BackendUnavailable(
            f"{bundle.source}: engine.json has no 'architecture' block; the torch backend "
            "needs the network name and weights.npz (use onnxruntime or tensorrt)"
        )
    module = build_network(arch.name, arch.params)
    state = state_from_npz_bytes(bundle.weights_bytes, source=f"{bundle.source}/{arch.weights_file}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackendUnavailable(
            f"{bundle.source}/{arch.weights_file}: weights do not match {arch.name} {arch.params}: {exc}"
        ) from exc
    return module.eval()


class _GraphRunner:
    """One captured CUDA graph for one input shape (static input/output buffers)."""

    def __init__(self, fn: torch.nn.Module, example: torch.Tensor) -> None:
        self.static_in = example.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm up (cudnn autotune, lazy init) outside the graph
                fn(self.static_in)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            out = fn(self.static_in)
        self.static_out: tuple[torch.Tensor, ...] = out if isinstance(out, tuple) else (out,)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


class TorchBackend:
    name: BackendName = "torch"

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "cpu",
        precision: Precision = "fp32",
        compile_mode: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none",
        cuda_graphs: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"torch backend: device {device!r} requested but CUDA is unavailable")
        if dev.type == "cpu" and precision == "fp16":
            raise BackendUnavailable("torch backend: fp16 is GPU-only here; use fp32 or bf16 on CPU")
        if cuda_graphs and dev.type != "cuda":
            raise BackendUnavailable("torch backend: cuda_graphs needs a CUDA device")
        self.device = str(dev)
        self.precision: Precision = precision
        self._dtype = _DTYPES[precision]
        self._channels_last = dev.type == "cuda" if channels_last is None else channels_last
        module = build_torch_module(bundle).to(device=dev, dtype=self._dtype)
        if self._channels_last:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._module = module
        self._fn: torch.nn.Module = module
        if compile_mode != "none":
            self._fn = torch.compile(module, mode=compile_mode, dynamic=False)  # type: ignore[assignment]
        self._cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, ...], _GraphRunner] = {}
        self._outputs = [t.name for t in bundle.manifest.outputs]
        self._compile_mode = compile_mode

    def run_tensor(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Device-resident path: ``x`` already on this backend's device; outputs stay there.

        With ``cuda_graphs`` the returned tensors are the graph's static output buffers:
        the next call overwrites them, so copy what must outlive it.
        """
        x = x.to(device=self.device, dtype=self._dtype, non_blocking=True)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._cuda_graphs:
            key = tuple(x.shape)
            runner = self._graphs.get(key)
            if runner is None:
                runner = self._graphs[key] = _GraphRunner(self._fn, x)
            outs = runner(x)
        else:
            with torch.inference_mode():
                res = self._fn(x)
            outs = res if isinstance(res, tuple) else (res,)
        if len(outs) != len(self._outputs):
            raise RuntimeError(f"network returned {len(outs)} outputs, manifest declares {self._outputs}")
        return dict(zip(self._outputs, outs, strict=True))

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.device.startswith("cuda"):
            t = t.pin_memory()
        outs = self.run_tensor(t)
        return {k: v.float().cpu().numpy() for k, v in outs.items()}  # .cpu() synchronises

    def describe(self) -> str:
        extra = []
        if self._channels_last:
            extra.append("channels_last")
        if self._compile_mode != "none":
            extra.append(f"torch.compile({self._compile_mode})")
        if self._cuda_graphs:
            extra.append("CUDA graphs")
        name = torch.cuda.get_device_name(self.device) if self.device.startswith("cuda") else "cpu"
        tail = f" [{', '.join(extra)}]" if extra else ""
        return f"torch {torch.__version__} {self.precision} on {self.device} ({name}){tail}"

    def close(self) -> None:
        self._graphs.clear()
