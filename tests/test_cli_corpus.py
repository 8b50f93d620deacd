"""A corpus of bad inputs through every command: one readable line, a non-zero status, no
traceback, bounded memory, and no hardware touched (no run folder, nothing configured)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

from smartscope.cli import app
from smartscope.errors import BUG
from tests.conftest import DATA, LASERS, run_measured

runner = CliRunner()

LASER_SCOPE = {"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS}

# run configurations that must be refused before any hardware moves: (override, words in the line)
BAD_CONFIGS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "unknown key": ({"acquisition": {"exposure": 5}}, ["acquisition.exposure", "Extra inputs"]),
    "wrong type": ({"acquisition": {"n_frames": "many"}}, ["acquisition.n_frames", "integer"]),
    "negative exposure": (
        {"acquisition": {"exposure_ms": -1}},
        ["acquisition.exposure_ms", "greater than 0"],
    ),
    "zero frames": ({"acquisition": {"n_frames": 0}}, ["acquisition.n_frames"]),
    "NaN exposure": ({"acquisition": {"exposure_ms": float("nan")}}, ["acquisition.exposure_ms"]),
    "infinite duration": ({"acquisition": {"duration_s": float("inf")}}, ["acquisition.duration_s"]),
    "huge buffer": ({"microscope": {"buffer_size_mb": 10**12}}, ["microscope.buffer_size_mb"]),
    "unknown driver": ({"microscope": {"driver": "java"}}, ["microscope.driver"]),
    "missing .cfg": (
        {"microscope": {"config_file": "/nope/x.cfg"}},
        ["microscope.config_file", "does not exist"],
    ),
    "unknown camera label": ({"microscope": {"camera": "NoSuchCam"}}, ["microscope.camera", "NoSuchCam"]),
    "unknown stage kind": ({"pipeline": {"stages": [{"kind": "magic"}]}}, ["pipeline.stages[0]", "magic"]),
    "controller on a missing stage": (
        {"controllers": [{"kind": "exposure_band", "low": 1, "high": 2, "stage": "nope"}]},
        ["controllers[0].stage"],
    ),
    "laser above its ceiling": (
        {"microscope": LASER_SCOPE, "acquisition": {"lasers_mw": {"488": 99.0}}},
        ["acquisition.lasers_mw.488"],
    ),
    "unwritable storage root": (
        {"storage": {"root": "/proc/smartscope-runs"}},
        ["storage.root is not writable"],
    ),
    "bad storage name": ({"storage": {"name": "a/b"}}, ["storage.name"]),
    "remote off loopback without keys": ({"remote": {"bind_address": "0.0.0.0"}}, ["remote", "CurveZMQ"]),
}


def _one_line(out: str) -> str:
    for bad in ("Traceback", "validation error for", "For further information visit", "╭─"):
        assert bad not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out
    assert not errors[0].startswith(f"error: {BUG}"), errors[0]  # a bug is not a user's mistake
    return errors[0]


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_run_configs(tmp_path: Path, case: str) -> None:
    override, words = BAD_CONFIGS[case]
    data: dict[str, Any] = {"storage": {"root": str(tmp_path / "runs"), "name": "corpus"}}
    for section, value in override.items():
        data[section] = {**data.get(section, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 2, res.output
    line = _one_line(res.output)
    for w in words:
        assert w in line, line
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was made: hardware moved"


def _files(tmp: Path) -> dict[str, Path]:
    """Missing, empty, truncated and garbage inputs, and a good stack to cut short."""
    good = tmp / "good.tif"
    tifffile.imwrite(good, np.full((4, 32, 32), 100, np.uint16), photometric="minisblack")
    data = good.read_bytes()
    out = {
        "missing": tmp / "missing.tif",
        "empty": tmp / "empty.tif",
        "truncated": tmp / "truncated.tif",
        "garbage": tmp / "garbage.tif",
    }
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(data[: len(data) // 3])
    out["garbage"].write_bytes(os.urandom(4096))
    return out


# inputs a command rightly accepts: a truncated stack replays the pages that are whole, an
# empty YAML is the all-defaults configuration, a report shows whatever the logs hold
ACCEPTED = {
    ("replay", "truncated"),
    ("config-validate", "empty"),
    ("report", "empty"),
    ("report", "truncated"),
    ("report", "garbage"),
}


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "garbage"])
@pytest.mark.parametrize(
    "command",
    [
        ["replay", "{f}"],
        ["localize", "{f}", "--out", "{tmp}/locs"],
        ["config", "validate", "{f}"],
        ["recover", "{d}"],
        ["report", "{d}"],
        ["engines", "import", "{f}", "--out", "{tmp}/bundle"],
        ["calibrate", "psf", "{f}", "--z-step-nm", "20", "--out", "{tmp}/psf.npz"],
        ["calibrate", "psf", "--from-data", "{f}", "--out", "{tmp}/psf.npz"],
        ["calibrate", "camera", "--dark", "{f}", "--flats", "{f}", "--out", "{tmp}/camera.json"],
    ],
    ids=[
        "replay",
        "localize",
        "config-validate",
        "recover",
        "report",
        "engines-import",
        "calibrate-psf",
        "calibrate-psf-data",
        "calibrate-camera",
    ],
)
def test_bad_files_through_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], kind: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a replay's default run folder goes here
    f = _files(tmp_path)[kind]
    d = tmp_path / f"run_{kind}"  # a 'run folder' whose raw stack is that file
    if kind != "missing":
        d.mkdir()
        (d / "raw.ome.tif").write_bytes(f.read_bytes())
        (d / "frames.jsonl").write_bytes(f.read_bytes()[:200])
    args = [a.replace("{f}", str(f)).replace("{d}", str(d)).replace("{tmp}", str(tmp_path)) for a in command]
    res = runner.invoke(app, args)
    label = "-".join(command[:2]) if command[0] == "calibrate" else {
        "replay": "replay",
        "localize": "localize",
        "config": "config-validate",
        "recover": "recover",
        "report": "report",
        "engines": "engines-import",
    }[command[0]]  # fmt: skip
    if (label, kind) in ACCEPTED and res.exit_code == 0:
        assert "Traceback" not in res.output
        return
    assert res.exit_code != 0, res.output
    _one_line(res.output)


def test_a_corrupt_run_through_the_real_process_is_one_line_and_bounded(tmp_path: Path) -> None:
    """The console script itself (signals, logging, formatter), its memory measured."""
    f = _files(tmp_path)["garbage"]
    exe = Path(sys.executable).with_name("smartscope")
    done = run_measured([str(exe), "replay", str(f)])
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert str(f) in line
    assert done.max_rss_mb < 2048, f"{done.max_rss_mb:.0f} MiB"
