"""The architecture holds: one namespace from four folders, no symlinks, imports one way.

Layers, bottom to top (a module imports only its own layer or lower ones, never in a cycle):
actions/state/exceptions/base_model → config → {frame, metrics, drivers, pipeline and stages, engines, models,
simulators, controllers, safety, storage, report} → registry → loop → runner → {cli,
remote server side, scenarios}.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from layout import ROOT, cycles, import_graph, package_dirs, packages_on_disk, source_modules

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# (module prefix, layer); the longest matching prefix wins
LAYERS: list[tuple[str, int]] = [
    ("smartscope", 0),  # the package's __init__: version only
    ("smartscope.actions", 0),
    ("smartscope.base_model", 0),  # FrozenModel, the one frozen pydantic base
    ("smartscope.exceptions", 0),  # SmartscopeError, UserError, fail: imports nothing
    ("smartscope.extras", 0),
    ("smartscope.state", 0),
    ("smartscope.config", 1),
    ("smartscope.frame", 2),
    ("smartscope.metrics", 2),
    ("smartscope.schema", 2),  # what a run reports (metrics.json, telemetry), typed
    ("smartscope.drivers", 3),
    ("smartscope.pipeline", 3),
    ("smartscope.engines", 3),
    ("smartscope.models", 3),
    ("smartscope.simulators", 3),
    ("smartscope.controllers", 3),
    ("smartscope.safety", 3),
    ("smartscope.storage", 3),
    ("smartscope.batch", 3),  # stacks, chunks and Dask for localize/apply over many inputs
    ("smartscope.report", 3),
    ("smartscope.remote.wire", 3),
    ("smartscope.remote.keys", 3),
    ("smartscope.remote.commands", 3),
    ("smartscope.remote.client", 3),
    ("smartscope.remote.stage", 3),
    ("smartscope.remote", 7),  # server, serve, worker, viewer, cli
    ("smartscope.registry", 4),
    ("smartscope.loop", 5),
    ("smartscope.runner", 6),
    ("smartscope.check", 6),  # commissioning a rig: drivers, storage and safety, no loop
    ("smartscope.logs", 6),  # the run log, a loop listener the runner attaches
    ("smartscope.scenarios", 7),
    ("smartscope.cli", 7),
    ("smartscope.errors", 7),  # the CLI's error formatter
    ("smartscope.napari_plugin", 7),
]


def layer(module: str) -> int:
    if module.endswith(".cli"):  # command-line entry points sit with the CLI
        return 7
    best = max(
        (p for p, _ in LAYERS if module == p or module.startswith(p + ".")),
        key=len,
    )
    return dict(LAYERS)[best]


def test_no_symlinks_are_tracked() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    links = [line.split("\t")[1] for line in out.splitlines() if line.startswith("120000")]
    assert links == [], f"symlinks break Windows checkouts without core.symlinks: {links}"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(data["tool"]["setuptools"]["packages"])
    assert listed == packages_on_disk()
    assert set(package_dirs()) == {
        "smartscope",
        "smartscope.drivers",
        "smartscope.models",
        "smartscope.simulators",
    }


def test_there_are_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


def test_imports_flow_down_the_layers() -> None:
    graph = import_graph()
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, deps in sorted(graph.items())
        for b in sorted(deps)
        if layer(b) > layer(a)
    ]
    assert upward == []


def test_the_engine_runtime_imports_nothing_from_the_models() -> None:
    # the runtime rebuilds networks from smartscope.engines.networks; training sits above it
    graph = import_graph()
    upward = sorted(
        f"{module} imports {dep}"
        for module, deps in graph.items()
        if module.startswith("smartscope.engines")
        for dep in deps
        if dep == "smartscope.models" or dep.startswith("smartscope.models.")
    )
    assert upward == []


def test_config_imports_only_the_bottom_layer_and_itself() -> None:
    graph = import_graph()
    for module, deps in graph.items():
        if module.startswith("smartscope.config"):
            ok = ("smartscope.config", "smartscope.actions", "smartscope.base_model", "smartscope.exceptions")
            bad = {d for d in deps if not d.startswith(ok)}
            assert not bad, f"{module} imports {bad}"


# the terminal (typer, rich) belongs to the command line: `*.cli` (and `*.cli_options`) modules and errors.py
CLI_SUPPORT = {
    "smartscope.cli",
    "smartscope.errors",
    "smartscope.batch.command",  # the options and report localize and apply share (CLI only)
}
TERMINAL_NOT_YET = {
    "smartscope.models.train_common",  # fit's progress bar: moves with the training entry points
}


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_typer_and_rich_are_imported_only_by_command_line_modules() -> None:
    outside = sorted(
        f"{name} imports {sorted(_top_level_imports(path) & {'typer', 'rich', 'click'})}"
        for name, path in source_modules()
        if _top_level_imports(path) & {"typer", "rich", "click"}
        and not name.endswith((".cli", ".cli_options"))
        and name not in CLI_SUPPORT | TERMINAL_NOT_YET
    )
    assert outside == []


def test_the_runtime_loads_no_terminal_library() -> None:
    code = (
        "import sys, smartscope.registry, smartscope.runner\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []


def test_importing_the_safety_gate_loads_only_what_it_needs() -> None:
    code = (
        "import sys, smartscope.safety\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('smartscope') or m in "
        "('zmq', 'torch', 'onnxruntime', 'pymmcore_plus'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    allowed = {
        "smartscope",
        "smartscope.actions",
        "smartscope.base_model",
        "smartscope.exceptions",
        "smartscope.frame",
        "smartscope.safety",
        "smartscope.state",
    }
    extra = {m for m in loaded if m not in allowed and not m.startswith("smartscope.config")}
    assert not extra, f"import smartscope.safety also loaded {sorted(extra)}"


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_the_shipped_bundles(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("smartscope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in packages_on_disk():
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    for bundle in (ROOT / "models" / "bundles").iterdir():
        if bundle.is_dir():
            for f in bundle.iterdir():
                assert f"smartscope/models/bundles/{bundle.name}/{f.name}" in names
    assert "smartscope/simulators/virtual_microscope.cfg" in names
    assert "smartscope/example_config.yaml" in names
