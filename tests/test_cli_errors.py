"""Every command answers a user's mistake with one readable line: no traceback, no pydantic
dump. Also ``--version``, ``--log-level``, ``config schema`` and the run's ``run.log``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

from smartscope import __version__
from smartscope.cli import app
from smartscope.config import SmartscopeConfig
from smartscope.errors import BUG

runner = CliRunner()
BUNDLES = Path(__file__).resolve().parents[1] / "models" / "bundles"


def _one_line_error(res: object, code: int | tuple[int, ...], *must: str) -> str:
    out = res.output  # type: ignore[attr-defined]
    assert res.exit_code in ((code,) if isinstance(code, int) else code), out  # type: ignore[attr-defined]
    for bad in ("Traceback", "validation error for", "For further information visit", "╭─"):
        assert bad not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, out
    assert not errors[0].startswith(f"error: {BUG}"), errors[0]  # a bug is not a user's mistake
    for m in must:
        assert m in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize(
    ("args", "code", "must"),
    [
        (["run", "{tmp}/missing.yaml"], 2, ["missing.yaml", "file not found"]),
        (["config", "validate", "{tmp}/list.yaml"], 2, ["(top level): expected a mapping"]),
        (["demo", "--frames", "-5", "--out", "{tmp}"], 2, ["n_frames", "greater than 0"]),
        (["localize", "{tmp}/missing.tif", "--out", "{tmp}/o"], 1, ["missing.tif", "does not exist"]),
        (["localize", "{tmp}/stack.tif", "--out", "{tmp}/o", "--camera", "ccd"], 1, ["kind", "'ccd'"]),
        (["replay", "{tmp}/missing.tif"], 2, ["replay_path", "does not exist"]),
        (["worker", "--stage", '{"kind": "engine", "bundle": "nope"}'], 2, ["stage.engine.bundle", "nope"]),
        (["engines", "import", "{tmp}/list.yaml", "--out", "{tmp}/b"], 1, ["list.yaml", "not a bioimage.io"]),
        (
            [
                "export",
                str(BUNDLES / "stain-l1-small"),
                "--bioimageio",
                "--test-input",
                "{tmp}/none.tif",
                "--out",
                "{tmp}/p.zip",
            ],
            1,
            ["--test-input", "does not exist"],
        ),
        (["view", "{tmp}"], 2, ["neither a run folder"]),
        (["--log-level", "loud", "engines"], 2, ["--log-level", "'loud'"]),
        (["train", "denoise", "--simulate", "mars", "--out", "{tmp}/m"], 1, ["unknown scenario 'mars'"]),
    ],
)
def test_bad_input_is_one_readable_line(tmp_path: Path, args: list[str], code: int, must: list[str]) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    tifffile.imwrite(tmp_path / "stack.tif", np.full((2, 16, 16), 100, np.uint16), photometric="minisblack")
    res = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    _one_line_error(res, code, *must)


def test_missing_module_and_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    from smartscope.errors import describe

    line = describe(ModuleNotFoundError("No module named 'bioimageio'", name="bioimageio.spec"))
    assert (
        line
        == "needs the 'bioimageio' extra: pip install 'smartscope[bioimageio]' (no module named 'bioimageio')"
    )
    assert describe(ModuleNotFoundError("x", name="not_ours")) is None  # a broken install is a bug
    assert describe(KeyError("x")) is None and describe(AttributeError("y")) is None  # bugs keep tracebacks


def test_console_script_formats_errors_and_prints_version(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("smartscope")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"smartscope {__version__}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("acquisition:\n  exposure_ms: [1,\n")
    res = subprocess.run([str(exe), "run", str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith(f"error: invalid configuration {bad}: line ")
    assert len(res.stderr.strip().splitlines()) == 1


def test_config_schema_is_the_json_schema_of_the_run_configuration(tmp_path: Path) -> None:
    res = runner.invoke(app, ["config", "schema"])
    assert res.exit_code == 0
    schema = json.loads(res.stdout)
    assert schema == SmartscopeConfig.model_json_schema()
    assert set(schema["properties"]) >= {"microscope", "acquisition", "pipeline", "controllers", "limits"}
    # the commented example validates against it (jsonschema is a napari dependency here)
    jsonschema = pytest.importorskip("jsonschema")
    example = yaml.safe_load(runner.invoke(app, ["config", "--example"]).stdout)
    jsonschema.validate(example, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"acquisition": {"exposure_ms": "fast"}}, schema)


def test_every_run_folder_has_a_run_log(tmp_path: Path) -> None:
    res = runner.invoke(app, ["--log-level", "INFO", "demo", "--frames", "20", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    text = (run_dir / "run.log").read_text()
    assert f"run folder {run_dir}" in text
    assert "event start driver=pymmcore-plus" in text and "event stop status=completed" in text
    actions = [json.loads(x) for x in (run_dir / "actions.jsonl").read_text().splitlines()]
    assert text.count("action laser_power from laser_band") == len(actions) > 0
    assert text.rstrip().endswith("run.log closed")


# user mistakes found only once a command builds its stages, reads a calibration or opens a
# client: each was an `internal error (a bug, not your input)` with exit status 1 while it
# raised a builtin ValueError; now an InvalidValue, one `error:` line naming the field or file
_STAIN = str(BUNDLES / "stain-l1-small")
_DENOISE = str(BUNDLES / "denoise-care-live")
_SMLM = str(BUNDLES / "smlm-decode-small")
_STAGE_MISTAKES: list[tuple[str, dict[str, object], list[str]]] = [
    ("stain stage on a denoise bundle", {"kind": "stain", "bundle": _DENOISE}, ["bundle:", "'stain' bundle"]),
    (
        "engine outputs it lacks",
        {"kind": "engine", "bundle": _DENOISE, "outputs": ["nope"]},
        ["outputs", "'nope'"],
    ),
    (
        "event U-Net on a denoise bundle",
        {"kind": "event_unet", "bundle": _DENOISE},
        ["bundle:", "events bundle"],
    ),
    (
        "SMLM network on a stain bundle",
        {"kind": "smlm", "method": "network", "bundle": _STAIN},
        ["stain-l1-small", "not a DECODE-class SMLM engine"],
    ),
    (
        "stain given channel it lacks",
        {"kind": "stain", "bundle": _STAIN, "given": {"nope": "x"}},
        ["given:", "'nope'"],
    ),
    (
        "SMLM bundle of another pixel size",
        {"kind": "smlm", "method": "network", "bundle": _SMLM, "pixel_size_um": 0.16},
        ["smlm-decode-small", "pixel size: data 160 nm, bundle 100 nm", "force"],
    ),
    (
        "PSF file that is not one",
        {"kind": "smlm", "psf_file": "{tmp}/bad.npz"},
        ["bad.npz", "not a smartscope PSF"],
    ),
    (
        "camera file that is not JSON",
        {"kind": "smlm", "camera_file": "{tmp}/bad.json"},
        ["bad.json", "not valid JSON"],
    ),
    (
        "camera file with a bad field",
        {"kind": "smlm", "camera_file": "{tmp}/cam.json"},
        ["cam.json", "'em_gain'"],
    ),
]


def _mistake_files(tmp: Path) -> None:
    (tmp / "bad.npz").write_bytes(b"not a PSF")
    (tmp / "bad.json").write_text("{not json")
    cam = {"kind": "emccd", "offset_adu": 100, "gain_adu_per_e": 2, "em_gain": 0.5, "read_noise_e": 1}
    (tmp / "cam.json").write_text(json.dumps(cam))
    (tmp / "key.key_secret").write_text("not a key")
    tifffile.imwrite(tmp / "stack.tif", np.full((4, 32, 32), 100, np.uint16), photometric="minisblack")


@pytest.mark.parametrize(
    ("stage", "must"), [(s, m) for _, s, m in _STAGE_MISTAKES], ids=[i for i, _, _ in _STAGE_MISTAKES]
)
def test_a_bad_stage_is_a_user_error_before_any_run(
    tmp_path: Path, stage: dict[str, object], must: list[str]
) -> None:
    _mistake_files(tmp_path)
    stage = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in stage.items()}
    runs = tmp_path / "runs"
    config = {"storage": {"root": str(runs), "name": "x"}, "acquisition": {"n_frames": 2}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**config, "pipeline": {"stages": [stage]}}))
    _one_line_error(runner.invoke(app, ["run", str(path)]), 2, *must)
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was made: hardware moved"


@pytest.mark.parametrize(
    ("args", "must"),
    [
        (["replay", "{tmp}/stack.tif", "--config", "{tmp}/outputs.yaml"], ["outputs", "'nope'"]),
        (
            ["watch", "--secret-key", "{tmp}/key.key_secret", "--seconds", "1"],
            ["--secret-key", "--server-key"],
        ),
    ],
    ids=["replay", "watch"],
)
def test_a_bad_stage_or_key_through_other_commands_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], must: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # a replay's run folder would go here
    _mistake_files(tmp_path)
    outputs = {"kind": "engine", "bundle": _DENOISE, "outputs": ["nope"]}
    (tmp_path / "outputs.yaml").write_text(yaml.safe_dump({"pipeline": {"stages": [outputs]}}))
    res = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    _one_line_error(res, 2, *must)
