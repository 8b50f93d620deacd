"""Run smartscope as if some optional packages were not installed (used by test_install_extras).

``python tests/no_extras.py torch,onnxruntime cli demo --frames 10`` runs the ``smartscope``
command line; ``... torch code 'python source'`` runs code. A finder placed first on
``sys.meta_path`` makes every import of the named top-level packages fail exactly as a
missing package does (``ModuleNotFoundError`` naming it), whatever is installed: this
tests the install without torch (or without the ``inference`` extra) without a second venv.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from typing import Any


class Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: Any = None) -> None:
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def main(argv: list[str]) -> None:
    blocked, mode, *rest = argv
    sys.meta_path.insert(0, Blocker(set(blocked.split(","))))
    if mode == "cli":
        sys.argv = ["smartscope", *rest]
        from smartscope.cli import main as cli_main

        cli_main()
    elif mode == "code":
        exec(compile(rest[0], "<no_extras>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit(f"mode must be cli or code, got {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
