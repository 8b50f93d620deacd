"""``run_demo``: a scenario runs on the virtual microscope and leaves its plot and summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartscope.controllers.demo import run_demo
from smartscope.controllers.scenarios import demo_config


def test_ao_demo_writes_wavefront_plot_and_summary(tmp_path: Path) -> None:
    png = run_demo("ao", tmp_path, seed=3)
    assert png.name == "ao.png" and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((png.parent / "smart_summary.json").read_text())
    assert summary["rms_after_rad"] < summary["rms_before_rad"]
    assert (png.parent / "actions.jsonl").exists()
    assert "<h2>scenario: ao</h2>" in (png.parent / "report.html").read_text()  # plot inlined in the report


def test_demo_configs_name_their_parts_and_reject_unknown(tmp_path: Path) -> None:
    ev = demo_config("events", tmp_path)
    assert ev["pipeline"]["stages"][0]["kind"] == "event_detector"
    assert ev["controllers"][0]["kind"] == "event_trigger"
    assert demo_config("ao", tmp_path)["controllers"][0]["kind"] == "modal_ao"
    assert demo_config("lowlight", tmp_path)["controllers"][0]["kind"] == "snr_dose"
    cfg_text = Path(ev["microscope"]["config_file"]).read_text()
    assert "#py Property,Camera,Scenario,events" in cfg_text
    with pytest.raises(ValueError, match="scenario"):
        demo_config("nope", tmp_path)
