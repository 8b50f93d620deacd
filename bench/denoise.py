"""Denoising quality against the best classical methods, on real images no engine saw.

Held-out data (``--data real``, the default): 16 fields of 256² cut from five real
microscopy images shipped inside PyPI wheels (``bench/data/denoise_real/README.md``: nuclei,
confocal nuclei and membrane, a quantitative-phase cell, histology), each scaled so that
its brightest structure gets ``--photons`` photons per pixel (background 2 % of that), and
recorded as a live sequence of ``--frames`` frames (12) while the sample drifts at a
constant velocity (random direction, speed uniform in 0..``--speed-px`` px per frame)
through the simulator's sCMOS model (shot noise, read noise, the sensor's fixed pattern).
The last frame is the one scored, against its noise-free truth; each method sees what it
takes of the frames up to it. ``--data simulated``: the
simulator's own cell fields instead (seed 1000+; the bundles trained on seed 0).

Rows:

- raw frame;
- GAT + Gaussian: generalized Anscombe transform for Poisson + Gaussian read noise,
  Gaussian filter (sigma chosen on separate simulator calibration fields), exact unbiased
  inverse (Makitalo & Foi 2013: the inverse of E[GAT(z) | lambda], tabulated numerically);
- GAT + BM3D (the ``bm3d`` package; sigma 1 in GAT units, the transform's design, or
  chosen on the calibration fields among ``--bm3d-sigma`` values) on the current frame:
  the best classical single-frame method;
- registered sum + GAT + BM3D: the ``--registered-frames`` (5) last frames registered to
  the current one (sub-pixel phase correlation, ``skimage.registration``), summed (K x the photons),
  then GAT + BM3D: the classical counterpart of a multi-frame network;
- each shipped denoising bundle through ONNX Runtime, tiled as in the live stage, given
  the frames it takes (``inputs[0].frames``) up to the scored one;
- ``--self-supervised``: both self-supervised methods trained on the held-out noisy data
  itself (no clean image), with the same budget (1000 batches of 16 patches of 64²):
  CAREamics N2V (2-D, its default U-Net, run by ``bench/careamics_n2v.py`` in a
  Python that has ``careamics``, ``--careamics-python``: careamics pins torchvision<=0.26
  and so torch 2.11, which cannot share this environment's torch 2.13) and this project's
  ``smartscope train denoise --method n2v --data DIR --arch unet --frames 5`` on the same
  TIFF stacks (the blind spot in the current frame only; the four frames before it are
  seen whole).

``--speed``: frames/s of each bundle's ONNX graph in ONNX Runtime on a batch of
``--speed-batch`` 512² frames (ORT's default threads: all cores), and one-frame latency of
``Engine.infer`` (normalization, tiling, de-normalization included).

    python bench/denoise.py --photons 10 40 --speed
    python bench/denoise.py --photons 10 40 --self-supervised --careamics-python /path/bin/python
    python bench/denoise.py --data simulated --photons 5 20 80

PSNR (data range = max - min of each clean field) and SSIM (Gaussian sigma 1.5, 11x11)
from ``smartscope.metrics``, mean +- std over the fields.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from smartscope.engines import Engine
from smartscope.metrics import psnr, ssim
from smartscope.models import BUNDLES_DIR
from smartscope.models.denoise.train import window

REAL_DIR = Path(__file__).resolve().parent / "data" / "denoise_real"
# (file, y, x) of each field's window (field + margins for the drift): the window's top-left
# corner as a fraction of the room the image leaves around it (0: top/left edge, 1: bottom/right)
REAL_FIELDS: tuple[tuple[str, float, float], ...] = (
    ("dsb2018_nuclei.png", 0, 0),
    ("dsb2018_nuclei.png", 0, 1),
    ("dsb2018_nuclei.png", 1, 0),
    ("dsb2018_nuclei.png", 1, 1),
    ("cells3d_nuclei.png", 0, 0),
    ("cells3d_nuclei.png", 0, 1),
    ("cells3d_nuclei.png", 1, 0.5),
    ("cells3d_membrane.png", 0, 0),
    ("cells3d_membrane.png", 0, 1),
    ("cells3d_membrane.png", 1, 0.5),
    ("qpi_cell.png", 0.5, 0),
    ("qpi_cell.png", 0.5, 1),
    ("ihc_hematoxylin.png", 0, 0),
    ("ihc_hematoxylin.png", 0, 1),
    ("ihc_hematoxylin.png", 1, 0),
    ("ihc_hematoxylin.png", 1, 1),
)


class Recordings:
    """Held-out recordings in camera ADU: ``noisy`` (n, T, H, W), ``clean`` (n, T, H, W)."""

    def __init__(self, noisy: np.ndarray, clean: np.ndarray, names: list[str], description: str) -> None:
        self.noisy, self.clean, self.names, self.description = noisy, clean, names, description


def _to_adu(e: np.ndarray) -> np.ndarray:
    from smartscope.simulators.camera import CameraConfig

    cam = CameraConfig()
    return (e * cam.gain_adu_per_e + cam.offset_adu - 0.5).astype(np.float32)


def real_recordings(
    photons: float, frames: int, speed_px: float, seed: int, field_px: int = 256
) -> Recordings:
    """The real-image recordings described in the module docstring."""
    import imageio.v3 as iio

    from smartscope.simulators.datasets import drifting_frames, photon_map

    margin = int(np.ceil(speed_px * (frames - 1))) + 4
    big = field_px + 2 * margin
    rng = np.random.default_rng(seed)
    noisy, clean, names = [], [], []
    cache: dict[str, np.ndarray] = {}
    for name, fy, fx in REAL_FIELDS:
        img = cache.setdefault(name, np.asarray(iio.imread(REAL_DIR / name), np.float32))
        if min(img.shape) < big:
            raise ValueError(f"{name}: {img.shape} is smaller than a {big} px window")
        y0, x0 = round(fy * (img.shape[0] - big)), round(fx * (img.shape[1] - big))
        win = img[y0 : y0 + big, x0 : x0 + big]
        ph = photon_map(win, photons, low=0.5)
        angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0, speed_px)
        vel = (speed * float(np.sin(angle)), speed * float(np.cos(angle)))
        n_e, c_e = drifting_frames(ph, frames, (field_px, field_px), vel, rng)
        noisy.append(_to_adu(n_e))
        clean.append(_to_adu(c_e))
        names.append(f"{Path(name).stem}@{y0},{x0}")
    desc = (
        f"{len(names)} real fields {field_px}² (bench/data/denoise_real), peak {photons:g} photons, "
        f"{frames} frames drifting <= {speed_px:g} px/frame, seed {seed}"
    )
    return Recordings(np.stack(noisy), np.stack(clean), names, desc)


def simulated_recordings(
    photons: float, frames: int, speed_px: float, seed: int, n: int, px: int
) -> Recordings:
    from smartscope.simulators.datasets import denoise_sequences

    n_e, c_e = denoise_sequences(
        n, (px, px), seed=seed, photons=photons, n_frames=frames, max_speed_px=speed_px
    )
    names = [f"sim-{seed}-{i}" for i in range(n)]
    desc = (
        f"{n} simulator fields {px}², peak {photons:g} photons, {frames} frames "
        f"<= {speed_px:g} px/frame, seed {seed}"
    )
    return Recordings(_to_adu(n_e), _to_adu(c_e), names, desc)


# ----------------------------------------------------------------------------- classical


def gat(e: np.ndarray, read_e: float) -> np.ndarray:
    """Generalized Anscombe transform of electrons (Poisson + Gaussian read noise ``read_e``)."""
    return 2.0 * np.sqrt(np.maximum(e + 3.0 / 8.0 + read_e**2, 0.0))


class ExactUnbiasedInverse:
    """Inverse of ``lambda -> E[GAT(Poisson(lambda) + N(0, read_e²))]`` (Makitalo & Foi 2013).

    The expectation is tabulated on a log grid of lambda (Poisson sum x Gauss-Hermite over
    the read noise); values above the table use the asymptotic ``(D/2)² - 1/8 - read_e²``.
    """

    def __init__(self, read_e: float, lam_max: float = 2000.0) -> None:
        from scipy.stats import poisson

        self.read_e = read_e
        lam = np.concatenate([[0.0], np.geomspace(1e-4, lam_max, 1200)])
        nodes, weights = np.polynomial.hermite_e.hermegauss(41)
        weights = weights / weights.sum()
        expect = np.empty_like(lam)
        for i, mu in enumerate(lam):
            k = np.arange(int(max(0.0, mu - 14 * np.sqrt(mu) - 20)), int(mu + 14 * np.sqrt(mu) + 30))
            pk = poisson.pmf(k, mu)
            z = k[:, None] + read_e * nodes[None, :]
            expect[i] = float((pk[:, None] * weights[None, :] * gat(z, read_e)).sum())
        self.lam, self.expect = lam, np.maximum.accumulate(expect)

    def __call__(self, d: np.ndarray) -> np.ndarray:
        out = np.interp(d, self.expect, self.lam)
        big = d > self.expect[-1]
        out[big] = (d[big] / 2.0) ** 2 - 1.0 / 8.0 - self.read_e**2
        return out


class GATDenoiser:
    """ADU -> electrons (x ``n_sum`` frames summed) -> GAT -> filter -> exact inverse -> ADU."""

    def __init__(self, filt: Callable[[np.ndarray, float], np.ndarray], grid: tuple[float, ...]) -> None:
        from smartscope.simulators.camera import CameraConfig

        self.cam = CameraConfig()
        self.filt, self.grid = filt, grid
        self.param = grid[len(grid) // 2]
        self._inv: dict[int, ExactUnbiasedInverse] = {}

    def electrons(self, adu: np.ndarray) -> np.ndarray:
        return (adu - (self.cam.offset_adu - 0.5)) / self.cam.gain_adu_per_e

    def __call__(self, e_sum: np.ndarray, n_sum: int = 1, param: float | None = None) -> np.ndarray:
        read = self.cam.read_noise_e * np.sqrt(n_sum)
        inv = self._inv.setdefault(n_sum, ExactUnbiasedInverse(read))
        v = self.filt(gat(e_sum, read), self.param if param is None else param)
        return _to_adu(inv(v) / n_sum)

    def calibrate(self, rec: Recordings) -> float:
        e = self.electrons(rec.noisy[:, -1])
        scores = [
            np.mean([_score(self(x, 1, p), c)[0] for x, c in zip(e, rec.clean[:, -1], strict=True)])
            for p in self.grid
        ]
        self.param = float(self.grid[int(np.argmax(scores))])
        return self.param


def _bm3d(v: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    return np.asarray(bm3d.bm3d(v.astype(np.float64), sigma), np.float64)


def registered_sum(win: np.ndarray) -> np.ndarray:
    """The frames of ``win`` (T, H, W, electrons) registered to the last one and summed."""
    from skimage.registration import phase_cross_correlation

    ref = win[-1]
    total = ref.astype(np.float64).copy()
    for f in win[:-1]:
        shift, _, _ = phase_cross_correlation(ref, f, upsample_factor=20, normalization=None)
        total += ndimage.shift(f.astype(np.float64), shift, order=3, mode="nearest")
    return total


# ----------------------------------------------------------------------------- engines


def _score(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    rng = float(ref.max() - ref.min())
    return psnr(pred, ref, rng), ssim(pred, ref, rng)


def _bundles(paths: list[Path]) -> dict[str, Engine]:
    out = {}
    for p in paths:
        if (p / "engine.json").is_file() or p.suffix == ".zip":
            out[p.name] = Engine.open(p, "onnxruntime")
    return out


def _engine_fn(eng: Engine) -> Callable[[np.ndarray], np.ndarray]:
    k = eng.manifest.inputs[0].frames

    def run(seq: np.ndarray) -> np.ndarray:
        return eng.infer(window(seq, seq.shape[0] - 1, k))["denoised"][0]

    return run


def speed_table(engines: dict[str, Engine], batch: int, repeats: int) -> list[str]:
    import onnxruntime as ort

    lines = [
        f"## speed at 512² (ONNX Runtime {ort.__version__}, default threads = {os.cpu_count()} cores; "
        f"1-min load average {os.getloadavg()[0]:.2f} at start)",
        f"{'bundle':<28}{'frames in':>10}{'batch':>7}{'ORT frames/s':>14}{'Engine.infer ms':>17}",
    ]
    rng = np.random.default_rng(0)
    for name, eng in engines.items():
        spec = eng.manifest.inputs[0]
        sess = ort.InferenceSession(eng.bundle.onnx_bytes, providers=["CPUExecutionProvider"])
        x = rng.random((batch, spec.n_channels, 512, 512), dtype=np.float32)
        feed = {sess.get_inputs()[0].name: x}
        sess.run(None, feed)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, feed)
            ts.append(time.perf_counter() - t0)
        fps = batch / float(np.median(ts))
        frame = (rng.random((spec.n_channels, 512, 512)) * 50 + 100).astype(np.float32)
        eng.infer(frame)
        lat = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            eng.infer(frame)
            lat.append(time.perf_counter() - t0)
        lines.append(f"{name:<28}{spec.frames:>10}{batch:>7}{fps:>14.1f}{1e3 * np.median(lat):>17.1f}")
    lines.append(f"(1-min load average at end {os.getloadavg()[0]:.2f})")
    return lines


# ----------------------------------------------------------------------------- self-supervised


def self_supervised_rows(
    rec: Recordings, frames: int, careamics_python: str | None, workdir: Path, args: argparse.Namespace
) -> dict[str, np.ndarray]:
    """Predictions of the last frames by CAREamics N2V and by ``train denoise --method n2v``."""
    import tifffile

    data = workdir / "noisy"
    data.mkdir(parents=True, exist_ok=True)
    for i, stack in enumerate(rec.noisy):
        tifffile.imwrite(data / f"field{i:02d}.tif", stack.astype(np.float32))
    preds: dict[str, np.ndarray] = {}
    if careamics_python:
        out = workdir / "careamics.npz"
        cmd = [
            careamics_python,
            str(Path(__file__).with_name("careamics_n2v.py")),
            str(data),
            str(out),
            "--epochs",
            str(args.careamics_epochs),
        ]
        print(f"# CAREamics: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True)
        with np.load(out) as z:
            preds["CAREamics N2V (2-D, on the data)"] = np.stack(
                [z[f"field{i:02d}"] for i in range(len(rec.names))]
            )
    bundle = workdir / "n2v-on-data"
    cmd = [
        sys.executable,
        "-m",
        "smartscope.models.cli",
        "denoise",
        "--method",
        "n2v",
        "--data",
        str(data),
        "--arch",
        "unet",
        "--frames",
        str(frames),
        "--steps",
        str(args.n2v_steps),
        "--val-every",
        "100",
        "--patience",
        "6",
        "--patch-px",
        "64",
        "--quiet",
        "--out",
        str(bundle),
    ]
    print(f"# smartscope N2V: {' '.join(cmd[3:])}", flush=True)
    subprocess.run(cmd, check=True)
    eng = Engine.open(bundle, "onnxruntime")
    fn = _engine_fn(eng)
    preds[f"smartscope N2V ({frames} frames, on the data)"] = np.stack([fn(s) for s in rec.noisy])
    return preds


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--bundles", type=Path, nargs="*", default=None, help="default: every denoise bundle shipped"
    )
    ap.add_argument("--data", choices=["real", "simulated"], default="real")
    ap.add_argument("--photons", type=float, nargs="+", default=[10.0, 40.0])
    ap.add_argument("--frames", type=int, default=12, help="frames per recording (the last one is scored)")
    ap.add_argument("--speed-px", type=float, default=1.0, help="maximum drift, px per frame")
    ap.add_argument("--fields", type=int, default=8, help="simulated fields (--data simulated)")
    ap.add_argument("--field-px", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--no-bm3d", action="store_true", help="skip the BM3D rows (slow: ~5-10 s per field)")
    ap.add_argument(
        "--bm3d-sigma",
        type=float,
        nargs="+",
        default=[1.0],
        help="BM3D sigma in GAT units (1: the transform's design); several: chosen on calibration fields",
    )
    ap.add_argument("--no-registered", action="store_true", help="skip the registered-sum + BM3D row")
    ap.add_argument("--registered-frames", type=int, default=5, help="frames summed in that row")
    ap.add_argument("--speed", action="store_true", help="also the 512² throughput table")
    ap.add_argument("--speed-batch", type=int, default=8)
    ap.add_argument("--self-supervised", action="store_true")
    ap.add_argument("--careamics-python", default=None, help="a Python with careamics installed")
    ap.add_argument("--careamics-epochs", type=int, default=10)
    ap.add_argument("--n2v-frames", type=int, default=5, help="input frames of the smartscope N2V row")
    ap.add_argument(
        "--n2v-steps", type=int, default=1000, help="the same budget as CAREamics: 1000 x 16 patches"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    paths = args.bundles
    if paths is None:
        paths = sorted(p for p in BUNDLES_DIR.iterdir() if p.name.startswith("denoise-"))
    engines = _bundles(paths)
    print(f"# bench/denoise.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    for name, eng in engines.items():
        print(f"# {name}: {eng.manifest.provenance.command}")
    header = f"{'photons':>8}  {'method':<46}{'PSNR dB':>15}{'SSIM':>16}"
    rows: list[dict[str, object]] = []
    for ph in args.photons:
        if args.data == "real":
            rec = real_recordings(ph, args.frames, args.speed_px, args.seed, args.field_px)
        else:
            rec = simulated_recordings(ph, args.frames, args.speed_px, args.seed, args.fields, args.field_px)
        cal = simulated_recordings(ph, 1, 0.0, args.seed + 7, 3, args.field_px)
        print(f"\n# held-out: {rec.description}; calibration: {cal.description}")
        print(header)
        print("-" * len(header))
        gauss = GATDenoiser(lambda v, s: ndimage.gaussian_filter(v, s), tuple(np.arange(0.5, 4.01, 0.25)))
        gauss.calibrate(cal)
        e_last = gauss.electrons(rec.noisy[:, -1])
        preds: dict[str, np.ndarray] = {
            "raw": rec.noisy[:, -1],
            f"GAT + Gaussian (sigma {gauss.param:.2f} px)": np.stack([gauss(e) for e in e_last]),
        }
        if not args.no_bm3d:
            bm = GATDenoiser(_bm3d, tuple(args.bm3d_sigma))
            if len(args.bm3d_sigma) > 1:
                bm.calibrate(cal)
            preds[f"GAT + BM3D (sigma {bm.param:.1f})"] = np.stack([bm(e) for e in e_last])
            k = args.registered_frames
            if k > 1 and not args.no_registered:
                sums = [registered_sum(bm.electrons(s[-k:])) for s in rec.noisy]
                preds[f"registered {k}-frame sum + GAT + BM3D"] = np.stack([bm(s, k) for s in sums])
        for name, eng in engines.items():
            k = eng.manifest.inputs[0].frames
            if k > rec.noisy.shape[1]:
                print(f"# {name}: needs {k} frames, recordings have {rec.noisy.shape[1]}; skipped")
                continue
            preds[f"{name} ({k} frame{'s' if k > 1 else ''})"] = np.stack(
                [_engine_fn(eng)(s) for s in rec.noisy]
            )
        if args.self_supervised:
            with tempfile.TemporaryDirectory(prefix="bench-denoise-") as tmp:
                preds.update(
                    self_supervised_rows(rec, args.n2v_frames, args.careamics_python, Path(tmp), args)
                )
        per_source: dict[str, dict[str, float]] = {}
        sources = [n.split("@")[0] for n in rec.names]
        for mname, pred in preds.items():
            scores = np.array([_score(p, c) for p, c in zip(pred, rec.clean[:, -1], strict=True)])
            m, s = scores.mean(0), scores.std(0)
            print(f"{ph:>8g}  {mname:<46}{m[0]:>8.2f} ± {s[0]:<4.2f}{m[1]:>10.3f} ± {s[1]:.3f}", flush=True)
            per_source[mname] = {
                src: float(np.mean([sc[0] for sc, f in zip(scores, sources, strict=True) if f == src]))
                for src in dict.fromkeys(sources)
            }
            rows.append(
                {
                    "photons": ph,
                    "method": mname,
                    "psnr_db": m[0],
                    "psnr_std": s[0],
                    "ssim": m[1],
                    "fields": rec.names,
                    "field_psnr_db": [float(v) for v in scores[:, 0]],
                }
            )
        srcs = list(dict.fromkeys(sources))
        print(f"\n# PSNR dB per source image, peak {ph:g} photons")
        print(f"{'method':<46}" + "".join(f"{x[:16]:>17}" for x in srcs))
        for mname, d in per_source.items():
            print(f"{mname:<46}" + "".join(f"{d[x]:>17.2f}" for x in srcs), flush=True)
    if args.speed:
        print()
        print("\n".join(speed_table(engines, args.speed_batch, repeats=10)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
