"""Configuration: bad files fail before hardware moves, naming the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smartscope.config import ConfigError, example_config_text, load_config, validate_config

BAD = [
    # (mapping, expected field path, expected words in the reason)
    ({"acquisition": {"exposure_ms": -1}}, "acquisition.exposure_ms", "greater than 0"),
    ({"acquisition": {"exposur_ms": 5}}, "acquisition.exposur_ms", "Extra inputs"),
    ({"microscope": {"driver": "micromanager"}}, "microscope.driver", "pymmcore-plus"),
    ({"microscope": {"driver": "replay"}}, "microscope", "replay_path"),
    ({"controllers": [{"kind": "exposure_band", "low": 5, "high": 1}]}, "controllers[0]", "below high"),
    ({"controllers": [{"kind": "exposure_band", "low": "x", "high": 1}]}, "controllers[0].low", "number"),
    ({"controllers": [{"kind": "warp_drive"}]}, "controllers[0]", "warp_drive"),
    (
        {"controllers": [{"kind": "exposure_band", "low": 1, "high": 5, "stage": "nope"}]},
        "controllers[0].stage",
        "not a pipeline stage",
    ),
    (
        {
            "controllers": [
                {"kind": "exposure_band", "low": 1, "high": 5, "actuator": "laser_power", "laser": "561"}
            ]
        },
        "controllers[0].laser",
        "not in microscope.lasers",
    ),
    ({"limits": {"exposure_ms": [5, 1]}}, "limits", "0 < min < max"),
    ({"acquisition": {"exposure_ms": 5000}}, "acquisition.exposure_ms", "outside limits"),
    ({"pipeline": {"stages": [{"kind": "stats"}, {"kind": "stats"}]}}, "pipeline.stages", "unique"),
    ({"storage": {"name": "a/b"}}, "storage.name", "pattern"),
    (
        {"acquisition": {"mda": {"channels": [{"config": "DAPI", "exposure": "fast"}]}}},
        "acquisition",
        "mda.channels.exposure",
    ),
]


@pytest.mark.parametrize(("data", "field", "words"), BAD)
def test_bad_config_names_field_and_reason(data: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    text = str(info.value)
    assert any(line.startswith(field) for line in info.value.problems), text
    assert words.lower() in text.lower(), text


def test_example_config_is_complete_and_valid() -> None:
    cfg = validate_config(yaml.safe_load(example_config_text()))
    assert cfg.controllers[0].kind == "exposure_band"
    # the example mentions every top-level section
    for section in (
        "microscope",
        "acquisition",
        "pipeline",
        "controllers",
        "limits",
        "safe_state",
        "watchdog",
        "storage",
    ):
        assert f"\n{section}:" in example_config_text()


def test_a_useq_mda_is_kept_whole_as_the_plan() -> None:
    plan = {
        "stage_positions": [{"x": 0, "y": 0, "z": 1}, {"x": 10, "y": 5}],
        "z_plan": {"range": 2, "step": 1},
        "channels": ["DAPI"],
        "time_plan": {"interval": 0.25, "loops": 7},
    }
    cfg = validate_config({"acquisition": {"mda": plan}})
    seq = cfg.acquisition.sequence
    assert seq is not None and len(list(seq)) == 2 * 3 * 7  # positions and z are not dropped
    # the plan decides timing, channels and length: nothing else is derived from it
    assert (
        cfg.acquisition.interval_ms == 0
        and cfg.acquisition.channels == []
        and cfg.acquisition.n_frames is None
    )


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("acquisition:\n  exposure_ms: [1,\n")
    with pytest.raises(ConfigError, match="line 3"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar)
