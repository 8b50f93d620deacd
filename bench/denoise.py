"""Denoising quality on held-out simulated low-light data with clean ground truth.

Rows: raw frame; classical baseline (generalized Anscombe VST + Gaussian filter, sigma
chosen on separate calibration fields, exact-unbiased inverse of Makitalo & Foi 2011);
N2V bundle; CARE bundle (both run through ONNX Runtime, tiled, as in the live stage).
Metrics from smartscope.metrics: PSNR (data range = max - min of each clean field) and
SSIM (Gaussian sigma 1.5, 11x11), mean +- std over the held-out fields.

    python bench/denoise.py                      # lowlight (20 photons peak), 8 fields 256^2
    python bench/denoise.py --photons 6 20 60    # also other light levels

Held-out data: simulator seed 1000+ (training used seed 0), so no field was seen in
training; fields are 256^2 (> the 256 px tile only when --field-px is larger).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from smartscope.engines import Engine
from smartscope.metrics import psnr, ssim
from smartscope.models import BUNDLES_DIR
from smartscope.models.denoise.data import simulate

ROOT = BUNDLES_DIR


def anscombe(e: np.ndarray, read_e: float) -> np.ndarray:
    """Generalized Anscombe transform for Poisson + Gaussian(read_e) noise, in electrons."""
    return 2.0 * np.sqrt(np.maximum(e + 3.0 / 8.0 + read_e**2, 0.0))


def inverse_anscombe(y: np.ndarray, read_e: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Makitalo & Foi 2011)."""
    y = np.maximum(y, 1.0)
    s = np.sqrt(1.5)
    return y**2 / 4 + s / (4 * y) - 11 / (8 * y**2) + 5 * s / (8 * y**3) - 1 / 8 - read_e**2


class VSTGaussian:
    """ADU -> electrons -> VST -> Gaussian(sigma) -> inverse VST -> ADU."""

    def __init__(self, gain: float, offset: float, read_e: float) -> None:
        self.gain, self.offset, self.read_e = gain, offset, read_e
        self.sigma = 1.0

    def __call__(self, adu: np.ndarray, sigma: float | None = None) -> np.ndarray:
        e = (adu - (self.offset - 0.5)) / self.gain
        v = ndimage.gaussian_filter(anscombe(e, self.read_e), self.sigma if sigma is None else sigma)
        return inverse_anscombe(v, self.read_e) * self.gain + (self.offset - 0.5)

    def calibrate(self, noisy: list[np.ndarray], clean: list[np.ndarray]) -> float:
        grid = np.arange(0.5, 4.01, 0.25)
        scores = [
            np.mean(
                [psnr(self(n, s), c, float(c.max() - c.min())) for n, c in zip(noisy, clean, strict=True)]
            )
            for s in grid
        ]
        self.sigma = float(grid[int(np.argmax(scores))])
        return self.sigma


def _runner(eng: Engine) -> Callable[[np.ndarray], np.ndarray]:
    def run(a: np.ndarray) -> np.ndarray:
        return eng.infer(a)["denoised"][0]

    return run


def _score(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    rng = float(ref.max() - ref.min())
    return psnr(pred, ref, rng), ssim(pred, ref, rng)


def main(argv: list[str] | None = None) -> int:
    from smartscope.simulators.camera import CameraConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n2v", type=Path, default=ROOT / "denoise-n2v-lowlight")
    ap.add_argument("--care", type=Path, default=ROOT / "denoise-care-lowlight")
    ap.add_argument("--photons", type=float, nargs="+", default=[20.0])
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--field-px", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args(argv)

    cam = CameraConfig()
    print(f"# bench/denoise.py {' '.join(sys.argv[1:])}")
    print(f"# held-out simulator fields: {args.fields} x {args.field_px}² per light level, seed {args.seed}")
    engines = {}
    for label, path in (("N2V", args.n2v), ("CARE", args.care)):
        if path.exists():
            eng = Engine.open(path, "onnxruntime")
            engines[label] = eng
            print(f"# {label}: {path} ({eng.manifest.provenance.command})")
        else:
            print(f"# {label}: {path} missing, row skipped")
    header = f"{'photons':>8}  {'method':<34}{'PSNR dB':>16}{'SSIM':>16}"
    print(header)
    print("-" * len(header))
    for ph in args.photons:
        held = simulate("lowlight", n_fields=args.fields, field_px=args.field_px, seed=args.seed, photons=ph)
        cal = simulate("lowlight", n_fields=4, field_px=args.field_px, seed=args.seed + 1, photons=ph)
        assert held.clean is not None and cal.clean is not None
        vst = VSTGaussian(cam.gain_adu_per_e, cam.offset_adu, cam.read_noise_e)
        sigma = vst.calibrate([n[0] for n in cal.noisy], [c[0] for c in cal.clean])
        methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "raw": lambda a: a,
            f"VST + Gaussian (sigma {sigma:.2f} px)": vst,
        }
        for label, eng in engines.items():
            methods[f"{label} ({eng.manifest.name})"] = _runner(eng)
        for mname, fn in methods.items():
            scores = np.array([_score(fn(n[0]), c[0]) for n, c in zip(held.noisy, held.clean, strict=True)])
            m, s = scores.mean(0), scores.std(0)
            print(f"{ph:>8g}  {mname:<34}{m[0]:>9.2f} ± {s[0]:<4.2f}{m[1]:>10.3f} ± {s[1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
