"""``--cluster``: where the chunks of an offline command run.

=================  ======================================================================
``none``           in this process, without Dask (the default for one input, one worker)
``local``          a Dask LocalCluster on this machine: ``--workers`` single-threaded
                   worker processes (default: one per core, or one per GPU with ``--gpu``);
                   the default when more than one input or worker is asked
``local:N``        the same with N worker processes
``tcp://host:8786`` an existing Dask scheduler (any address with ``://``); its workers must
                   see the inputs and the output folder at the same paths
``slurm[:N]``      N SLURM jobs (default ``--workers`` or 1) started by dask-jobqueue; queue,
                   account, cores, memory and walltime come from Dask's configuration
                   (``~/.config/dask/jobqueue.yaml``, section ``jobqueue.slurm``)
=================  ======================================================================

GPU workers are declared with Dask resources: with ``--gpu`` every chunk asks for
``GPU=1``; local workers each declare one GPU and see only theirs (``CUDA_VISIBLE_DEVICES``
set per worker before anything touches CUDA); SLURM jobs ask for ``--gres=gpu:1`` and
declare ``GPU=1``; on an existing cluster, start GPU workers with ``--resources GPU=1``
(checked before anything is submitted).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from smartscope.exceptions import UserError

__all__ = ["ClusterError", "ClusterSpec", "connect", "gpu_count", "parse_cluster"]

GPU_RESOURCE = "GPU"


class ClusterError(UserError, ValueError):
    """A ``--cluster`` that cannot be used; the message says why."""


@dataclass(frozen=True)
class ClusterSpec:
    kind: Literal["none", "local", "address", "slurm"]
    workers: int = 1
    address: str | None = None

    @property
    def distributed(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        if self.kind == "none":
            return "this process"
        if self.kind == "local":
            return f"a local Dask cluster of {self.workers} worker process(es)"
        if self.kind == "address":
            return f"the Dask scheduler at {self.address}"
        return f"{self.workers} SLURM job(s) via dask-jobqueue"


def gpu_count() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch comes with the ml extra
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def parse_cluster(text: str | None, *, workers: int | None, n_inputs: int, gpu: bool = False) -> ClusterSpec:
    """The cluster a command asked for (``text`` is ``--cluster``; None when not given)."""
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers must be >= 1, got {workers}")
    default_local = gpu_count() if gpu else (os.cpu_count() or 1)
    if text is None:
        if n_inputs > 1 or (workers or 1) > 1:
            return ClusterSpec("local", workers or max(1, default_local))
        return ClusterSpec("none")
    t = text.strip()
    if t == "none":
        if (workers or 1) > 1:
            raise ClusterError(f"--workers {workers} needs a cluster; --cluster none runs in this process")
        return ClusterSpec("none")
    if "://" in t:
        return ClusterSpec("address", workers or 1, t)
    kind, _, count = t.partition(":")
    if kind not in ("local", "slurm"):
        raise ClusterError(
            f"--cluster {text!r}: expected none, local, local:N, slurm, slurm:N or a scheduler "
            "address such as tcp://host:8786"
        )
    n = workers
    if count:
        try:
            n = int(count)
        except ValueError:
            raise ClusterError(f"--cluster {text!r}: {count!r} is not a number of workers") from None
        if n < 1:
            raise ClusterError(f"--cluster {text!r}: the number of workers must be >= 1")
        if workers is not None and workers != n:
            raise ClusterError(f"--cluster {text!r} and --workers {workers} disagree")
    if kind == "local":
        if gpu and default_local == 0:
            raise ClusterError("--gpu: no CUDA GPU is visible on this machine for local workers")
        return ClusterSpec("local", n or max(1, default_local))
    return ClusterSpec("slurm", n or 1)


def _pin_gpu_plugin(n_gpus: int) -> Any:
    """Worker plugin: local worker ``k`` sees only GPU ``k mod n`` (set before CUDA starts)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class PinGPU(WorkerPlugin):
        idempotent = True
        name = "smartscope-pin-gpu"

        def setup(self, worker: Any) -> None:
            try:
                k = int(worker.name)
            except (TypeError, ValueError):
                return
            os.environ["CUDA_VISIBLE_DEVICES"] = str(k % n_gpus)

    return PinGPU()


def _slurm_cluster(spec: ClusterSpec, gpu: bool) -> Any:
    try:
        from dask_jobqueue.slurm import SLURMCluster
    except ImportError as exc:
        raise ClusterError("--cluster slurm needs dask-jobqueue: pip install 'smartscope[cluster]'") from exc
    kwargs: dict[str, Any] = {}
    if gpu:  # one worker process per job, owning the job's one GPU
        kwargs["processes"] = 1
        kwargs["job_extra_directives"] = ["--gres=gpu:1"]
        kwargs["worker_extra_args"] = ["--resources", f"{GPU_RESOURCE}=1"]
    try:
        return SLURMCluster(**kwargs)
    except ValueError as exc:
        raise ClusterError(
            f"--cluster slurm: {exc} (set jobqueue.slurm cores, memory, queue, account and walltime "
            "in ~/.config/dask/jobqueue.yaml)"
        ) from exc


def _check_gpu_workers(client: Any) -> None:
    workers = client.scheduler_info()["workers"].values()
    if not any(w.get("resources", {}).get(GPU_RESOURCE, 0) >= 1 for w in workers):
        raise ClusterError(
            f"--gpu: no worker of {client.scheduler.address} declares the {GPU_RESOURCE} resource; "
            f"start GPU workers with `dask worker ... --resources {GPU_RESOURCE}=1`"
        )


@contextmanager
def connect(spec: ClusterSpec, *, gpu: bool = False, wait_s: float = 60.0) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster ``spec`` names; closes what it started."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ClusterError(
            f"--cluster {spec.kind}: Dask is not installed: pip install 'smartscope[cluster]'"
        ) from exc
    if spec.kind == "none":
        raise ClusterError("connect() needs a cluster; --cluster none runs in this process")
    if spec.kind == "local":
        n_gpus = gpu_count() if gpu else 0
        with (
            LocalCluster(
                n_workers=spec.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
                resources={GPU_RESOURCE: 1} if gpu else None,
            ) as cluster,
            Client(cluster) as client,
        ):
            if gpu:
                client.register_plugin(_pin_gpu_plugin(n_gpus))
            yield client
        return
    if spec.kind == "address":
        try:
            client = Client(spec.address, timeout=f"{wait_s}s")
        except OSError as exc:
            raise ClusterError(f"--cluster {spec.address}: cannot reach the scheduler ({exc})") from exc
        try:
            try:
                client.wait_for_workers(1, timeout=wait_s)
            except TimeoutError as exc:
                raise ClusterError(f"--cluster {spec.address}: no worker joined in {wait_s:.0f} s") from exc
            if gpu:
                _check_gpu_workers(client)
            yield client
        finally:
            client.close()
        return
    with _slurm_cluster(spec, gpu) as cluster, Client(cluster) as client:
        cluster.scale(jobs=spec.workers)
        client.wait_for_workers(1, timeout=None)
        yield client


def worker_threads(spec: ClusterSpec) -> int:
    """CPU threads each worker's engine should use (0: the library's default).

    Local workers share this machine's cores; on other machines a worker process is
    assumed to own its cores.
    """
    if spec.kind == "local":
        return max(1, (os.cpu_count() or 1) // spec.workers)
    return 0
