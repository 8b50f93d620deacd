"""Training of the learned aberration estimator into an engine bundle; held-out aberrations
come from other seeds and the manifest records the held-out RMS error (median over beads,
as the estimator uses it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.models.ao.data import CROP_PX, DIVERSITY_RAD, MODES, simulate_set
from smartscope.models.ao.network import build_net

__all__ = ["train_bundle"]


def train_bundle(
    out: Path,
    n_train: int = 600,
    n_val: int = 100,
    epochs: int = 30,
    seed: int = 0,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Simulate, train, export a bundle at ``out``; returns held-out metrics."""
    import torch

    from smartscope.engines.export import export_bundle
    from smartscope.models.train_common import seed_everything, software_versions

    seed_everything(seed)
    t0 = time.perf_counter()
    x_tr, y_tr = simulate_set(n_train, seed=seed + 1)
    x_va, y_va = simulate_set(n_val, seed=seed + 100_001)
    log(f"simulated {len(x_tr)} train / {len(x_va)} held-out bead crops in {time.perf_counter() - t0:.0f} s")
    net = build_net()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    xv, yv = torch.from_numpy(x_va), torch.from_numpy(y_va)
    gen = torch.Generator().manual_seed(seed)
    best: tuple[float, dict[str, Any] | None] = (math.inf, None)
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 128):
            b = perm[i : i + 128]
            loss = torch.mean((net(xt[b])[:, :, 0, 0] - yt[b]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            err = float(torch.sqrt(torch.mean(torch.sum((net(xv)[:, :, 0, 0] - yv) ** 2, dim=1))))
        if err < best[0]:
            best = (err, {k: v.clone() for k, v in net.state_dict().items()})
        log(f"epoch {ep + 1}/{epochs}: held-out RMS error per crop {err:.3f} rad")
    assert best[1] is not None
    net.load_state_dict(best[1])
    # per-aberration error with the median over beads, as the estimator uses it
    net.eval()
    with torch.no_grad():
        pred = net(xv)[:, :, 0, 0].numpy()
    n_beads = len(x_va) // n_val
    med = np.median(pred.reshape(n_val, n_beads, -1), axis=1)
    truth = y_va.reshape(n_val, n_beads, -1)[:, 0]
    rms_err = float(np.sqrt(np.mean(np.sum((med - truth) ** 2, axis=1))))
    rms_true = float(np.sqrt(np.mean(np.sum(truth**2, axis=1))))
    metrics = {"heldout_rms_error_rad": rms_err, "heldout_rms_aberration_rad": rms_true}
    fields = {
        "name": out.name,
        "task": "aberration",
        "inputs": [{"name": "bead_crops", "channels": ["in_focus", "defocus_plus", "defocus_minus"]}],
        "outputs": [{"name": "zernike_rad", "channels": [f"Z{j}" for j in MODES]}],
        "normalization": {"kind": "affine", "offset_adu": 0.0, "scale_adu": 1.0},
        "pixel_size_um": 0.1,
        "tile": {"size_px": CROP_PX, "overlap_px": 0, "multiple_px": 8},
        "provenance": {
            "command": command or f"smartscope train zernike --out {out} --seed {seed}",
            "data": f"simulator beads scenario, 128² px, 50 ms, {n_train} aberrations "
            "(0–1.8 rad RMS, Noll 4–11)",
            "seed": seed,
            "method": f"phase diversity ±{DIVERSITY_RAD} rad Z4, 3×{CROP_PX}² crops per bead, "
            f"MSE, {epochs} epochs",
            "software": software_versions(),
            "notes": "input: bead crops normalised by the in-focus photon sum (see models/ao/data.py)",
        },
        "metrics": metrics,
    }
    export_bundle(net, out, manifest_fields=fields)
    log(f"bundle {out}: held-out RMS error {rms_err:.3f} rad (aberrations {rms_true:.2f} rad RMS)")
    return metrics
