"""TensorRT 10 backend: an FP16 engine built from the bundle's ONNX, cached on disk.

Build: ``trt.Builder`` -> network from ``trt.OnnxParser`` -> builder config with
``BuilderFlag.FP16``, one optimization profile with min/opt/max H and W, and a timing
cache file shared by all builds on this machine. The serialized plan is cached under a
key made of the GPU name, its compute capability, the TensorRT version, the precision,
the profile and the ONNX sha256, so a plan is never reused on another GPU or TensorRT.

Run: inputs and outputs are torch CUDA tensors; their ``data_ptr()`` is handed to
``IExecutionContext.set_tensor_address`` and ``execute_async_v3`` runs on torch's current
stream, so device buffers are shared with torch (no copies beyond host<->device).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.engines.backends.base import BackendName, BackendUnavailable, Precision
from smartscope.engines.bundle import Bundle

__all__ = ["TensorRTBackend", "default_cache_dir", "tensorrt_available"]


def default_cache_dir() -> Path:
    env = os.environ.get("SMARTSCOPE_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "smartscope" / "tensorrt"


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT importable and a CUDA GPU visible to torch."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "tensorrt is not installed"
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False, "torch is not installed (TensorRT buffers are torch CUDA tensors)"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible"
    return True, f"TensorRT {trt.__version__}"


class TensorRTBackend:
    name: BackendName = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "cuda:0",
        precision: Precision = "fp16",
        min_hw: int | None = None,
        opt_hw: int | None = None,
        max_hw: int = 2048,
        max_batch: int = 8,
        opt_batch: int = 1,
        workspace_mib: int = 2048,
        cache_dir: str | Path | None = None,
    ) -> None:
        ok, why = tensorrt_available()
        if not ok:
            raise BackendUnavailable(f"tensorrt backend: {why}")
        if precision == "bf16":
            raise BackendUnavailable("tensorrt backend: use fp16 or fp32")
        import tensorrt as trt
        import torch

        self._trt = trt
        self._torch = torch
        self.device = device
        self.precision: Precision = precision
        man = bundle.manifest
        if len(man.inputs) != 1:
            raise BackendUnavailable("tensorrt backend: engines with one input tensor only")
        mult = man.tile.multiple_px
        self._in_name = man.inputs[0].name
        self._in_ch = man.inputs[0].n_channels
        self._out_names = [t.name for t in man.outputs]
        lo = min_hw if min_hw is not None else mult
        opt = opt_hw if opt_hw is not None else man.tile.size_px
        self.profile_hw = (lo, opt, max_hw)
        self.profile_batch = (1, opt_batch, max_batch)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        with torch.cuda.device(device):
            plan = self._load_or_build(bundle, workspace_mib)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise BackendUnavailable(f"tensorrt backend: could not deserialize {self.plan_path}")
            self._context = self._engine.create_execution_context()

    # -- build -------------------------------------------------------------------------
    def cache_key(self, bundle: Bundle) -> str:
        torch = self._torch
        props = torch.cuda.get_device_properties(self.device)
        raw = "|".join(
            [
                props.name,
                f"sm{props.major}{props.minor}",
                f"trt{self._trt.__version__}",
                self.precision,
                f"hw{self.profile_hw}",
                f"n{self.profile_batch}",
                bundle.onnx_sha256,
            ]
        )
        gpu = "".join(c if c.isalnum() else "-" for c in props.name)
        return (
            f"{bundle.manifest.name}-{gpu}-sm{props.major}{props.minor}-trt{self._trt.__version__}-"
            + (hashlib.sha256(raw.encode()).hexdigest()[:16])
        )

    def _load_or_build(self, bundle: Bundle, workspace_mib: int) -> bytes:
        key = self.cache_key(bundle)
        self.plan_path = self._cache_dir / f"{key}.plan"
        if self.plan_path.is_file():
            self.plan_from_cache = True
            return self.plan_path.read_bytes()
        self.plan_from_cache = False
        plan = self.build_plan(bundle, workspace_mib)
        tmp = self.plan_path.with_suffix(".tmp")
        tmp.write_bytes(plan)
        tmp.replace(self.plan_path)
        return plan

    def build_plan(self, bundle: Bundle, workspace_mib: int = 2048) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TRT 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(bundle.onnx_bytes):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"tensorrt: ONNX parse failed for {bundle.source}: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        cache_file = self._cache_dir / "timing.cache"
        cache_blob = cache_file.read_bytes() if cache_file.is_file() else b""
        timing_cache = config.create_timing_cache(cache_blob)
        config.set_timing_cache(timing_cache, False)  # ignore_mismatch=False
        lo, opt, hi = self.profile_hw
        nlo, nopt, nhi = self.profile_batch
        c = self._in_ch
        profile = builder.create_optimization_profile()
        profile.set_shape(self._in_name, (nlo, c, lo, lo), (nopt, c, opt, opt), (nhi, c, hi, hi))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailable(f"tensorrt: engine build failed for {bundle.source}")
        cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)

    # -- run ---------------------------------------------------------------------------
    def run_tensor(self, x: Any) -> dict[str, Any]:
        """``x``: a torch CUDA tensor (N, C, H, W); returns torch CUDA float32 tensors."""
        torch = self._torch
        x = x.to(device=self.device, dtype=torch.float32).contiguous()
        n, _, h, w = x.shape
        lo, _, hi = self.profile_hw
        if not (lo <= h <= hi and lo <= w <= hi and n <= self.profile_batch[2]):
            raise ValueError(
                f"tensorrt: input {tuple(x.shape)} outside the optimization profile "
                f"H,W in [{lo}, {hi}], N <= {self.profile_batch[2]}"
            )
        ctx = self._context
        ctx.set_input_shape(self._in_name, tuple(x.shape))
        ctx.set_tensor_address(self._in_name, x.data_ptr())
        outs: dict[str, Any] = {}
        for name in self._out_names:
            shape = tuple(ctx.get_tensor_shape(name))
            t = torch.empty(shape, dtype=torch.float32, device=self.device)
            ctx.set_tensor_address(name, t.data_ptr())
            outs[name] = t
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("tensorrt: execute_async_v3 failed")
        return outs

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).pin_memory()
        outs = self.run_tensor(t.to(self.device, non_blocking=True))
        return {k: v.cpu().numpy() for k, v in outs.items()}

    def describe(self) -> str:
        name = self._torch.cuda.get_device_name(self.device)
        src = "cached plan" if getattr(self, "plan_from_cache", False) else "built plan"
        return f"TensorRT {self._trt.__version__} {self.precision} on {self.device} ({name}, {src})"

    def close(self) -> None:
        self._context = None
        self._engine = None
