"""bioimage.io round trips: how close smartscope's runtime stays to the other side's arithmetic.

1. A Noise2Void package in CAREamics' export layout (``tests/careamics_package.py``:
   TorchScript weights, fixed 128 px axes, mean/std normalization and its inverse) is
   imported; its outputs on fresh simulated frames are compared with CAREamics' own
   prediction arithmetic on the whole frame: at the package's size (one tile), and on a
   512 px frame that smartscope tiles at the package's 128 px (ramp-blended overlaps).
2. The shipped ``denoise-n2v-lowlight`` bundle is exported and run by ``bioimageio.core``;
   its prediction is compared with smartscope's engine on fresh frames (normalized units).

    python bench/bioimageio_roundtrip.py     # prints a table; kept in bench/results/bioimageio/
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from bioimageio.core import load_model_description, predict

    from smartscope.engines.bioimageio_export import export_bioimageio
    from smartscope.engines.bioimageio_import import import_bioimageio
    from smartscope.engines.bundle import load_bundle
    from smartscope.engines.runtime import Engine
    from smartscope.models import heldout_input, shipped_bundle
    from smartscope.models.denoise.data import simulate
    from tests.careamics_package import build, careamics_predict

    tmp = Path(tempfile.mkdtemp())
    pkg, model = build(tmp / "n2v.zip", px=128, steps=15)
    rep = import_bioimageio(pkg, tmp / "bundle")
    eng = Engine.open(tmp / "bundle", "onnxruntime")
    rows = [("import verification (package test output)", f"{rep.max_abs_diff:.3g} ADU", "1 x 128²")]
    frames = [np.round(a[0]) for a in simulate("fixed20", n_fields=8, field_px=128, seed=5).noisy]
    d = [np.abs(eng.infer(f)["prediction"][0] - careamics_predict(model, f)).max() for f in frames]
    rows.append(("CAREamics layout, frame = package size", f"{max(d):.3g} ADU", "8 x 128²"))
    big = np.round(simulate("fixed20", n_fields=1, field_px=512, seed=9).noisy[0][0])
    ref = careamics_predict(model, big)
    diff = np.abs(eng.infer(big)["prediction"][0] - ref)
    rows.append(
        (
            "CAREamics layout, 512² tiled at 128 px",
            f"{diff.max():.3g} ADU max, {np.percentile(diff, 99.9):.3g} p99.9 "
            f"(output range {np.ptp(ref):.1f})",
            "1 x 512²",
        )
    )
    n2v_bundle = shipped_bundle("denoise-n2v-lowlight")
    field = heldout_input(load_bundle(n2v_bundle).manifest)
    assert field is not None
    n2v = export_bioimageio(n2v_bundle, tmp / "export.zip", test_input=field)
    descr = load_model_description(n2v)
    ours_engine = Engine.open(shipped_bundle("denoise-n2v-lowlight"), "onnxruntime")
    worst = 0.0
    for f in (np.round(a[0]) for a in simulate("fixed20", n_fields=4, field_px=256, seed=11).noisy):
        theirs = next(iter(predict(model=descr, inputs=f[None, None]).members.values())).data.values[0, 0]
        lo, hi = np.percentile(f, [1.0, 99.8])
        ours = (ours_engine.infer(f)["denoised"][0] - lo) / (hi - lo)
        worst = max(worst, float(np.abs(ours - theirs).max()))
    rows.append(("export: bioimageio.core vs smartscope (normalized)", f"{worst:.3g}", "4 x 256²"))
    w = max(len(r[0]) for r in rows)
    print(f"{'comparison':<{w}}  {'max |difference|':<60}  frames")
    for name, val, n in rows:
        print(f"{name:<{w}}  {val:<60}  {n}")


if __name__ == "__main__":
    main()
