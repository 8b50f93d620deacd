"""``smartscope train denoise --nproc 2``: torch.distributed DDP (gloo) on 2 CPU processes
follows the single-process loss curve at the same seed and global batch.

Stated tolerance: every step's training loss and validation loss within 1e-5 relative
(measured: <= 3e-7; the only difference is the order of floating-point sums).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smartscope.cli import app
from smartscope.engines.bundle import load_bundle
from smartscope.models.distributed import Distributed

TOL = 1e-5
ARGS = [
    "train", "denoise", "--simulate", "lowlight", "--n-fields", "4", "--field-px", "64",
    "--steps", "10", "--batch-size", "8", "--patch-px", "32", "--val-every", "1", "--patience", "100",
    "--depth", "1", "--base-width", "8", "--tile-px", "64", "--overlap-px", "16", "--seed", "3", "--quiet",
]  # fmt: skip


def _history(folder: Path) -> dict:
    return json.loads((folder / "history.json").read_text())


def test_two_processes_follow_the_single_process_loss_curve(tmp_path: Path) -> None:
    one = CliRunner().invoke(
        app, [*ARGS, "--out", str(tmp_path / "b1"), "--checkpoint-dir", str(tmp_path / "c1")]
    )
    assert one.exit_code == 0, one.output
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = ["--out", str(tmp_path / "b2"), "--checkpoint-dir", str(tmp_path / "c2")]
    two = subprocess.run(
        [sys.executable, "-m", "smartscope.cli", *ARGS, "--nproc", "2", *out],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1  # rank 0 alone exports and reports

    h1, h2 = _history(tmp_path / "c1"), _history(tmp_path / "c2")
    assert (h1["world_size"], h2["world_size"], h1["batch_size"], h2["batch_size"]) == (1, 2, 8, 8)
    assert [r["step"] for r in h1["history"]] == [r["step"] for r in h2["history"]] == list(range(1, 11))
    for a, b in zip(h1["history"], h2["history"], strict=True):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=TOL), (a, b)
    losses = [r["train_loss"] for r in h1["history"]]
    assert len(set(losses)) == len(losses)  # a real curve: every step's batch differs

    prov = load_bundle(tmp_path / "b2").manifest.provenance
    assert "--nproc 2" in prov.command


def test_global_batch_must_split_evenly() -> None:
    assert [Distributed(r, 4).shard(16) for r in range(4)] == [
        slice(0, 4),
        slice(4, 8),
        slice(8, 12),
        slice(12, 16),
    ]
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        Distributed(0, 3).shard(16)
    res = CliRunner().invoke(app, [*ARGS, "--out", "unused", "--nproc", "3"])
    assert res.exit_code == 2 and "does not split evenly over 3 processes" in res.output
