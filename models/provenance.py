"""How a bundle was made: the command that reproduces it.

Kept free of torch so the CLI starts fast.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _from_context(ctx: Any) -> str:
    """``smartscope train <cmd> ...`` rebuilt from a typer/click context's parameters.

    Options at their defaults are left out; what remains reproduces the run whether it
    was typed in a shell or invoked in-process (notebook, test runner).
    """
    parts = ["smartscope", "train", ctx.info_name or ctx.command.name or "?"]
    for param in ctx.command.params:
        value: Any = ctx.params.get(param.name or "")
        kind = getattr(param, "param_type_name", "")
        if kind == "argument":
            parts.append(str(value))
            continue
        if kind != "option" or value is None or value == param.default:
            continue
        opt = max(param.opts, key=len)
        if param.is_flag:
            parts.append(opt if value else (param.secondary_opts or [opt])[0])
        elif isinstance(value, list | tuple):
            for item in value:
                parts += [opt, str(item)]
        else:
            parts += [opt, str(value)]
    return shlex.join(parts)


def command_line(argv: Sequence[str] | None = None, ctx: Any = None) -> str:
    """The command that made this bundle, for provenance.

    Given the command's ``typer.Context`` it is rebuilt from the parsed parameters;
    otherwise it is ``argv`` (default ``sys.argv``) with the program name made portable.
    """
    if ctx is not None:
        return _from_context(ctx)
    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(("smartscope", "smartscope.exe")):
        args[0] = "smartscope"
    elif args and Path(args[0]).name == "cli.py" and Path(args[0]).parent.name == "models":
        args[0:1] = ["python", "-m", "smartscope.models.cli"]
    return shlex.join(args)
