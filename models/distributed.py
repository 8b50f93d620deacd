"""Training on several processes: torch.distributed data parallel (DDP) for the trainers.

``smartscope train <engine> ... --nproc N`` re-runs the same command under torchrun
(``torch.distributed.run``) with N processes; each joins the process group (gloo on
CPU, NCCL on CUDA, one GPU per process) and trains a replica of the network.

Invariants:

* every rank draws the same global batch from the same seeded generators and trains on
  its own contiguous slice of it (:meth:`Distributed.shard`); DDP averages the gradients,
  so with equal slices and mean losses a step is the single-process step on the whole
  batch (``--batch-size`` is the global batch) up to floating-point summation order;
* validation runs on every rank on the same held-out patches, and rank 0's value is the
  one every rank uses, so all ranks stop at the same step;
* only rank 0 writes: progress, checkpoints, the bundle and its held-out metrics.

Kept free of a top-level torch import so the CLI starts fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smartscope.exceptions import InvalidValue

__all__ = ["SINGLE", "Distributed", "init_distributed", "launch", "launched"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel job (rank 0 of 1 when training alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of a global batch of ``n`` items."""
        if n % self.world_size:
            raise InvalidValue(f"batch size {n} does not split evenly over {self.world_size} processes")
        k = n // self.world_size
        return slice(self.rank * k, (self.rank + 1) * k)

    def wrap(self, module: Any) -> Any:
        """``module`` in DDP when active (gradients averaged across ranks), else as is."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        dev = next(module.parameters()).device
        ids = [dev.index if dev.index is not None else self.local_rank] if dev.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks."""
        if not self.active:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.broadcast(t, src=0)
        return float(t.item())

    def _device(self) -> Any:
        import torch
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                # every rank reaches here before any tears down: gloo aborts a rank whose
                # peer closes its connections mid-exchange ("terminate called ...")
                dist.barrier()
                dist.destroy_process_group()


SINGLE = Distributed()


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its env)."""
    return all(k in os.environ for k in _ENV)


def init_distributed(device: str) -> tuple[Distributed, str]:
    """Join the job this process was launched into, if any; returns it and this rank's device.

    gloo on CPU, NCCL on CUDA; on CUDA each rank takes GPU ``LOCAL_RANK``.
    """
    if not launched() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE, device
    import torch
    import torch.distributed as dist

    ctx = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(ctx.local_rank)
        device = f"cuda:{ctx.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return ctx, device


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``smartscope <args>`` as ``nproc`` processes on this machine; 0 when all succeed.

    torchrun's own launcher (``torch.distributed.launcher``, as ``torchrun --standalone``:
    a c10d rendezvous on a free port, no restarts), called directly so that the command's
    options never meet torchrun's argument parser. On a cluster run ``torchrun --nnodes ...
    -m smartscope.cli <args>`` yourself: the command joins whatever job its environment
    describes.
    """
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise InvalidValue(f"--nproc must be >= 1, got {nproc}")
    # each process gets its share of the cores (torchrun sets 1 thread per process)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "smartscope.cli", *args)
    except ChildFailedError as exc:
        print(f"error: training process failed: {exc}", file=sys.stderr)
        return 1
    return 0
