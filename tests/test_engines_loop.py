"""An engine in the closed loop on the virtual microscope (real UniMMCore).

The denoised stream is saved beside the raw data, frame-aligned, and the stage's SNR
estimate reaches a controller, which acts on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from smartscope.config import BleachScenario, validate_config
from smartscope.engines import Engine
from smartscope.models import BUNDLES_DIR
from smartscope.runner import run
from smartscope.scenarios.bleach import run_config as bleach_config
from smartscope.storage import read_jsonl
from tests.conftest import cfg_dict

DEMO_CONFIG = bleach_config(BleachScenario(), Path("runs"))

BUNDLES = BUNDLES_DIR
BUNDLE = BUNDLES / "denoise-n2v-lowlight"


def test_denoised_stream_is_saved_and_snr_drives_a_controller(tmp_path: Path) -> None:
    data = cfg_dict(
        tmp_path,
        microscope=DEMO_CONFIG["microscope"],
        acquisition={
            "exposure_ms": 20.0,
            "interval_ms": 60.0,
            "n_frames": 24,
            "roi": {"x": 192, "y": 192, "width": 128, "height": 128},
            "lasers_mw": {"488": 2.0},
        },
        pipeline={
            "stages": [
                {"kind": "stats", "name": "stats"},
                {"kind": "engine", "name": "denoise", "bundle": str(BUNDLE), "backend": "onnxruntime"},
            ]
        },
        controllers=[
            {
                # asks for more light whenever the denoiser's SNR estimate is below the band
                "kind": "exposure_band",
                "name": "snr_band",
                "stage": "denoise",
                "statistic": "snr",
                "low": 1e4,
                "high": 2e4,
                "actuator": "laser_power",
                "laser": "488",
                "settle_frames": 0,
            }
        ],
        limits={"laser_max_mw": {"488": 50.0}, "max_power_change_mw_per_s": 1000.0},
    )
    cfg = validate_config(data)
    res = run(cfg, report=False)
    assert res.status == "completed", res.reason
    run_dir = Path(res.run_dir)
    analysed = [a for a in read_jsonl(run_dir / "analysis.jsonl") if "values" in a]
    assert analysed, "no frame was analysed"
    snr = [a["values"]["denoise"]["snr"] for a in analysed]
    assert all(np.isfinite(snr)) and all(s > 0 for s in snr)
    # the denoised stream sits beside the raw stack, one plane per analysed frame
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        raw = tif.series[0].asarray()
    with tifffile.TiffFile(run_dir / "outputs" / "denoise.denoised.ome.tif") as tif:
        den = tif.series[0].asarray()
    den = den.reshape(-1, 128, 128)
    assert den.shape[0] == len(analysed) and raw.shape[1:] == (128, 128)
    first = analysed[0]["index"]
    eng = Engine.open(BUNDLE, "onnxruntime")
    np.testing.assert_allclose(den[0], eng.infer(raw[first])["denoised"][0], rtol=1e-5, atol=1e-3)
    # the controller read the SNR estimate and acted on it
    actions = read_jsonl(run_dir / "actions.jsonl")
    asked = [a for a in actions if "snr=" in str(a)]
    assert asked, actions[:3]
