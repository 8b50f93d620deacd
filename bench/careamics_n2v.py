"""CAREamics Noise2Void on a folder of noisy TIFF stacks: the baseline row of bench/denoise.py.

Runs in a Python environment that has ``careamics`` (0.3.x): careamics pins
torchvision<=0.26 and therefore torch 2.11, which cannot share smartscope's environment
(torch 2.13). ``bench/denoise.py --self-supervised --careamics-python PY`` calls it as

    PY bench/careamics_n2v.py NOISY_DIR OUT.npz --epochs 10 --steps-per-epoch 100

Trains CAREamics' 2-D N2V (its default U-Net, N2V2 off, its own normalization; 10 epochs
of 100 batches of 16 patches of 64², a small configuration for this CPU) on every
frame of every ``NOISY_DIR/*.tif`` stack (axes SYX: no clean image, like the data a
microscopist has), then predicts the last frame of each stack; ``OUT.npz`` holds one array
per file stem. Only numpy, tifffile and careamics are imported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import tifffile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("noisy_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps-per-epoch", type=int, default=100, help="batches per epoch (num_steps)")
    ap.add_argument("--patch-px", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    from careamics import CAREamist
    from careamics.config import create_n2v_config

    files = sorted(args.noisy_dir.glob("*.tif"))
    if not files:
        raise SystemExit(f"error: {args.noisy_dir}: no .tif files")
    stacks = [np.asarray(tifffile.imread(f), np.float32) for f in files]
    stacks = [s.reshape(-1, *s.shape[-2:]) for s in stacks]
    train = np.concatenate(stacks)
    cfg = create_n2v_config(
        experiment_name="bench_n2v",
        data_type="array",
        axes="SYX",
        patch_size=[args.patch_px, args.patch_px],
        batch_size=args.batch,
        num_epochs=args.epochs,
        num_steps=args.steps_per_epoch,
    )
    with tempfile.TemporaryDirectory(prefix="careamics-") as work:
        cam = CAREamist(cfg, work_dir=work, enable_progress_bar=False)
        cam.train(train_data=train)
        last = np.stack([s[-1] for s in stacks])
        preds, _ = cam.predict(last, axes="SYX", data_type="array")
        flat = np.concatenate([np.asarray(p, np.float32).reshape(-1, *last.shape[-2:]) for p in preds])
        out = {f.stem: flat[i] for i, f in enumerate(files)}
    np.savez(args.out, **out)
    print(
        f"wrote {args.out}: {len(out)} predictions, trained on {train.shape[0]} frames of {train.shape[1:]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
