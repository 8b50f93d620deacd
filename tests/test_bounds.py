"""Nothing a user or a client sends is unbounded: plans are counted before they are made,
YAML and JSON are bounded in size, nesting and aliases, bundles and packages are measured
before they are read, and every refusal is one line naming the file or field, within
seconds and in bounded memory (the commands run in a process of their own, measured)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartscope.config import ConfigError, validate_config
from smartscope.engines.bundle import BundleError, load_bundle
from tests.conftest import DATA, LASERS, Done, cfg_dict, run_measured

SHIPPED = Path(__file__).parents[1] / "models" / "bundles" / "denoise-n2v-lowlight"
MAX_RSS_MB = 1500  # the interpreter with smartscope imported is ~400-600 MB; expanding is GBs


def smartscope(*args: str, timeout: float = 300) -> Done:
    """A ``smartscope`` command in its own process (:func:`tests.conftest.run_measured`)."""
    return run_measured([sys.executable, "-m", "smartscope.cli", *args], timeout)


def one_line(done: Done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode in (1, 2) and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert done.max_rss_mb < MAX_RSS_MB, done.max_rss_mb
    return lines[0]


def _write(tmp_path: Path, cfg: dict[str, Any], name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


# ------------------------------------------------------------------------ plans


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ({"channels": ["DAPI"], "z_plan": {"range": 1e9, "step": 1}}, "1e+09 events (c=1, z=1e+09)"),
        ({"channels": ["DAPI"], "time_plan": {"interval": 0, "loops": 10**8}}, "1e+08 events (t=1e+08, c=1)"),
        ({"channels": ["DAPI"], "grid_plan": {"rows": 10_000, "columns": 1000}}, "1e+07 events"),
    ],
    ids=["1e9 planes", "1e8 timepoints", "1e7 tiles"],
)
def test_a_huge_plan_is_refused_in_one_line_without_being_made(
    tmp_path: Path, plan: dict[str, Any], words: str
) -> None:
    """N2: plans were expanded in full when the config was read: 7.45 GiB for a 1e9 µm z
    range, a MemoryError for 1e8 timepoints, an abort for a 1e7-tile grid."""
    path = _write(tmp_path, cfg_dict(tmp_path, acquisition={"mda": plan}))
    line = one_line(smartscope("config", "validate", str(path)))
    assert "acquisition.mda:" in line and words in line and "limits.max_plan_events 1e+06" in line


def test_the_plan_limit_is_configurable_and_counted_exactly_for_a_plain_plan(tmp_path: Path) -> None:
    plan = {
        "channels": ["A", "B"],
        "z_plan": {"range": 4, "step": 1},
        "time_plan": {"interval": 0, "loops": 10},
    }
    ok = validate_config(cfg_dict(tmp_path, acquisition={"mda": plan}, limits={"max_plan_events": 100}))
    assert ok.acquisition.sequence is not None and len(list(ok.acquisition.sequence)) == 100
    with pytest.raises(ConfigError, match=r"100 events .* more than limits.max_plan_events 99"):
        validate_config(cfg_dict(tmp_path, acquisition={"mda": plan}, limits={"max_plan_events": 99}))


def test_z_and_xy_limits_are_checked_from_the_plans_extent(tmp_path: Path) -> None:
    plan = {"stage_positions": [{"x": 0, "y": 0, "z": 0}], "z_plan": {"range": 1e9, "step": 1e6}}
    with pytest.raises(ConfigError) as info:
        validate_config(cfg_dict(tmp_path, acquisition={"mda": plan}, limits={"z_um": [-5, 5]}))
    assert info.value.problems == ["acquisition.mda.z_plan: z -5e+08 µm is outside limits.z_um -5..5"]


def test_a_grid_sized_by_the_field_of_view_is_counted_by_the_driver_before_it_is_made(
    demo_core: Any, tmp_path: Path
) -> None:
    """Before the core is known a grid from edges has no size; the driver counts it with the
    camera's field of view before it makes a single event."""
    from smartscope.drivers import DriverError
    from smartscope.drivers.mda import MDADriver

    plan = {"grid_plan": {"top": 0, "left": 0, "bottom": 1e6, "right": 1e6}, "channels": ["DAPI"]}
    cfg = validate_config(cfg_dict(tmp_path, acquisition={"mda": plan}))
    with pytest.raises(
        DriverError, match=r"acquisition\.mda: .* events .* more than limits\.max_plan_events"
    ):
        MDADriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=demo_core)


# ------------------------------------------------------------------ YAML and JSON


def _alias_bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]")
    return "\n".join(lines)


def test_a_yaml_alias_bomb_in_a_plan_is_refused_in_one_line(tmp_path: Path) -> None:
    """F11: a billion laughs in the plan's metadata validated, then hung ``run`` at 2.4 GB."""
    bomb = _alias_bomb().replace("\n", "\n      ")
    text = (
        f"storage: {{root: {tmp_path / 'runs'}}}\n"
        "acquisition:\n  mda:\n    channels: [DAPI]\n    metadata:\n      " + bomb + "\n"
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    for command in (("config", "validate", str(path)), ("run", str(path))):
        line = one_line(smartscope(*command))
        assert str(path) in line and "expands to more than 1000000 nodes" in line


def test_yaml_and_json_are_bounded_in_depth_and_aliases() -> None:
    from smartscope.config.reading import MAX_DEPTH, ReadError, load_json, load_yaml

    with pytest.raises(ReadError, match="nested deeper than"):
        load_yaml("[" * 100_000 + "]" * 100_000, "deep.yaml")
    with pytest.raises(ReadError, match="nested deeper than"):
        load_json("[" * 100_000 + "]" * 100_000, "deep.json")
    with pytest.raises(ReadError, match="refers to itself"):
        load_yaml("a: &a [*a]", "loop.yaml")
    with pytest.raises(ReadError, match="more than 1000 YAML aliases"):
        load_yaml("a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]", "many.yaml")
    assert load_yaml("a: &a [1, 2]\nb: *a\n", "ok.yaml") == {"a": [1, 2], "b": [1, 2]}
    assert load_json('{"a": [[["x"]]], "b": "[[[["}', "ok.json") == {"a": [[["x"]]], "b": "[[[["}
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_json(nested, "edge.json") is not None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("a:\n" + "".join("  " * (k + 1) + f"k{k}:\n" for k in range(500)), "nested deeper than 100 levels"),
        ("[" * 50_000 + "]" * 50_000, "nested deeper than 100 levels"),
        (b"\x00\x01\xffbinary\x00" * 100, "not a UTF-8 text file"),
        (b"acquisition:\x00\n  n_frames: 1\n", "not a text file"),
    ],
    ids=["deep mapping", "deep list", "binary", "NUL bytes"],
)
def test_a_deep_or_binary_config_is_one_line_naming_the_file(
    tmp_path: Path, content: Any, words: str
) -> None:
    """F12: deep YAML was a RecursionError traceback; a binary file's error did not name it."""
    path = tmp_path / "bad.yaml"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    line = one_line(smartscope("config", "validate", str(path)))
    assert str(path) in line and words in line


@pytest.mark.parametrize("n_frames", ["100000000000000000000", "1.0e+20"])
def test_a_huge_n_frames_does_not_validate(tmp_path: Path, n_frames: str) -> None:
    """F12: ``n_frames: 1e20`` validated, then failed in SWIG at the first frame."""
    path = tmp_path / "run.yaml"
    path.write_text(f"storage: {{root: {tmp_path / 'runs'}}}\nacquisition:\n  n_frames: {n_frames}\n")
    line = one_line(smartscope("config", "validate", str(path)))
    assert "acquisition.n_frames" in line and str(path) in line


def test_a_binary_plan_file_is_named(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ConfigError) as info:
        validate_config(cfg_dict(tmp_path, acquisition={"mda_file": str(plan)}))
    (line,) = info.value.problems
    assert line.startswith("acquisition.mda_file") and str(plan) in line and "not a UTF-8 text file" in line


def test_free_form_plan_metadata_is_capped(tmp_path: Path) -> None:
    plan = {"channels": ["DAPI"], "metadata": {"note": "x" * 100_000}}
    with pytest.raises(ConfigError, match=r"mda\.metadata: more than 65536 bytes"):
        validate_config(cfg_dict(tmp_path, acquisition={"mda": plan}))


# ------------------------------------------------------------ bundles and packages


def _copy_bundle(tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    out.mkdir()
    for f in SHIPPED.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def test_a_sparse_64_gib_model_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """N6: a sparse 64 GiB file in a bundle ended in a MemoryError (it was read whole)."""
    bundle = _copy_bundle(tmp_path)
    with (bundle / "model.onnx").open("r+b") as f:
        f.truncate(64 << 30)  # no disk used: a sparse file
    with pytest.raises(BundleError, match=r"model\.onnx: 68719476736 bytes; at most 2147483648 are read"):
        load_bundle(bundle)
    line = one_line(smartscope("apply", str(bundle), str(DATA), "--out", str(tmp_path / "out")))
    assert "model.onnx" in line


def test_a_zip_bomb_bundle_is_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    """N6: a zip whose members declare gigabytes (a zip bomb) was unpacked into memory."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in SHIPPED.iterdir():
            zf.writestr(f.name, f.read_bytes())
    data = bytearray(bomb.read_bytes())
    # declare 4 GiB for engine.json in the central directory (what a bomb's directory says)
    at = data.rfind(b"PK\x01\x02", 0, data.find(b"engine.json", data.find(b"PK\x01\x02")) + 1)
    data[at + 24 : at + 28] = (0xFFFFFF00).to_bytes(4, "little")
    bomb.write_bytes(bytes(data))
    with pytest.raises(
        BundleError, match=r"bomb\.zip.*engine\.json: 4294967040 bytes; at most 1048576 are read"
    ):
        load_bundle(bomb)
    total = tmp_path / "total.zip"
    with zipfile.ZipFile(total, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(5):  # 5 members of 2 GiB - 1 each, declared: 10 GiB
            info = zipfile.ZipInfo(f"part{k}.bin")
            zf.writestr(info, b"")
    data = bytearray(total.read_bytes())
    start = 0
    while (at := data.find(b"PK\x01\x02", start)) >= 0:
        data[at + 24 : at + 28] = ((2 << 30) - 1).to_bytes(4, "little")
        start = at + 4
    total.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"unpack to \d+ bytes; at most"):
        load_bundle(total)


def test_a_deeply_nested_manifest_is_one_line(tmp_path: Path) -> None:
    """N7: deep JSON in engine.json was a RecursionError traceback (apply, localize, engines)."""
    bundle = _copy_bundle(tmp_path)
    (bundle / "engine.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(BundleError, match=r"engine\.json: nested deeper than 100 levels"):
        load_bundle(bundle)
    line = one_line(smartscope("apply", str(bundle), str(DATA), "--out", str(tmp_path / "out")))
    assert "engine.json: nested deeper than" in line
    listed = subprocess.run(
        [sys.executable, "-m", "smartscope.cli", "engines", "list", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    (row,) = json.loads(listed.stdout)
    assert "nested deeper than" in row["error"]


def test_a_billion_laughs_rdf_yaml_is_refused_before_bioimageio_reads_it(tmp_path: Path) -> None:
    """N7: ``engines import`` of a package whose rdf.yaml is an alias bomb: MemoryError."""
    pytest.importorskip("bioimageio.spec")
    package = tmp_path / "laughs.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rdf.yaml", "format_version: 0.5.3\ntype: model\n" + _alias_bomb())
    line = one_line(smartscope("engines", "import", str(package), "--out", str(tmp_path / "out")))
    assert "laughs.zip!rdf.yaml" in line and "expands to more than" in line


# ------------------------------------------------------------------ run outputs


def test_metrics_json_is_strict_json(laser_core: Any, tmp_path: Path) -> None:
    """N13: ``metrics.json`` held a bare NaN (no action: no action latency)."""
    from smartscope.drivers.mmcore import PymmcorePlusDriver
    from smartscope.runner import run

    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
            acquisition={"exposure_ms": 1.0, "n_frames": 5},
        )
    )
    driver = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core)
    res = run(cfg, driver=driver, report=False)

    def no_constants(name: str) -> None:
        raise AssertionError(f"metrics.json holds {name}: not strict JSON")

    m = json.loads((Path(res.run_dir) / "metrics.json").read_text(), parse_constant=no_constants)
    assert m["latency_action"]["p50_ms"] is None


def test_a_demo_whose_run_fails_is_one_line(
    laser_core: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N14: a failed demo printed a 40-line traceback. Here the demo's run is a real run on
    the laser demo config that faults (a stage raises at frame 3)."""
    from typer.testing import CliRunner

    from smartscope import cli
    from smartscope.drivers.mmcore import PymmcorePlusDriver
    from smartscope.runner import run
    from smartscope.scenarios import SCENARIOS
    from smartscope.scenarios.base import require_ok

    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS},
            acquisition={"exposure_ms": 1.0, "n_frames": 50},
            pipeline={"stages": [{"kind": "fault", "at_frame": 3}]},
        )
    )

    def failing(params: Any, out: Path, hooks: Any) -> Any:
        driver = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=laser_core)
        return require_ok(run(cfg, driver=driver, report=False), "bleach")

    monkeypatch.setitem(SCENARIOS, "bleach", dataclasses.replace(SCENARIOS["bleach"], run=failing))
    result = CliRunner().invoke(cli.app, ["demo", "--frames", "50", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: the bleach run failed: ") and "injected fault at frame 3" in line
    assert "(run folder " in line
