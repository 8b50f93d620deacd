"""The smartscope namespace as folders: module name -> file, from pyproject's package-dir.

Shared by ``tools/typecheck.py`` and the architecture tests (``tests/test_layout.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, Path]:
    """``{"smartscope": ROOT/"smartscope", "smartscope.drivers": ROOT/"drivers", ...}``."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = data["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def source_modules() -> Iterator[tuple[str, Path]]:
    """Every ``.py`` file of the namespace with its dotted module name."""
    for package, folder in package_dirs().items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def packages_on_disk() -> set[str]:
    """Dotted names of every folder with an ``__init__.py`` under the mapped roots."""
    out = set()
    for package, folder in package_dirs().items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            out.add(".".join([package, *rel.parts]))
    return out


def project_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of the namespace that ``module`` (file ``path``) imports, anywhere in the file.

    Imports inside functions and under ``TYPE_CHECKING`` count too: layering is about what a
    module depends on, not when it loads it. ``from a import b`` counts as ``a.b`` when that
    is a module, else as ``a``.
    """
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "smartscope":
                    out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "smartscope":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    out.discard(module)
    return {m for m in out if m in known}


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of the namespace it imports`` for every module."""
    files = dict(source_modules())
    known = set(files)
    return {m: project_imports(p, m, known) for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out
