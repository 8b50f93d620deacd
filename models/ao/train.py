"""Training of the learned aberration estimator into an engine bundle.

Data: :func:`smartscope.models.ao.data.simulate_set` in chunks of ``CHUNK`` aberrations
(chunk ``k`` of training seed ``s`` uses simulator seed ``TRAIN_SEED_BASE + 10⁶·s + k``,
held-out chunks ``HELDOUT_SEED_BASE + 10⁶·s + k``: other bead layouts, other
aberrations); ``data_cache`` keeps each chunk as an ``.npz`` named by its seed, size and
range, so a rerun of the same command skips the simulation and gets the same data.
Samples: :func:`~smartscope.models.ao.data.single_image_set` (the +δ crops, and the −δ
crops turned by 180° with negated targets) of the beads still bright in all three images
(:func:`~smartscope.models.ao.data.valid_samples`). Training: MSE on the amplitudes; each
epoch ``crops_per_aberration`` × ``n_train`` random samples, centred windows with a ±1 px
jitter (:func:`~smartscope.models.ao.data.center_windows`) under a random symmetry of the
square (flips and transposition map a bead image to another valid one; :func:`dihedral`
applies the matching signs and swaps of the Noll modes); AdamW, one-cycle schedule; the
best held-out epoch is kept. The manifest records the one-step held-out error (median over
the +δ windows of each aberration) and, measured in closed loop on the virtual microscope
(a bead layout no training chunk used), the residual after ``steps`` estimate-and-correct
steps of one image each for aberrations of 0.5–1.5 rad RMS.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.controllers.ao import MARECHAL_RAD, residual_rms_rad
from smartscope.engines.networks.ao_outputs import MODES
from smartscope.models.ao.data import (
    DIVERSITY_RAD,
    INPUT_PX,
    center_windows,
    random_aberration,
    simulate_set,
    single_image_set,
    valid_samples,
)

__all__ = ["CHUNK", "closed_loop_trials", "dihedral", "simulated_chunks", "train_bundle"]

CHUNK = 100
TRAIN_SEED_BASE = 1000
HELDOUT_SEED_BASE = 200_000
CLOSED_LOOP_LAYOUT_SEED = 300_000  # beads layout of the closed-loop check (not a training chunk)

# Noll 4…11 under the image symmetries (checked against the simulator's PSF in the tests):
# a column flip negates Z5, Z8, Z10; a row flip Z5, Z7, Z9; a transposition negates Z6 and
# swaps Z7 ↔ Z8 and Z9 ↔ −Z10.
_FLIP_X = np.array([1, -1, 1, 1, -1, 1, -1, 1], np.float32)
_FLIP_Y = np.array([1, -1, 1, -1, 1, -1, 1, 1], np.float32)
_TRANSPOSE_ORDER = [0, 1, 2, 4, 3, 6, 5, 7]
_TRANSPOSE_SIGN = np.array([1, 1, -1, 1, 1, -1, -1, 1], np.float32)


def dihedral(
    x: np.ndarray, y: np.ndarray, flip_x: bool, flip_y: bool, transpose: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, C, H, W) and Noll 4…11 targets (N, 8) under a symmetry of the square."""
    if flip_x:
        x, y = x[..., ::-1], y * _FLIP_X
    if flip_y:
        x, y = x[..., ::-1, :], y * _FLIP_Y
    if transpose:
        x, y = np.swapaxes(x, -1, -2), y[:, _TRANSPOSE_ORDER] * _TRANSPOSE_SIGN
    return np.ascontiguousarray(x), y


def simulated_chunks(
    n_aberrations: int,
    seed_base: int,
    max_rms_rad: float,
    cache: Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_aberrations`` (a multiple of ``CHUNK``, or fewer) simulated in chunks: crops
    (N, 3, 32, 32) float16 and targets (N, 8), 16 beads per aberration in order."""
    xs, ys = [], []
    t0 = time.perf_counter()
    for k in range(math.ceil(n_aberrations / CHUNK)):
        n = min(CHUNK, n_aberrations - k * CHUNK)
        seed = seed_base + k
        f = cache / f"chunk{seed}_n{n}_rms{max_rms_rad:g}.npz" if cache is not None else None
        if f is not None and f.is_file():
            with np.load(f) as d:
                x, y = d["x"], d["y"]
        else:
            x, y = simulate_set(n, seed=seed, max_rms_rad=max_rms_rad)
            x = x.astype(np.float16)
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                np.savez(f, x=x, y=y)
        xs.append(x)
        ys.append(y)
        if (k + 1) % 10 == 0:
            log(f"  {(k + 1) * CHUNK} aberrations ({time.perf_counter() - t0:.0f} s)")
    return np.concatenate(xs), np.concatenate(ys).astype(np.float32)


def heldout_metrics(pred: np.ndarray, y: np.ndarray, n_beads: int, valid: np.ndarray) -> dict[str, float]:
    """One-step error per aberration of the median over its (valid) beads' +δ windows."""
    n = len(y) // n_beads
    p = np.where(valid[:, None], pred, np.nan).reshape(n, n_beads, -1)
    med = np.nan_to_num(np.nanmedian(p, axis=1))
    truth = y.reshape(n, n_beads, -1)[:, 0]
    err = np.sqrt(np.sum((med - truth) ** 2, axis=1))
    rms = np.sqrt(np.sum(truth**2, axis=1))
    return {
        "heldout_one_step_rms_error_rad": float(np.sqrt(np.mean(err**2))),
        "heldout_rms_aberration_rad": float(np.sqrt(np.mean(rms**2))),
    }


def closed_loop_trials(
    estimator: Any, n_trials: int, steps: int, layout_seed: int = CLOSED_LOOP_LAYOUT_SEED
) -> np.ndarray:
    """Residual RMS (rad, Noll 4–11) after ``steps`` estimator steps for ``n_trials``
    aberrations of 0.5–1.5 rad RMS (the bench's range, :func:`random_aberration` of seeds
    ``layout_seed + k``) on the virtual microscope's beads scenario (128² px, 50 ms) with
    bead layout ``layout_seed``; ``estimator`` is a
    :class:`~smartscope.models.ao.stage.LearnedZernikeEstimator`."""
    from smartscope.simulators.microscope import VirtualMicroscope

    vm = VirtualMicroscope("beads", seed=layout_seed, sensor_px=128)
    vm.set_exposure_ms(50.0)
    out = []
    for k in range(n_trials):
        a = random_aberration(layout_seed + k)

        def measure(c: np.ndarray, a: np.ndarray = a) -> np.ndarray:
            tot = np.zeros(max(a.size, c.size))
            tot[: a.size] += a
            tot[: c.size] += c
            vm.set_mirror([float(v) for v in tot])
            return vm.render_frame()[0]

        c = estimator.correct(measure, steps=steps)
        out.append(residual_rms_rad(a + c[: a.size]))
    return np.asarray(out)


def train_bundle(
    out: Path,
    n_train: int = 3200,
    n_val: int = 400,
    epochs: int = 12,
    seed: int = 0,
    command: str = "",
    log: Callable[[str], None] = print,
    width: int = 24,
    max_rms_rad: float = 2.0,
    crops_per_aberration: int = 8,
    batch: int = 32,
    threads: int = 1,
    data_cache: Path | None = None,
    steps: int = 3,
    closed_loop_trials_n: int = 40,
) -> dict[str, float]:
    """Simulate (or read the cache), train, export a bundle at ``out``; returns held-out metrics."""
    import torch

    from smartscope.engines.export import export_bundle
    from smartscope.engines.networks.ao import ARCHITECTURE, build_net
    from smartscope.models.ao.stage import INPUT_CHANNELS, LearnedZernikeEstimator
    from smartscope.models.train_common import seed_everything, software_versions

    if threads > 0:
        torch.set_num_threads(threads)
    rng = seed_everything(seed)
    t0 = time.perf_counter()
    x3, y3 = simulated_chunks(n_train, TRAIN_SEED_BASE + 1_000_000 * seed, max_rms_rad, data_cache, log)
    v3, w3 = simulated_chunks(n_val, HELDOUT_SEED_BASE + 1_000_000 * seed, max_rms_rad, data_cache, log)
    n_beads = len(x3) // n_train
    # samples: the +δ crops, then the turned −δ crops; beads that bleached are left out
    ok = valid_samples(x3)
    xs, ys = single_image_set(x3, y3)
    pool = np.flatnonzero(np.concatenate([ok, ok]))
    del x3
    v_ok = valid_samples(v3)
    xv = torch.from_numpy(center_windows(v3[:, 1].astype(np.float32))[:, None])
    log(
        f"{len(pool)} train / {int(v_ok.sum())} held-out samples ({np.mean(ok):.1%} of the crops hold a "
        f"bead; {time.perf_counter() - t0:.0f} s)"
    )
    net = build_net(width, 1, INPUT_PX)
    k = crops_per_aberration
    steps_per_epoch = max(1, math.ceil(n_train * k / batch))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * steps_per_epoch)

    def predict() -> np.ndarray:
        net.eval()
        with torch.no_grad():
            return torch.cat([net(xv[i : i + 1024])[:, :, 0, 0] for i in range(0, len(xv), 1024)]).numpy()

    best: tuple[float, dict[str, Any] | None] = (math.inf, None)
    for ep in range(epochs):
        net.train()
        idx = rng.choice(pool, size=min(n_train * k, len(pool)), replace=False)
        for i in range(0, len(idx), batch):
            b = np.sort(idx[i : i + batch])
            win = center_windows(xs[b].astype(np.float32), rng)[:, None]
            xb, yb = dihedral(win, ys[b], *(bool(v) for v in rng.integers(0, 2, 3)))
            loss = torch.mean((net(torch.from_numpy(xb))[:, :, 0, 0] - torch.from_numpy(yb)) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        m = heldout_metrics(predict(), w3, n_beads, v_ok)
        if m["heldout_one_step_rms_error_rad"] < best[0]:
            best = (
                m["heldout_one_step_rms_error_rad"],
                {kk: v.clone() for kk, v in net.state_dict().items()},
            )
        log(
            f"epoch {ep + 1}/{epochs}: held-out one-step RMS error "
            f"{m['heldout_one_step_rms_error_rad']:.3f} rad ({time.perf_counter() - t0:.0f} s)"
        )
    assert best[1] is not None
    net.load_state_dict(best[1])
    net.eval()
    metrics = heldout_metrics(predict(), w3, n_beads, v_ok)
    fields: dict[str, Any] = {
        "name": out.name,
        "task": "aberration",
        "inputs": [{"name": "bead_windows", "channels": INPUT_CHANNELS}],
        "outputs": [{"name": "zernike_rad", "channels": [f"Z{j}" for j in MODES]}],
        "normalization": {"kind": "affine", "offset_adu": 0.0, "scale_adu": 1.0},
        "pixel_size_um": 0.1,
        "tile": {"size_px": INPUT_PX, "overlap_px": 0, "multiple_px": 8},
        "architecture": {
            "name": ARCHITECTURE,
            "params": {"width": width, "in_channels": 1, "crop_px": INPUT_PX},
            "weights_sha256": "0" * 64,
        },
        "metrics": metrics,
    }
    if closed_loop_trials_n > 0:
        with tempfile.TemporaryDirectory() as tmp:
            draft = Path(tmp) / out.name
            export_bundle(
                net, draft, manifest_fields={**fields, "provenance": {"command": "draft", "data": ""}}
            )
            est = LearnedZernikeEstimator(draft, "onnxruntime")
            try:
                res = closed_loop_trials(est, closed_loop_trials_n, steps)
            finally:
                est.close()
        metrics[f"closed_loop_{steps}_steps_trials"] = float(len(res))
        metrics[f"closed_loop_{steps}_steps_median_residual_rad"] = float(np.median(res))
        metrics[f"closed_loop_{steps}_steps_below_marechal"] = float(np.mean(res < MARECHAL_RAD))
        log(
            f"closed loop, {steps} steps of one image: median residual {np.median(res):.3f} rad, "
            f"{np.mean(res < MARECHAL_RAD):.0%} below Maréchal of {len(res)}"
        )
    fields["metrics"] = metrics
    fields["provenance"] = {
        "command": command or f"smartscope train zernike --out {out} --seed {seed}",
        "data": f"simulator beads scenario, 128² px, 50 ms, {n_train} aberrations (0–{max_rms_rad:g} rad "
        f"RMS, Noll 4–11) in chunks of {CHUNK} (seeds {TRAIN_SEED_BASE + 1_000_000 * seed}…); held out "
        f"{n_val} (seeds {HELDOUT_SEED_BASE + 1_000_000 * seed}…); closed loop on bead layout "
        f"{CLOSED_LOOP_LAYOUT_SEED}",
        "seed": seed,
        "method": f"one image behind +{DIVERSITY_RAD:g} rad Z4 per step, {INPUT_PX}² centred bead windows, "
        f"{ARCHITECTURE} width {width}, MSE, {epochs} epochs of {k} samples per aberration (+δ crops and "
        "−δ crops turned 180° with negated targets) under random flips/transposition and ±1 px jitter, "
        "best held-out epoch",
        "software": software_versions(),
        "notes": "input: models/ao/data.py (bead_crops, center_windows); run: models/ao/stage.py "
        f"(steps of one image); {time.perf_counter() - t0:.0f} s with {threads} thread(s)",
    }
    export_bundle(net, out, manifest_fields=fields)
    log(
        f"bundle {out}: held-out one-step RMS error {metrics['heldout_one_step_rms_error_rad']:.3f} rad "
        f"(aberrations {metrics['heldout_rms_aberration_rad']:.2f} rad RMS)"
    )
    return metrics
