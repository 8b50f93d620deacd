"""One error formatter for every ``smartscope`` command: a user's mistake is one line.

:func:`describe` turns the errors a user can fix (a bad config or input file, an invalid
bundle or model package, a missing optional extra, a parameter out of range) into one
readable line naming the file, field or extra; anything else is a bug and keeps its
traceback. :class:`FormattedErrors` is the click group class of the ``smartscope`` app, so
every command, nested ones included, goes through it: the line goes to stderr as
``error: ...`` and the command exits with status 2 (typer's own usage errors and exits
pass untouched). A stop signal (Ctrl-C, SIGTERM, SIGHUP) that reaches a command is one line
too, with status 128 + signal. With ``--log-level DEBUG`` the
traceback of a formatted error is logged as well.

Optional extras are named by the module that is missing (:mod:`smartscope.extras`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import typer
from typer.core import TyperGroup

from smartscope.extras import EXTRA_OF, needs_extra
from smartscope.signals import signal_name, signal_of

__all__ = ["FormattedErrors", "describe"]

log = logging.getLogger(__name__)


def _user_error_types() -> tuple[type[BaseException], ...]:
    import yaml

    types: list[type[BaseException]] = [ValueError, OSError, yaml.YAMLError, json.JSONDecodeError]
    try:
        from smartscope.drivers import DriverError
        from smartscope.engines.backends import BackendUnavailable
        from smartscope.loop import RunFailed

        types += [DriverError, BackendUnavailable, RunFailed]
    except ImportError:  # pragma: no cover - a broken install shows the real error
        pass
    return tuple(types)


def describe(exc: BaseException) -> str | None:
    """The one line for an error a user can fix; None for a bug (keep its traceback)."""
    if isinstance(exc, ModuleNotFoundError):
        top = (exc.name or "").split(".")[0]
        extra = EXTRA_OF.get(top)
        return f"{needs_extra(extra)} (no module named {top!r})" if extra else None
    from pydantic import ValidationError

    from smartscope.config import ConfigError

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
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    if isinstance(exc, _user_error_types()):
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text
    return None


# typer's own exceptions (it ships its own click): usage errors, exits and aborts pass
_TYPER_OWN: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
)


class FormattedErrors(TyperGroup):
    """Runs every command through :func:`describe`: a user's mistake is one line, exit 2."""

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
                raise
            log.debug("formatted as %r", line, exc_info=exc)
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(2) from None
