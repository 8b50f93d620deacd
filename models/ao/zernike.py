"""Learned aberration estimator: Zernike amplitudes from three bead images (phase diversity).

Input: crops of isolated beads in three images taken with the mirror at the current
correction plus ``0``, ``+δ·Z4`` and ``−δ·Z4`` (δ = ``DIVERSITY_RAD`` of defocus; the
sign of the defocus splits the even-mode ambiguity of a single in-focus image). Each
32×32 crop triple is offset-corrected and divided by the in-focus crop's photon sum
(× ``CROP_PX``), so the network sees shape, not brightness. Output: amplitudes of Noll
modes 4…11 (rad RMS) of the wavefront *before* the diversity; the estimate of a frame is
the median over its beads.

Network: five 3×3 convolutions (three of stride 2) and a final 4×4 convolution, giving a
(N, 8, 1, 1) map for a 32×32 crop — a plain NCHW engine bundle (ONNX), run with the bundle's
backend on the crop batch. Training data come from the virtual microscope (``beads``
scenario, random aberrations of RMS uniform in 0–``max_rms_rad``), held-out aberrations
from other seeds; the manifest records the held-out RMS error.

    smartscope train zernike --out models/bundles/ao-zernike-small   (train_zernike_cmd)
    python -m smartscope.models.ao.zernike --out models/bundles/ao-zernike-small
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

__all__ = [
    "CROP_PX",
    "DIVERSITY_RAD",
    "MODES",
    "LearnedZernikeEstimator",
    "bead_crops",
    "diversity_inputs",
    "simulate_set",
    "train_bundle",
    "train_zernike_cmd",
]

MODES = (4, 5, 6, 7, 8, 9, 10, 11)
DIVERSITY_RAD = 1.0
CROP_PX = 32
OFFSET_ADU = 100.0


def bead_centres_px(image: np.ndarray, n_max: int = 64, min_sep_px: int = 16) -> list[tuple[int, int]]:
    """Bead positions (row, col) from the in-focus image: local maxima, brightest first."""
    from scipy import ndimage as ndi

    sm = ndi.gaussian_filter(image.astype(np.float32), 2.0)
    peaks = (sm == ndi.maximum_filter(sm, size=min_sep_px)) & (sm > np.median(sm) + 5 * sm.std() * 0.2)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-sm[ys, xs])
    return [(int(ys[i]), int(xs[i])) for i in order[:n_max]]


def bead_crops(images: Sequence[np.ndarray], centres: Sequence[tuple[int, int]]) -> np.ndarray:
    """(n_beads, len(images), CROP_PX, CROP_PX) normalised crops around ``centres``."""
    h = CROP_PX // 2
    padded = [np.pad(im.astype(np.float32) - OFFSET_ADU, h, mode="edge") for im in images]
    out = np.empty((len(centres), len(images), CROP_PX, CROP_PX), np.float32)
    for k, (y, x) in enumerate(centres):
        for c, p in enumerate(padded):
            out[k, c] = p[y : y + CROP_PX, x : x + CROP_PX]
    bg = np.median(out[:, :, :4, :], axis=(2, 3), keepdims=True)
    out -= bg
    total = np.clip(out[:, :1].sum(axis=(2, 3), keepdims=True), 1.0, None)
    return out / total * CROP_PX


def diversity_inputs(
    measure: Callable[[np.ndarray], np.ndarray], correction_rad: np.ndarray
) -> list[np.ndarray]:
    """The three images: correction, correction + δ·Z4, correction − δ·Z4."""
    imgs = []
    for d in (0.0, DIVERSITY_RAD, -DIVERSITY_RAD):
        c = np.zeros(max(11, correction_rad.size))
        c[: correction_rad.size] = correction_rad
        c[3] += d
        imgs.append(measure(c))
    return imgs


def simulate_set(
    n_aberrations: int, seed: int, max_rms_rad: float = 1.8, sensor_px: int = 128, exposure_ms: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, 3, 32, 32) and targets (N, 8) from the virtual microscope's beads scenario."""
    from smartscope.simulators.microscope import VirtualMicroscope

    rng = np.random.default_rng(seed)
    vm = VirtualMicroscope("beads", seed=seed, sensor_px=sensor_px)
    vm.set_exposure_ms(exposure_ms)
    assert vm.smlm is not None
    em = vm.smlm.emitters
    a_nm = vm.pixel_size_um * 1000
    centres = [
        (round(float(y) / a_nm - 0.5), round(float(x) / a_nm - 0.5))
        for y, x in zip(em.y_nm, em.x_nm, strict=True)
    ]
    xs, ys = [], []
    for _ in range(n_aberrations):
        a = np.zeros(11)
        idx = np.asarray(MODES) - 1
        a[idx] = rng.normal(size=idx.size)
        a *= rng.uniform(0.0, max_rms_rad) / max(float(np.sqrt((a[idx] ** 2).sum())), 1e-9)

        def measure(c: np.ndarray, a: np.ndarray = a) -> np.ndarray:
            vm.set_mirror(a + c)
            return vm.render_frame()[0]

        imgs = diversity_inputs(measure, np.zeros(11))
        xs.append(bead_crops(imgs, centres))
        ys.append(np.repeat(a[idx][None], len(centres), axis=0))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)


def build_net(width: int = 32) -> Any:
    import torch
    from torch import nn

    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1, stride=2),  # 16
        nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2),  # 8
        nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2),  # 4
        nn.ReLU(),
        nn.Conv2d(2 * w, len(MODES), 4),  # 1×1 for a 32×32 crop
    ).to(torch.float32)


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
            "command": command or f"python -m smartscope.models.ao.zernike --out {out} --seed {seed}",
            "data": f"simulator beads scenario, 128² px, 50 ms, {n_train} aberrations "
            "(0–1.8 rad RMS, Noll 4–11)",
            "seed": seed,
            "method": f"phase diversity ±{DIVERSITY_RAD} rad Z4, 3×{CROP_PX}² crops per bead, "
            f"MSE, {epochs} epochs",
            "software": software_versions(),
            "notes": "input: bead crops normalised by the in-focus photon sum (see models/ao/zernike.py)",
        },
        "metrics": metrics,
    }
    export_bundle(net, out, manifest_fields=fields)
    log(f"bundle {out}: held-out RMS error {rms_err:.3f} rad (aberrations {rms_true:.2f} rad RMS)")
    return metrics


class LearnedZernikeEstimator:
    """Runs a Zernike bundle: three diversity images in, Noll 1..11 amplitudes out."""

    def __init__(self, bundle: str | Path, backend: str = "auto") -> None:
        from smartscope.engines.runtime import Engine

        self.engine = Engine.open(bundle, backend)  # type: ignore[arg-type]
        self.modes = tuple(int(c[1:]) for c in self.engine.manifest.outputs[0].channels)

    def estimate(self, images: Sequence[np.ndarray]) -> np.ndarray:
        centres = bead_centres_px(images[0])
        if not centres:
            raise ValueError("LearnedZernikeEstimator: no beads found in the in-focus image")
        crops = bead_crops(images, centres)
        out = self.engine.backend.run(crops)
        z = np.asarray(next(iter(out.values())))[:, :, 0, 0]
        a = np.zeros(max(11, max(self.modes)))
        for k, j in enumerate(self.modes):
            a[j - 1] = float(np.median(z[:, k]))
        return a

    def correct(
        self, measure: Callable[[np.ndarray], np.ndarray], start_rad: np.ndarray | None = None
    ) -> np.ndarray:
        """One-step correction: 3 images at ``start``, returns start − estimate."""
        start = np.zeros(11) if start_rad is None else np.asarray(start_rad, float)
        return start - self.estimate(diversity_inputs(measure, start))[: start.size]

    def close(self) -> None:
        self.engine.close()


def train_zernike_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write")],
    n_train: Annotated[int, typer.Option(help="simulated training aberrations (16 beads each)")] = 600,
    n_val: Annotated[int, typer.Option(help="held-out aberrations (other seeds)")] = 100,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 30,
    seed: Annotated[int, typer.Option(help="seed of simulation, initialisation and batching")] = 0,
) -> None:
    """Train the learned Zernike estimator (phase diversity on simulated beads) into a bundle."""
    from smartscope.models.provenance import command_line

    train_bundle(out, n_train, n_val, epochs, seed, command=command_line(ctx=ctx))


def main() -> None:
    ap = argparse.ArgumentParser(description="train the Zernike estimator bundle on the simulator")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import sys

    train_bundle(
        args.out,
        args.n_train,
        args.n_val,
        args.epochs,
        args.seed,
        command="python -m " + " ".join(["smartscope.models.ao.zernike", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
