"""Virtual staining on held-out simulated fields: quality, speed, and the trust signal.

Table 1 — quality per channel (label-free → fluorescence; held-out fields, simulator seed
1000+, training used seed 0): Pearson r, SSIM (Gaussian window σ 1.5 px, 11×11), PSNR and
MAE, all in the bundle's normalized target units (data range for SSIM/PSNR = max − min of
each target field), mean over fields, for

- ``linear fit``: the label-free frame fitted to the target by least squares per channel
  (one gain and offset per channel, fitted on these same held-out fields: generous to it);
- ``L1 U-Net``: the same generator trained with the L1 loss only (``--adv-weight 0``);
- ``pix2pix``: L1 + adversarial (the shipped bundle);
- ``pix2pix completion``: each channel predicted with the other two acquired channels given;
- ``pix2pix + planes``: the generator that also sees the label-free frame at the focus
  offsets it was trained with (a defocus pair, ``stain-pix2pix-planes``); its held-out
  fields are recorded with those planes too.

Table 2 — frames/s of :func:`smartscope.models.stain.predict.predict` (normalization,
tiling, backend, blending; TTA 1 = one pass, TTA 4 = the trust map) per backend and size.

Table 3 — trust on deliberately shifted inputs (same held-out fields): the disagreement
ratio (TTA disagreement / held-out median), the input shift (largest |z| of the input
statistics), the fraction of frames the stage would call trusted (its default rule:
ratio ≤ 1.1 × the bundle's held-out p95/median, |z| ≤ 6; ``is_trusted``),
and the mean Pearson r, for defocus and other illumination.

Table 3 is printed for the pix2pix bundle and for the planes bundle.

    python bench/stain.py                         # all three tables
    python bench/stain.py --skip-speed            # quality + trust only
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from smartscope.engines import Engine
from smartscope.metrics import image_scores, pearson_r
from smartscope.models import BUNDLES_DIR
from smartscope.models.stain.data import StainData, simulate
from smartscope.models.stain.predict import (
    is_trusted,
    label_free_planes,
    normalized_target,
    predict,
    predict_with_trust,
    ratio_limit,
)


def planes_of(eng: Engine) -> tuple[float, ...]:
    """The focus offsets (µm) of a bundle's extra label-free planes, in input order."""
    names = eng.manifest.inputs[0].channels
    return tuple(float(n.split("@")[1].removesuffix("um")) for n in names if n.startswith("label_free@"))


def _lf(eng: Engine, data: StainData, i: int) -> np.ndarray:
    """Field ``i``'s first time point as the bundle takes it: (Y, X) or (1 + P, Y, X)."""
    n = label_free_planes(eng)
    return data.label_free_stack(i)[0, :n] if n > 1 else data.label_free[i][0]


def _scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, ...]:
    return tuple(image_scores(pred, target).values())  # Pearson r, SSIM, PSNR dB, MAE


def _targets(eng: Engine, data: StainData) -> list[np.ndarray]:
    return [normalized_target(eng.manifest.calibration, data.channels, t[0]) for t in data.target]


def quality(engines: dict[str, Engine], data: StainData) -> None:
    ref = next(iter(engines.values()))
    targets = _targets(ref, data)
    chans = data.channels
    rows: dict[str, list[list[tuple[float, ...]]]] = {}
    # linear fit of the label-free frame to each target channel, over all fields
    lf = np.stack([a[0] for a in data.label_free]).ravel()
    design = np.stack([lf, np.ones_like(lf)], axis=1)
    lin = []
    for k in range(len(chans)):
        y = np.stack([t[k] for t in targets]).ravel()
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        lin.append(coef)
    rows["linear fit"] = [
        [_scores(a[0] * lin[k][0] + lin[k][1], t[k]) for k in range(len(chans))]
        for a, t in zip(data.label_free, targets, strict=True)
    ]
    for label, eng in engines.items():
        rows[label] = []
        for i, t in enumerate(targets):
            pred = predict(eng, _lf(eng, data, i), None, 1).virtual
            rows[label].append([_scores(pred[k], t[k]) for k in range(len(chans))])
        if label == "pix2pix" and len(eng.manifest.inputs[0].channels) > 1:
            comp = []
            for i, (g, t) in enumerate(zip(data.given, targets, strict=True)):
                per = []
                for k in range(len(chans)):
                    others = {o: g[0, j] for j, o in enumerate(chans) if j != k}
                    per.append(_scores(predict(eng, _lf(eng, data, i), others, 1).virtual[k], t[k]))
                comp.append(per)
            rows[f"{label} completion"] = comp
    print(f"\n## quality, label-free -> fluorescence ({len(data.names)} held-out fields)")
    print("SSIM: Gaussian window sigma 1.5 px (11x11); PSNR/SSIM data range = max - min of each target field")
    head = f"{'channel':<14}{'method':<26}{'Pearson r':>10}{'SSIM':>8}{'PSNR dB':>9}{'MAE':>8}"
    print(head)
    print("-" * len(head))
    for k, c in enumerate(chans):
        for label, per_field in rows.items():
            m = np.mean([f[k] for f in per_field], axis=0)
            print(f"{c:<14}{label:<26}{m[0]:>10.3f}{m[1]:>8.3f}{m[2]:>9.2f}{m[3]:>8.3f}")


def speed(bundle: Path, sizes: list[int], repeats: int) -> None:
    from smartscope.engines.backends import BackendUnavailable

    print(
        f"\n## frames/s of predict() ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    head = f"{'backend':<14}{'size':>6}{'TTA':>5}{'ms/frame p50':>14}{'frames/s':>10}"
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    print(f"bundle {bundle.name}")
    for backend in ("onnxruntime", "torch", "tensorrt"):
        try:
            eng = Engine.open(bundle, backend)
        except BackendUnavailable as exc:
            print(f"{backend:<14}  unavailable here: {str(exc)[:70]}")
            continue
        for size in sizes:
            lf = rng.normal(560, 300, (label_free_planes(eng), size, size)).astype(np.float32)
            for tta in (1, 4):
                n = max(1, repeats if size <= 512 else repeats // 3)
                predict(eng, lf, None, tta)  # warm-up
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    predict(eng, lf, None, tta)
                    times.append(time.perf_counter() - t0)
                p50 = float(np.median(times))
                print(f"{backend:<14}{size:>6}{tta:>5}{p50 * 1e3:>14.1f}{1 / p50:>10.2f}")
        eng.close()


def trust(eng: Engine, n_fields: int, field_px: int, seed: int) -> None:
    # (label, label-free mode, defocus µm, lamp mW); training: phase, in focus, 1 mW
    shifts = [
        ("in focus, as trained", "phase", 0.0, 1.0),
        ("defocus 0.5 um", "phase", 0.5, 1.0),
        ("defocus 1 um", "phase", 1.0, 1.0),
        ("defocus 2 um", "phase", 2.0, 1.0),
        ("lamp x0.5", "phase", 0.0, 0.5),
        ("lamp x2", "phase", 0.0, 2.0),
        ("brightfield, not phase", "brightfield", 0.0, 1.0),
    ]
    planes = planes_of(eng)
    print(f"\n## trust on shifted inputs ({n_fields} held-out fields, TTA 4): {eng.manifest.name}")
    print(
        f"trusted: disagreement ratio <= {ratio_limit(eng.manifest.calibration):.2f} and input shift |z| <= 6"
    )
    head = f"{'input':<26}{'disagr. ratio':>14}{'input shift |z|':>16}{'trusted':>9}{'Pearson r':>11}"
    print(head)
    print("-" * len(head))
    cal = eng.manifest.calibration
    for label, mode, defocus_um, lamp_mw in shifts:
        data = simulate(
            n_fields, field_px, seed, mode=mode, defocus_um=defocus_um, lamp_mw=lamp_mw, planes_um=planes
        )
        targets = _targets(eng, data)
        ratios, zs, trusted, rs = [], [], [], []
        for i, t in enumerate(targets):
            pred, v = predict_with_trust(eng, _lf(eng, data, i), None, 4)
            ratios.append(v["disagreement_ratio"])
            zs.append(v["input_shift"])
            trusted.append(is_trusted(v, cal))
            rs.append(np.mean([pearson_r(pred.virtual[k], t[k]) for k in range(len(data.channels))]))
        print(
            f"{label:<26}{np.mean(ratios):>14.2f}{np.mean(zs):>16.1f}{np.mean(trusted):>9.0%}{np.mean(rs):>11.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pix2pix", type=Path, default=BUNDLES_DIR / "stain-pix2pix-small")
    ap.add_argument("--l1", type=Path, default=BUNDLES_DIR / "stain-l1-small")
    ap.add_argument("--planes", type=Path, default=BUNDLES_DIR / "stain-pix2pix-planes")
    ap.add_argument("--fields", type=int, default=12)
    ap.add_argument("--field-px", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)

    print(f"# bench/stain.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    engines: dict[str, Engine] = {}
    for label, path in (("L1 U-Net", args.l1), ("pix2pix", args.pix2pix), ("pix2pix + planes", args.planes)):
        if path.exists():
            eng = Engine.open(path, "onnxruntime")
            engines[label] = eng
            print(f"# {label}: {path} ({eng.manifest.provenance.command})")
        else:
            print(f"# {label}: {path} missing, rows skipped")
    if "pix2pix" not in engines:
        print("no pix2pix bundle: nothing to measure", file=sys.stderr)
        return 1
    planes = planes_of(engines["pix2pix + planes"]) if "pix2pix + planes" in engines else ()
    data = simulate(args.fields, args.field_px, args.seed, planes_um=planes)
    print(f"# held-out data: {data.description}")
    quality(engines, data)
    if not args.skip_speed:
        for label in ("pix2pix", "pix2pix + planes"):
            if label in engines:
                speed(Path(engines[label].bundle.source), args.sizes, args.repeats)
    for label in ("pix2pix", "pix2pix + planes"):
        if label in engines:
            trust(engines[label], args.fields, args.field_px, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
