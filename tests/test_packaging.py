"""Packaging: what ships carries no machine's paths, what is imported is declared, one Qt
binding, and the example config shows how a run is stored."""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

import pytest

from smartscope.engines.bundle import load_bundle, portable_command, sha256_bytes, write_bundle

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("smartscope", "drivers", "models", "simulators")
# an absolute path of some machine: a POSIX root folder or a Windows drive
ABSOLUTE = re.compile(rb"(?<![\w.~-])(/(tmp|home|root|work|Users|mnt|var|opt|scratch|data)/|[A-Z]:\\\\)")


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_no_shipped_bundle_file_holds_an_absolute_path() -> None:
    files = [p for p in (ROOT / "models" / "bundles").rglob("*") if p.is_file()]
    assert len(files) > 20
    found = {str(p.relative_to(ROOT)): m.group(0) for p in files if (m := ABSOLUTE.search(p.read_bytes()))}
    assert found == {}, f"absolute paths in shipped bundles: {found}"
    for p in (ROOT / "models" / "bundles").glob("*/engine.json"):  # and each still verifies
        load_bundle(p.parent)


def test_recorded_commands_are_portable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the working folder: relative; elsewhere: the file name, with an existing file's
    sha256 after the command; write_bundle records nothing else."""
    work = tmp_path / "work"
    (work / "cal").mkdir(parents=True)
    (work / "cal" / "psf.npz").write_bytes(b"psf")
    elsewhere = tmp_path / "elsewhere" / "camera.json"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"{}")
    cmd = (
        f"smartscope train smlm --psf {work / 'cal' / 'psf.npz'} --camera={elsewhere} "
        f"--checkpoint-dir /scratch/someone/ck2d --out {work / 'bundle'} --steps 10"
    )
    got = portable_command(cmd, cwd=work)
    assert got == (
        "smartscope train smlm --psf cal/psf.npz --camera=camera.json --checkpoint-dir ck2d "
        f"--out bundle --steps 10  # sha256: camera.json={sha256_bytes(b'{}')}"
    )
    assert portable_command("not 'a shell line") == "not 'a shell line"
    # the bundle writer makes every recorded command portable
    monkeypatch.chdir(work)
    src = load_bundle(ROOT / "models" / "bundles" / "denoise-n2v-lowlight")
    fields = json.loads(src.manifest.model_dump_json())
    fields["provenance"]["command"] = cmd
    out = write_bundle(work / "copy", fields, src.onnx_bytes, src.weights_bytes)
    recorded = load_bundle(out).manifest.provenance.command
    assert recorded == got and not ABSOLUTE.search(recorded.encode())


def _imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(top-level modules imported at module level, those imported inside functions)."""
    top: set[str] = set()
    inner: set[str] = set()

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                (inner if nested else top).update(a.name.split(".")[0] for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                (inner if nested else top).add(child.module.split(".")[0])
            if isinstance(child, ast.If) and getattr(child.test, "id", "") == "TYPE_CHECKING":
                continue  # annotations only
            visit(child, inside)

    visit(tree, False)
    return top, inner


def test_every_imported_package_is_declared() -> None:
    """Every third-party package the sources import is a declared dependency: the core, or
    the extra of the feature that imports it (torch in ``ml``, napari and qtpy in ``viewer``)."""
    project = _pyproject()["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    dists = md.packages_distributions()
    ours = {"smartscope", "tests"}
    missing: dict[str, str] = {}
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            top, inner = _imports(ast.parse(path.read_text(encoding="utf-8")))
            for mod in top | inner:
                if mod in sys.stdlib_module_names or mod in ours or mod == "__future__":
                    continue
                names = {_name(d) for d in dists.get(mod, [mod])}
                if not names & (core | extras):
                    missing[f"{path.relative_to(ROOT)}: {mod}"] = ", ".join(sorted(names))
    assert missing == {}, f"imported but not declared: {missing}"
    assert {"ome-types", "tifffile", "useq-schema"} <= core  # storage and MDA plans, always imported
    useq = next(r for r in project["dependencies"] if _name(r) == "useq-schema")
    assert useq.replace(" ", "") == "useq-schema>=0.9"  # what pymmcore-plus 0.18 and the MDA driver need


def test_one_qt_binding_in_the_extras() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    qt = {_name(r) for reqs in extras.values() for r in reqs} & {"pyqt5", "pyqt6", "pyside2", "pyside6"}
    assert qt == {"pyqt6"}


def test_the_example_config_shows_how_a_run_is_stored() -> None:
    from smartscope.config import example_config_text
    from smartscope.config.storage import StorageConfig

    text = example_config_text()
    block = text[text.index("\nstorage:") :]
    for field in StorageConfig.model_fields:
        assert re.search(rf"\n  {field}:", block), field
    assert "\n  format: ome-tiff" in block and "\n  io: auto" in block
