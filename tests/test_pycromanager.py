"""pycromanager's headless Python-backend core drives the same loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartscope.config import validate_config
from smartscope.runner import run
from smartscope.storage import read_jsonl
from tests.conftest import cfg_dict

pytest.importorskip("pycromanager")


def test_closed_loop_through_pycromanager_headless_core(tmp_path: Path) -> None:
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"driver": "pycromanager", "pycromanager_mode": "headless", "config_file": "demo"},
            acquisition={"exposure_ms": 1.0, "n_frames": 120},
            controllers=[{"kind": "exposure_band", "low": 20000, "high": 40000}],
            limits={"exposure_ms": [0.5, 200.0]},
        )
    )
    res = run(cfg, report=False)
    assert res.status == "completed", res.reason
    assert res.metrics["driver"] == "pycromanager"
    assert res.metrics["frames_stored"] == 120
    analysed = [a for a in read_jsonl(Path(res.run_dir) / "analysis.jsonl") if "values" in a]
    p99 = [a["values"]["stats"]["p99_adu"] for a in analysed]
    assert p99[0] < 20000 and all(20000 <= v <= 40000 for v in p99[-10:])
    actions = read_jsonl(Path(res.run_dir) / "actions.jsonl")
    assert actions and all(a["first_frame_index"] is not None for a in actions)
