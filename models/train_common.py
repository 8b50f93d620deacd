"""Shared training machinery for every engine: held-out FOV split, progress, checkpoints,
early stopping, provenance.

An engine's trainer supplies ``step(i) -> loss`` and ``validate() -> loss``;
:func:`fit` runs them with a rich progress bar, validates every ``val_every`` steps on
held-out fields of view, keeps the best weights (checkpointed as ``weights.npz`` +
``checkpoint.json``, no pickle), stops early when validation stops improving, and
restores the best weights at the end. With several processes
(:mod:`smartscope.models.distributed`) the training loss is averaged over the ranks,
rank 0's validation loss decides for all, and only rank 0 reports and writes.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from smartscope.base_model import FrozenModel
from smartscope.engines.weights import state_to_npz_bytes
from smartscope.exceptions import InvalidValue
from smartscope.models.distributed import SINGLE, Distributed
from smartscope.models.provenance import command_line

__all__ = [
    "EarlyStopping",
    "FitConfig",
    "FitResult",
    "command_line",
    "fit",
    "percentile_affine",
    "record_results",
    "seed_everything",
    "software_versions",
    "split_fovs",
    "write_checkpoint",
]


class FitConfig(FrozenModel):
    """Optimisation settings shared by engines (defaults: small, CPU-friendly)."""

    steps: int = Field(default=400, ge=1, description="maximum optimiser steps")
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    lr_final_fraction: float = Field(
        default=0.1, gt=0, le=1, description="cosine decay to lr * this by the last step"
    )
    val_every: int = Field(default=50, ge=1, description="validate every N steps")
    patience: int = Field(default=4, ge=1, description="stop after N validations without improvement")
    min_delta: float = Field(default=0.0, ge=0, description="relative improvement that counts")
    seed: int = 0
    device: str = Field(default="cpu", description="cpu, cuda, cuda:0 ...")
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 = torch default")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return the numpy generator all sampling uses."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def split_fovs(n_fovs: int, val_fraction: float, seed: int, min_val: int = 1) -> tuple[list[int], list[int]]:
    """Train / held-out indices over whole fields of view (never interleaved frames).

    A seeded permutation picks ``max(min_val, round(val_fraction * n))`` fields for
    validation; at least one field stays in training.
    """
    if n_fovs < 2:
        raise InvalidValue(f"need >= 2 fields of view to hold one out, got {n_fovs}")
    if not 0 < val_fraction < 1:
        raise InvalidValue(f"val_fraction={val_fraction} must be in (0, 1)")
    n_val = min(n_fovs - 1, max(min_val, round(val_fraction * n_fovs)))
    perm = np.random.default_rng(seed).permutation(n_fovs)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def percentile_affine(
    stacks: list[np.ndarray], low: float = 0.5, high: float = 99.5, min_scale: float = 1e-6
) -> tuple[float, float]:
    """One fixed ``(offset, scale)`` for a data set: its ``low``..``high`` percentiles → 0..1.

    Pooled over every array (each subsampled 2× along the last two axes);
    ``x = (value - offset) / scale``.
    """
    sample = np.concatenate([a[..., ::2, ::2].ravel() for a in stacks])
    lo, hi = np.percentile(sample, [low, high])
    return float(lo), float(max(hi - lo, min_scale))


@dataclass
class EarlyStopping:
    """Tracks the best validation loss; ``update`` returns True when training should stop."""

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    best_step: int = -1
    bad: int = 0

    def update(self, loss: float, step: int) -> bool:
        if loss < self.best * (1 - self.min_delta) or self.best_step < 0:
            self.best, self.best_step, self.bad = loss, step, 0
            return False
        self.bad += 1
        return self.bad >= self.patience


@dataclass
class FitResult:
    best_val: float
    best_step: int
    steps_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)


def write_checkpoint(folder: Path, module: torch.nn.Module, meta: dict[str, Any], tag: str = "") -> Path:
    """``folder/weights{tag}.npz`` + ``folder/checkpoint{tag}.json`` (atomic replace)."""
    folder.mkdir(parents=True, exist_ok=True)
    wname = f"weights{tag}.npz"
    tmp = folder / (wname + ".tmp")
    tmp.write_bytes(state_to_npz_bytes(module))
    tmp.replace(folder / wname)
    doc = dict(meta, weights_file=wname)
    jtmp = folder / f"checkpoint{tag}.json.tmp"
    jtmp.write_text(json.dumps(doc, indent=2, default=str))
    jtmp.replace(folder / f"checkpoint{tag}.json")
    return folder


def fit(
    module: torch.nn.Module,
    step: Callable[[int], float],
    validate: Callable[[], float],
    config: FitConfig,
    *,
    checkpoint_dir: Path | None = None,
    checkpoint_meta: Callable[[], dict[str, Any]] | None = None,
    description: str = "training",
    console: Console | None = None,
    quiet: bool = False,
    dist: Distributed = SINGLE,
) -> FitResult:
    """Run ``step`` up to ``config.steps`` times with validation and early stopping.

    ``step(i)`` does one optimiser step and returns the training loss; ``validate()``
    returns the held-out loss (lower is better) with the module in eval mode. The best
    weights are restored into ``module`` before returning. With ``checkpoint_dir`` the
    loss curve (every validation) is written to ``history.json`` there at the end.
    ``dist``: this process's rank in a data-parallel job (``module`` is the bare network;
    ``step`` trains through its DDP wrapper).
    """
    quiet = quiet or not dist.is_main
    stopper = EarlyStopping(config.patience, config.min_delta)
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    history: list[dict[str, float]] = []
    running: list[float] = []
    stopped = False
    i = 0
    con = console or Console(stderr=True)
    cols = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4g} val {task.fields[val]:.4g}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*cols, console=con, disable=quiet, transient=False) as prog:
        task = prog.add_task(description, total=config.steps, loss=math.nan, val=math.nan)
        for i in range(config.steps):
            module.train()
            running.append(dist.mean(float(step(i))))
            prog.update(task, advance=1, loss=running[-1])
            if (i + 1) % config.val_every != 0 and i + 1 != config.steps:
                continue
            module.eval()
            with torch.no_grad():
                val = dist.from_main(float(validate()))
            if not math.isfinite(val):
                raise FloatingPointError(f"validation loss is {val} at step {i + 1}")
            history.append({"step": float(i + 1), "train_loss": float(np.mean(running)), "val_loss": val})
            running = []
            prog.update(task, val=val)
            if not quiet and not con.is_terminal:  # logs: one line per validation
                con.print(
                    f"{description}: step {i + 1}/{config.steps} "
                    f"train_loss {history[-1]['train_loss']:.5g} val_loss {val:.5g}"
                )
            stop = stopper.update(val, i + 1)
            if stopper.best_step == i + 1:
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                if checkpoint_dir is not None and dist.is_main:
                    meta = checkpoint_meta() if checkpoint_meta else {}
                    meta.update(step=i + 1, val_loss=val, history=history)
                    write_checkpoint(checkpoint_dir, module, meta)
            if stop:
                stopped = True
                break
    module.load_state_dict(best_state)
    module.eval()
    if checkpoint_dir is not None and dist.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        doc = {"world_size": dist.world_size, "batch_size": config.batch_size, "history": history}
        (checkpoint_dir / "history.json").write_text(json.dumps(doc, indent=1))
    return FitResult(stopper.best, stopper.best_step, i + 1, stopped, history)


_TRAINING_CODE = ("models", "simulators", "smartscope/engines", "smartscope/metrics.py")


def _git_commit() -> str:
    """HEAD of this repository (+ "-dirty" if the training code has uncommitted changes)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            # only the code a training run depends on: networks, trainers, simulator, runtime
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", *_TRAINING_CODE],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty else "")


def software_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "smartscope_git": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


def lr_schedule(optimizer: torch.optim.Optimizer, config: FitConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay from ``lr`` to ``lr * lr_final_fraction`` over ``steps``."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.steps, eta_min=config.lr * config.lr_final_fraction
    )


def record_results(
    path: Path,
    fields: dict[str, Any],
    metrics: dict[str, float],
    note: str,
    *,
    as_zip: bool = False,
    **extra: Any,
) -> None:
    """Write the held-out results into an exported bundle's ``engine.json``.

    ``metrics`` (and any ``extra`` manifest fields, e.g. ``calibration``) join the manifest,
    ``note`` is appended to the provenance notes; the ONNX graph and weights are kept as
    exported (their sha256s are re-checked on load).
    """
    from smartscope.engines.bundle import load_bundle, write_bundle

    b = load_bundle(path)
    prov = dict(fields["provenance"])
    prov["notes"] = f"{prov['notes']}; {note}"
    doc = dict(fields, metrics=metrics, provenance=prov, opset=b.manifest.opset, **extra)
    write_bundle(path, doc, b.onnx_bytes, b.weights_bytes, as_zip=as_zip)
