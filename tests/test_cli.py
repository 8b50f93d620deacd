"""The smartscope command line, run as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from smartscope.cli import app

runner = CliRunner()


def test_config_example_round_trips_through_validate(tmp_path: Path) -> None:
    out = runner.invoke(app, ["config", "--example"])
    assert out.exit_code == 0
    path = tmp_path / "example.yaml"
    path.write_text(out.stdout)
    assert yaml.safe_load(out.stdout)["controllers"][0]["kind"] == "exposure_band"
    ok = runner.invoke(app, ["config", "validate", str(path)])
    assert ok.exit_code == 0, ok.output


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("acquisition:\n  exposure_ms: -3\n")
    out = runner.invoke(app, ["run", str(path)])
    assert out.exit_code == 2
    assert "acquisition.exposure_ms" in out.output


def test_demo_runs_the_closed_loop(tmp_path: Path) -> None:
    out = runner.invoke(app, ["demo", "--frames", "80", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "frames stored" in out.output
    (run_dir,) = list(tmp_path.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["frames_stored"] == 80
    assert (run_dir / "report.html").is_file()


def test_demo_with_denoiser_saves_the_denoised_stream(tmp_path: Path) -> None:
    out = runner.invoke(app, ["demo", "--frames", "40", "--out", str(tmp_path), "--denoise"])
    assert out.exit_code == 0, out.output
    (run_dir,) = list(tmp_path.iterdir())
    assert (run_dir / "outputs" / "denoise.denoised.ome.tif").is_file()
    analysed = [json.loads(line) for line in (run_dir / "analysis.jsonl").read_text().splitlines()]
    snr = [a["values"]["denoise"]["snr"] for a in analysed if "values" in a]
    assert snr and all(s > 0 for s in snr)


def test_run_with_a_remote_section_serves_and_shuts_down(tmp_path: Path) -> None:
    cfg = {
        "acquisition": {"exposure_ms": 2.0, "n_frames": 30},
        "remote": {"pub_port": 0, "control_port": 0},
        "storage": {"root": str(tmp_path), "name": "served"},
    }
    path = tmp_path / "served.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = runner.invoke(app, ["run", str(path)])
    assert out.exit_code == 0, out.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((run_dir / "metrics.json").read_text())["frames_stored"] == 30


def test_demo_smlm_scenario_localizes_live(tmp_path: Path) -> None:
    out = runner.invoke(app, ["demo", "--scenario", "smlm", "--frames", "60", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    (run_dir,) = list(tmp_path.iterdir())
    assert (run_dir / "outputs" / "localizations_thunderstorm.csv").is_file()


def test_demo_unknown_scenario_is_refused(tmp_path: Path) -> None:
    out = runner.invoke(app, ["demo", "--scenario", "disco", "--out", str(tmp_path)])
    assert out.exit_code == 2 and "disco" in out.output
