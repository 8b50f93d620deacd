"""Inference backends behind one interface, and ``auto`` selection.

``auto`` order: TensorRT (importable + CUDA GPU) -> torch on CUDA (FP16) -> ONNX Runtime
on CPU -> torch on CPU. ONNX Runtime precedes eager torch on CPU because it is faster
there (see ``bench/engines.py``). The chosen backend's ``describe()`` says what ran.
"""

from __future__ import annotations

import logging
from typing import Any

from smartscope.config.base import BackendChoice
from smartscope.engines.backends.base import Backend, BackendName, BackendUnavailable, Precision
from smartscope.engines.bundle import Bundle
from smartscope.exceptions import InvalidValue

__all__ = [
    "Backend",
    "BackendChoice",
    "BackendName",
    "BackendUnavailable",
    "Precision",
    "available_backends",
    "create_backend",
    "select_backend",
    "set_cpu_threads",
]

log = logging.getLogger(__name__)


_CPU_THREADS = 0  # 0: each library's default (all cores)


def set_cpu_threads(n: int) -> None:
    """CPU threads of the backends this process creates from now on (0: library default).

    A process that shares the machine's cores with others (a local Dask worker) sets its
    share, so that N workers do not each start a thread per core.
    """
    global _CPU_THREADS
    if n < 0:
        raise InvalidValue(f"cpu threads must be >= 0, got {n}")
    _CPU_THREADS = n


def _cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def available_backends() -> dict[str, str]:
    """Backend name -> why it is (un)available here, prefixed ``ok:`` or ``no:``."""
    from smartscope.engines.backends.tensorrt_backend import tensorrt_available

    out: dict[str, str] = {}
    ok, why = tensorrt_available()
    out["tensorrt"] = ("ok: " if ok else "no: ") + why
    try:
        import torch

        out["torch"] = f"ok: torch {torch.__version__}, " + ("CUDA" if _cuda() else "CPU only")
    except ImportError:  # pragma: no cover
        out["torch"] = "no: torch is not installed"
    try:
        import onnxruntime as ort

        out["onnxruntime"] = f"ok: onnxruntime {ort.__version__} {ort.get_available_providers()}"
    except ImportError:  # pragma: no cover
        out["onnxruntime"] = "no: onnxruntime is not installed"
    return out


def create_backend(
    bundle: Bundle,
    name: BackendName,
    *,
    device: str | None = None,
    precision: Precision | None = None,
    **options: Any,
) -> Backend:
    """Instantiate one named backend; raises :class:`BackendUnavailable` with the reason."""
    if name == "tensorrt":
        from smartscope.engines.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(bundle, device=device or "cuda:0", precision=precision or "fp16", **options)
    if name == "torch":
        from smartscope.engines.backends.torch_backend import TorchBackend

        dev = device or ("cuda:0" if _cuda() else "cpu")
        prec: Precision = precision or ("fp16" if dev.startswith("cuda") else "fp32")
        if _CPU_THREADS and not dev.startswith("cuda"):
            import torch

            torch.set_num_threads(_CPU_THREADS)
        return TorchBackend(bundle, device=dev, precision=prec, **options)
    if name == "onnxruntime":
        from smartscope.engines.backends.onnxruntime_backend import OnnxRuntimeBackend

        if _CPU_THREADS:
            options.setdefault("intra_op_threads", _CPU_THREADS)
        return OnnxRuntimeBackend(bundle, device=device or "cpu", precision=precision or "fp32", **options)
    raise InvalidValue(f"unknown backend {name!r}; choose auto, tensorrt, torch or onnxruntime")


def select_backend(
    bundle: Bundle,
    choice: BackendChoice = "auto",
    *,
    device: str | None = None,
    precision: Precision | None = None,
    **options: Any,
) -> Backend:
    """The requested backend, or for ``auto`` the best one that starts here.

    ``auto`` logs (INFO) which backend it picked and why the better ones were skipped.
    """
    if choice != "auto":
        return create_backend(bundle, choice, device=device, precision=precision, **options)
    order: list[tuple[BackendName, str | None]] = []
    if _cuda():
        order += [("tensorrt", device), ("torch", device)]
    order += [("onnxruntime", "cpu"), ("torch", "cpu")]
    skipped: list[str] = []
    for name, dev in order:
        try:
            be = create_backend(
                bundle, name, device=dev, precision=precision if name != "onnxruntime" else None
            )
        except (BackendUnavailable, ImportError) as exc:
            skipped.append(f"{name}: {exc}")
            continue
        log.info("backend auto -> %s%s", be.describe(), f" (skipped {skipped})" if skipped else "")
        return be
    hint = ""
    if any(s.startswith("onnxruntime:") and "No module named" in s for s in skipped):
        from smartscope.extras import needs_extra

        hint = f"; {needs_extra('inference', 'running engines')}"
    raise BackendUnavailable(f"no backend can run {bundle.source}: {skipped}{hint}")
