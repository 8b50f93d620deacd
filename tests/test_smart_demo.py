"""Demo scenarios: one registry, one shape; a run leaves its plot, summary and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartscope.config import (
    AOScenario,
    EventsPositionsScenario,
    EventsScenario,
    LowlightScenario,
    validate_config,
)
from smartscope.scenarios import SCENARIOS, ao, events, events_positions, lowlight, run_demo


def test_ao_demo_writes_wavefront_plot_and_summary(tmp_path: Path) -> None:
    outcome = run_demo("ao", tmp_path, seed=3)
    png = outcome.plot
    assert png.name == "ao.png" and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((png.parent / "smart_summary.json").read_text())
    assert summary["rms_after_rad"] < summary["rms_before_rad"]
    assert (png.parent / "actions.jsonl").exists()
    assert "<h2>scenario: ao</h2>" in (png.parent / "report.html").read_text()  # plot inlined in the report


def test_every_scenario_has_the_same_shape() -> None:
    assert set(SCENARIOS) == {"bleach", "events", "events_positions", "ao", "lowlight", "smlm", "stain"}
    for name, spec in SCENARIOS.items():
        params = spec.demo_params(0, None)
        assert isinstance(params, spec.params) and params.kind == name  # type: ignore[attr-defined]
        assert callable(spec.run) and callable(spec.score) and callable(spec.plot) and spec.summary


@pytest.mark.parametrize(
    ("module", "params", "stage", "controller"),
    [
        (events, EventsScenario(), "event_detector", "event_trigger"),
        (ao, AOScenario(), "stats", "modal_ao"),
        (lowlight, LowlightScenario(), "engine", "snr_dose"),
        (events_positions, EventsPositionsScenario(), "event_detector", "event_acquire"),
    ],
)
def test_scenario_run_configs_validate_and_name_their_parts(
    tmp_path: Path, module: object, params: object, stage: str, controller: str
) -> None:
    data = module.run_config(params, tmp_path)  # type: ignore[attr-defined]
    cfg = validate_config(data, "scenario")
    assert cfg.pipeline.stages[0].kind == stage
    assert cfg.controllers[0].kind == controller


def test_events_cfg_file_names_its_scenario_and_unknown_names_are_refused(tmp_path: Path) -> None:
    data = events.run_config(EventsScenario(), tmp_path)
    cfg_text = Path(data["microscope"]["config_file"]).read_text()
    assert "#py Property,Camera,Scenario,events" in cfg_text
    with pytest.raises(ValueError, match="scenario"):
        run_demo("nope", tmp_path)
