"""Run mypy (strict, settings from pyproject.toml) over every module of the smartscope namespace.

The namespace spans four folders (``smartscope/``, ``drivers/``, ``models/``,
``simulators/``, mapped by ``[tool.setuptools.package-dir]``). mypy cannot follow that
mapping, so this script names each file's module itself and hands mypy the full list.

    python tools/typecheck.py          # what `make lint` runs
"""

from __future__ import annotations

import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layout import ROOT, source_modules


def main() -> int:
    sources = [BuildSource(str(path), module) for module, path in source_modules()]
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml")], require_targets=False)
    try:
        result = build.build(sources, options)
    except CompileError as exc:
        print("\n".join(exc.messages))
        return 2
    for line in result.errors:
        print(line)
    n_files = len(sources)
    if result.errors:
        print(f"mypy: {len(result.errors)} problem(s) in {n_files} source files")
        return 1
    print(f"mypy: no issues found in {n_files} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
