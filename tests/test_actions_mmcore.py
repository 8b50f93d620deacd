"""Actions change acquisition as they claim: channels, ROI, interval, bursts (real MMCore)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import ome_types
import pytest
import tifffile

from smartscope.actions import Action, ActionRequest, SetROI, StartBurst
from smartscope.config import validate_config
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.runner import run
from smartscope.storage import read_jsonl
from tests.conftest import cfg_dict


class _Script(ControllerBase):
    """Asks for ``action`` once, on the first frame at or after ``at``."""

    name = "script"

    def __init__(self, at: int, action: Action) -> None:
        self.at, self.action, self.done = at, action, False

    def update(self, obs: Observation) -> Sequence[ActionRequest]:
        if self.done or obs.frame.index < self.at:
            return []
        self.done = True
        return [self.ask(self.action, "scripted", obs)]


def _run(core, tmp_path: Path, acquisition: dict, controllers=None):  # type: ignore[no-untyped-def]
    cfg = validate_config(
        cfg_dict(tmp_path, acquisition=acquisition, pipeline={"stages": [{"kind": "identity"}]})
    )
    drv = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=core)
    res = run(cfg, driver=drv, controllers=controllers or [], report=False)
    assert res.status == "completed", res.reason
    return Path(res.run_dir)


def test_channels_alternate_and_the_ome_header_says_so(demo_core, tmp_path: Path) -> None:
    chans = [
        {"group": "Channel", "preset": "DAPI", "exposure_ms": 5},
        {"group": "Channel", "preset": "FITC", "exposure_ms": 12},
    ]
    run_dir = _run(demo_core, tmp_path, {"interval_ms": 30, "n_frames": 8, "channels": chans})
    frames = read_jsonl(run_dir / "frames.jsonl")
    assert [f["channel"] for f in frames] == ["DAPI", "FITC"] * 4
    with tifffile.TiffFile(run_dir / "raw.ome.tif") as tif:
        assert tif.series[0].shape == (4, 2, 512, 512)
        ome = ome_types.from_xml(tif.ome_metadata or "")
    pixels = ome.images[0].pixels
    assert pixels.size_c == 2 and [c.name for c in pixels.channels] == ["DAPI", "FITC"]
    assert {p.the_c: p.exposure_time for p in pixels.planes} == {0: 5.0, 1: 12.0}


def test_interval_paces_a_time_lapse(demo_core, tmp_path: Path) -> None:
    run_dir = _run(demo_core, tmp_path, {"exposure_ms": 2, "interval_ms": 60, "n_frames": 12})
    t = np.array([f["camera_time_s"] for f in read_jsonl(run_dir / "frames.jsonl")])
    assert np.median(np.diff(t)) == pytest.approx(0.060, abs=0.01)


def test_roi_change_starts_a_new_stack_from_the_claimed_frame(demo_core, tmp_path: Path) -> None:
    ctl = _Script(10, SetROI(x=100, y=50, width=128, height=96))
    run_dir = _run(demo_core, tmp_path, {"exposure_ms": 2, "n_frames": 40}, [ctl])
    (rec,) = read_jsonl(run_dir / "actions.jsonl")
    first = rec["first_frame_index"]
    frames = read_jsonl(run_dir / "frames.jsonl")
    assert {f["file"] for f in frames[:first]} == {"raw.ome.tif"}
    assert {f["file"] for f in frames[first:]} == {"raw_001.ome.tif"}
    assert frames[-1]["state"]["roi"] == [100, 50, 128, 96]
    assert tifffile.imread(run_dir / "raw.ome.tif").shape == (first, 512, 512)
    assert tifffile.imread(run_dir / "raw_001.ome.tif").shape == (40 - first, 96, 128)


def test_burst_runs_fast_for_n_frames_then_returns(demo_core, tmp_path: Path) -> None:
    ctl = _Script(3, StartBurst(interval_ms=0, n_frames=15))
    run_dir = _run(demo_core, tmp_path, {"exposure_ms": 2, "interval_ms": 150, "n_frames": 25}, [ctl])
    (rec,) = read_jsonl(run_dir / "actions.jsonl")
    first = rec["first_frame_index"]
    frames = read_jsonl(run_dir / "frames.jsonl")
    burst = [f["state"]["burst"] for f in frames]
    assert burst == [False] * first + [True] * 15 + [False] * (25 - first - 15)
    t = np.array([f["camera_time_s"] for f in frames])
    dt = np.diff(t)
    assert np.median(dt[first : first + 14]) < 0.03  # streaming at camera speed
    assert np.median(dt[first + 16 :]) == pytest.approx(0.150, abs=0.03)  # back to the time-lapse
