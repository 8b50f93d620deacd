"""The install without torch (``smartscope[inference]``) runs every shipped engine and the
demos' pipelines; a missing extra is one line naming it. Packages are hidden from a
subprocess by an import blocker (tests/no_extras.py), as if they were not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "no_extras.py"


def _run(blocked: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), blocked, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


_ENGINES_WITHOUT_TORCH = r"""
import sys
from pathlib import Path
import numpy as np
from smartscope.engines.bundle import find_bundles
from smartscope.engines.runtime import Engine
from smartscope.models import BUNDLES_DIR

bundles = find_bundles(BUNDLES_DIR)
assert len(bundles) >= 7, bundles
for b in bundles:
    eng = Engine.open(b)  # auto
    assert eng.backend.describe().lower().startswith("onnx"), eng.describe()
    man = eng.manifest
    x = np.full((man.inputs[0].n_channels, 64, 64), 120.0, np.float32)
    outs = eng.infer(x)
    assert all(np.isfinite(v).all() for v in outs.values()), b
    print("engine ok", man.name)

# every stage and controller the demos build, from their own configs
from smartscope.config import validate_config
from smartscope.registry import build_controller, build_stage
from smartscope.scenarios import SCENARIOS
from smartscope.models import shipped_bundle
import importlib
import tempfile
out = Path(tempfile.mkdtemp(prefix="smartscope-no-torch-"))  # the demos write .cfg files here
for name, spec in SCENARIOS.items():
    module = importlib.import_module(f"smartscope.scenarios.{name}")
    cfg = validate_config(module.run_config(spec.demo_params(0, 20), out), name)
    stages = [build_stage(s) for s in cfg.pipeline.stages]
    ctls = [build_controller(c) for c in cfg.controllers]
    for s in stages:
        getattr(s, "close", lambda: None)()
    print("demo ok", name, [type(s).__name__ for s in stages], [type(c).__name__ for c in ctls])

# the SMLM network stage and the learned event detector, on the shipped bundles
from smartscope.config import LearnedEventDetectorConfig, SMLMStageConfig
from smartscope.frame import Frame
from smartscope.simulators.datasets import smlm_frames
frames, _, _ = smlm_frames(3, (64, 64), seed=1, activation_mw=3.0)
smlm_cfg = SMLMStageConfig(method="network", bundle=shipped_bundle("smlm-decode-small"), psf_sigma_nm=93.3)
st = build_stage(smlm_cfg)
for i, f in enumerate(frames):
    st.process(Frame(index=i, image=f, camera_time_s=0.0), {})
st.close()
print("smlm network ok", len(st.table()))
build_stage(LearnedEventDetectorConfig(bundle=shipped_bundle("events-unet-small")))
assert "torch" not in sys.modules
print("no torch imported")
"""


def test_every_shipped_engine_and_demo_pipeline_without_torch() -> None:
    res = _run("torch", "code", _ENGINES_WITHOUT_TORCH)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("engine ok") >= 7
    for demo in ("events", "ao", "lowlight", "stain", "smlm", "bleach"):
        assert f"demo ok {demo}" in res.stdout
    assert "no torch imported" in res.stdout


def test_denoise_demo_runs_end_to_end_without_torch(tmp_path: Path) -> None:
    res = _run("torch", "cli", "demo", "--frames", "15", "--denoise", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run_dir / "outputs" / "denoise.denoised.ome.tif").is_file()
    assert "run folder" in (run_dir / "run.log").read_text()


def test_missing_inference_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    res = _run("onnx,onnxruntime", "cli", "demo", "--scenario", "lowlight", "--out", str(tmp_path))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert (
        line
        == "error: needs the 'inference' extra: pip install 'smartscope[inference]' (no module named 'onnx')"
    )
    # onnx present but no runtime at all: still named
    res = _run("onnxruntime,torch", "cli", "demo", "--frames", "5", "--denoise", "--out", str(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "needs the 'inference' extra: pip install 'smartscope[inference]'" in res.stderr
