"""Replay: a recorded run through the same pipeline gives the same analysis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from smartscope.config import validate_config
from smartscope.drivers import DriverError
from smartscope.drivers.mmcore import PymmcorePlusDriver
from smartscope.drivers.replay import ReplayDriver
from smartscope.runner import run
from smartscope.storage import read_jsonl
from tests.conftest import cfg_dict


def test_replay_reproduces_recorded_frames_and_analysis(demo_core, tmp_path: Path) -> None:
    live = validate_config(cfg_dict(tmp_path, acquisition={"exposure_ms": 3.0, "n_frames": 60}))
    rec = run(
        live,
        driver=PymmcorePlusDriver(live.microscope, live.acquisition, live.safe_state, core=demo_core),
        report=False,
    )
    raw = Path(rec.run_dir) / "raw.ome.tif"
    cfg = validate_config(cfg_dict(tmp_path, microscope={"driver": "replay", "replay_path": str(raw)}))
    rep = run(cfg, report=False)
    assert rep.status == "completed" and rep.metrics["frames_stored"] == 60
    a = tifffile.imread(raw)
    b = tifffile.imread(Path(rep.run_dir) / "raw.ome.tif")
    assert np.array_equal(a, b)
    # same stage values for every frame analysed in both runs
    va = {r["index"]: r["values"]["stats"] for r in read_jsonl(Path(rec.run_dir) / "analysis.jsonl")}
    vb = {r["index"]: r["values"]["stats"] for r in read_jsonl(Path(rep.run_dir) / "analysis.jsonl")}
    common = set(va) & set(vb)
    assert len(common) > 30
    assert all(va[i] == vb[i] for i in common)
    # played at the recorded pace (timestamps came from frames.jsonl), within scheduling slack
    assert rep.metrics["wall_s"] == pytest.approx(rec.metrics["wall_s"], rel=0.5, abs=1.0)


def test_replay_at_chosen_rate(tmp_path: Path) -> None:
    stack = (np.arange(20 * 16 * 16) % 4000).astype(np.uint16).reshape(20, 16, 16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    drv = ReplayDriver(path, fps=200)
    drv.start(None)
    got = []
    while True:
        try:
            f = drv.next_frame(1.0)
        except StopIteration:
            break
        if f is not None:
            got.append(f.image)
    assert np.array_equal(np.stack(got), stack)
    res = drv.apply([])
    assert res.first_frame_index == 20


@pytest.mark.parametrize("content", [None, b"not a tiff at all"])
def test_replay_bad_input_names_the_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "x.ome.tif"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DriverError, match=r"replay_path: .*x\.ome\.tif"):
        ReplayDriver(path)
