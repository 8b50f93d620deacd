"""Engine latency per backend and frame size, host<->device transfers included.

Each measurement runs ``Engine.infer`` on a uint16 frame: normalization, tiling (per the
bundle's tile size unless ``--tile-px`` overrides it), the backend call with its transfers,
blending and de-normalization; i.e. what an ``EngineStage`` pays per frame.

CPU (this machine):
    python bench/engines.py --device cpu
GPU (TensorRT FP16 when installed, torch FP16 eager / CUDA graphs, ORT CPU for reference):
    python bench/engines.py --device cuda --sizes 256 512 2048 --tile-px 2048

Prints one table (p50/p99 latency in ms, frames/s, 1-min load average after the cell)
and, on CPU, the ratio eager-torch p50 / ONNX-Runtime p50 per size. Backends take turns
frame by frame so that load from other processes affects them alike. ``--json PATH`` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.engines import Engine, load_bundle
from smartscope.engines.backends import BackendUnavailable, create_backend
from smartscope.metrics import percentiles_ms
from smartscope.models import BUNDLES_DIR

DEFAULT_BUNDLE = BUNDLES_DIR / "denoise-n2v-lowlight"


def _variants(device: str, threads: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, backend, options) to measure on this device."""
    if device == "cpu":
        return [
            ("onnxruntime fp32", "onnxruntime", {"device": "cpu", "intra_op_threads": threads}),
            ("torch eager fp32", "torch", {"device": "cpu", "precision": "fp32"}),
        ]
    return [
        ("tensorrt fp16", "tensorrt", {"device": device, "precision": "fp16"}),
        ("torch eager fp32", "torch", {"device": device, "precision": "fp32"}),
        ("torch eager fp16", "torch", {"device": device, "precision": "fp16"}),
        ("torch fp16 + CUDA graphs", "torch", {"device": device, "precision": "fp16", "cuda_graphs": True}),
        (
            "torch fp16 + torch.compile",
            "torch",
            {"device": device, "precision": "fp16", "compile_mode": "default"},
        ),
        ("onnxruntime fp32 (CPU)", "onnxruntime", {"device": "cpu", "intra_op_threads": threads}),
    ]


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 2048])
    ap.add_argument("--repeats", type=int, default=20, help="timed frames per cell (2048^2 on CPU: 5)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tile-px", type=int, default=None, help="override the bundle's tile size")
    ap.add_argument("--max-batch", type=int, default=4, help="tiles per backend call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch and ORT alike (0: library defaults)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    if args.tile_px is not None:
        tile = bundle.manifest.tile.model_copy(update={"size_px": args.tile_px})
        bundle = replace(bundle, manifest=bundle.manifest.model_copy(update={"tile": tile}))
    man = bundle.manifest
    print(f"# bench/engines.py  {' '.join(sys.argv[1:])}")
    print(f"# device: {_device_name(args.device)}")
    print(
        f"# bundle: {args.bundle} ({man.name}, U-Net {man.architecture.params if man.architecture else '?'})"
    )
    print(f"# tile {man.tile.size_px} px, overlap {man.tile.overlap_px} px, max_batch {args.max_batch}")
    print(f"# load average at start: {os.getloadavg()[0]:.2f}; threads: {args.threads or 'library default'}")
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, Any]] = []
    header = f"{'backend':<28}{'size':>7}{'p50 ms':>10}{'p99 ms':>10}{'frames/s':>10}{'load':>7}"
    print(header)
    print("-" * len(header))
    engines: list[tuple[str, Engine]] = []
    for label, name, opts in _variants(args.device, args.threads):
        try:
            be = create_backend(bundle, name, **opts)  # type: ignore[arg-type]
        except (BackendUnavailable, ImportError) as exc:
            print(f"{label:<28}  skipped: {exc}")
            continue
        engines.append((label, Engine(bundle, be, max_batch=args.max_batch)))
    for size in args.sizes:
        frame = rng.poisson(150, (size, size)).astype(np.uint16)
        reps = args.repeats if (size < 2048 or args.device != "cpu") else max(3, args.repeats // 4)
        for _, eng in engines:
            for _ in range(args.warmup):
                eng.infer(frame)
        # backends take turns frame by frame, so a change in machine load hits all alike
        lat: dict[str, list[float]] = {label: [] for label, _ in engines}
        for _ in range(reps):
            for label, eng in engines:
                t0 = time.perf_counter()
                eng.infer(frame)
                lat[label].append(time.perf_counter() - t0)
        load = os.getloadavg()[0]
        for label, _ in engines:
            pct = percentiles_ms(lat[label], (50, 99))
            fps = 1.0 / float(np.mean(lat[label]))
            rows.append({"backend": label, "size": size, **pct, "fps": fps, "repeats": reps, "load": load})
            print(
                f"{label:<28}{size:>5}²{pct['p50_ms']:>10.2f}{pct['p99_ms']:>10.2f}{fps:>10.2f}{load:>7.2f}"
            )
    for _, eng in engines:
        eng.close()
    if args.device == "cpu":
        print("\nONNX Runtime vs eager torch on CPU (torch p50 / ORT p50):")
        for size in args.sizes:
            o = [r for r in rows if r["size"] == size and r["backend"].startswith("onnxruntime")]
            t = [r for r in rows if r["size"] == size and r["backend"].startswith("torch eager")]
            if o and t:
                print(f"  {size}²: {t[0]['p50_ms'] / o[0]['p50_ms']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"device": _device_name(args.device), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
