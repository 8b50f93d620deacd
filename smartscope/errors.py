"""One error formatter for every ``smartscope`` command: a user's mistake is one line, a bug
points at its traceback.

:func:`describe` turns the errors a user can fix into one readable line naming the file,
field or extra: a :class:`~smartscope.exceptions.UserError` (a bad option, input file,
bundle, config, a refusing rig), pydantic's ``ValidationError``, the file-not-found family
(``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``),
a disk that is full, over quota or read-only, and a missing optional extra (named by
:mod:`smartscope.extras`). Nothing else: a builtin ``ValueError`` or ``OSError`` from deep
inside (a numpy shape check) is a bug, not bad input.

:class:`FormattedErrors` is the click group class of the ``smartscope`` app, so every
command, nested ones included, goes through it: a user's mistake goes to stderr as
``error: ...`` and the command exits with the error's status (2 unless it says otherwise);
a bug is one ``error: internal error ...`` line that names the log holding its traceback
(the run's ``run.log`` when the bug ended a run, else a file in the temporary folder), exit
status 1. typer's own usage errors and exits pass untouched. A stop signal (Ctrl-C, SIGTERM,
SIGHUP) that reaches a command is one line too, with status 128 + signal. With
``--log-level DEBUG`` the traceback of a formatted error or a bug is logged as well.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from smartscope.config import ConfigError
from smartscope.exceptions import UserError, log_of
from smartscope.extras import EXTRA_OF, needs_extra
from smartscope.signals import signal_name, signal_of

__all__ = ["BUG", "FormattedErrors", "describe", "report_bug"]

log = logging.getLogger(__name__)

BUG = "internal error"
"""How the line of a bug starts (after ``error: ``), so it never reads as a user's mistake."""

_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
# a disk that is full, over quota or read-only: the user's to fix, never a bug
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def describe(exc: BaseException) -> str | None:
    """The one line for an error a user can fix; None for a bug (its traceback is kept)."""
    if isinstance(exc, ModuleNotFoundError):
        top = (exc.name or "").split(".")[0]
        extra = EXTRA_OF.get(top)
        return f"{needs_extra(extra)} (no module named {top!r})" if extra else None
    from pydantic import ValidationError

    if isinstance(exc, ConfigError):
        return f"invalid configuration {exc.source}: " + "; ".join(exc.problems)
    if isinstance(exc, ValidationError):
        probs = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"]) or exc.title
            got = e.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
            probs.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}{shown}")
        return f"invalid {exc.title}: " + "; ".join(probs)
    if isinstance(exc, _FILE_ERRORS) or (isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS):
        return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    if isinstance(exc, UserError):
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def report_bug(exc: BaseException) -> str:
    """Write ``exc``'s traceback to a log and return the one line that points at it.

    The log is the run's ``run.log`` when the bug ended a run (the runner logged it there),
    else a new file in the temporary folder.
    """
    path = log_of(exc)
    if path is None:
        folder = Path(tempfile.gettempdir()) / "smartscope"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    what = " ".join(str(exc).split())
    head = f"{type(exc).__name__}: {what}" if what else type(exc).__name__
    return f"{BUG} (a bug, not your input): {head}; the traceback is in {path}"


# typer's own exceptions (it ships its own click): usage errors, exits and aborts pass
_TYPER_OWN: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
)


class FormattedErrors(TyperGroup):
    """Runs every command through :func:`describe`: a user's mistake is one line, a bug too."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _TYPER_OWN:
            raise
        except KeyboardInterrupt as exc:  # a stop signal the command did not handle itself
            signum = signal_of(exc)
            during = getattr(exc, "during", "")  # a run stopped outside its loop says when
            where = f" during {during}: the safe state is on, the microscope released" if during else ""
            typer.echo(f"error: stopped by {signal_name(signum)}{where}", err=True)
            raise typer.Exit(128 + signum) from None
        except Exception as exc:
            line = describe(exc)
            if line is None:
                log.debug("a bug", exc_info=exc)  # --log-level DEBUG: on the console too
                typer.echo(f"error: {report_bug(exc)}", err=True)
                raise typer.Exit(1) from None
            log.debug("formatted as %r", line, exc_info=exc)
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(exc.exit_code if isinstance(exc, UserError) else 2) from None


def command_app(**kwargs: Any) -> typer.Typer:
    """A typer app the way every smartscope command group is made: its commands' errors
    go through :class:`FormattedErrors` (one line), and ``--help`` uses click's plain
    layout, which rewraps a docstring's paragraphs at the terminal's width and never cuts
    an option name (typer's rich panels cut ``--gain-adu-per-e`` and ``--label-free-mode``
    at 80 columns, and kept a docstring's line breaks, breaking sentences mid-line)."""
    kwargs.setdefault("cls", FormattedErrors)
    kwargs.setdefault("rich_markup_mode", None)
    return typer.Typer(**kwargs)
