"""The exception taxonomy: every smartscope exception is a :class:`SmartscopeError`.

:class:`UserError` is the one kind a person can fix (a bad option, input file, config,
bundle, missing backend, a rig that refuses): the command line prints its message as one
``error: ...`` line and exits with its ``exit_code``. Every other exception, a
:class:`SmartscopeError` that is not a ``UserError`` or a builtin one (a ``ValueError``
from a numpy shape check), is a bug: the command line prints a one-line pointer to the log
file that holds its traceback (:mod:`smartscope.errors`).

A project exception that callers catch as a builtin keeps that builtin as a second base
(``class BundleError(UserError, ValueError)``). :class:`InvalidValue` is the general
"a value you gave is wrong" and is a ``ValueError`` too, so pydantic validators and
existing ``except ValueError`` callers still see it. :func:`fail` is the one way a
command stops on a user's mistake. :func:`note_log` / :func:`log_of` record which log (a
run's ``run.log``) already holds an exception's traceback.

This module imports nothing from the project (the bottom layer).
Anchor: python-microscope's ``MicroscopeError`` → ``DeviceError`` → ….
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

__all__ = ["InvalidValue", "SmartscopeError", "UserError", "fail", "log_of", "note_log"]


class SmartscopeError(Exception):
    """The base of every exception smartscope raises on purpose."""


class UserError(SmartscopeError):
    """A mistake the user can fix; its message is the whole story (one line, no traceback).

    ``exit_code`` is the command's exit status when it reaches the command line (2, as for
    a usage error, unless the raiser says otherwise).
    """

    exit_code: int = 2

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


class InvalidValue(UserError, ValueError):
    """A value the user gave (option, field, file content) is out of range or malformed."""


def fail(msg: str, code: int = 1) -> NoReturn:
    """Stop a command on a user's mistake: ``error: MSG`` on stderr, exit status ``code``.

    The one ``fail`` of the project. It raises :class:`UserError`, which the command line
    (:class:`smartscope.errors.FormattedErrors`) prints; library code raises it the same way.
    """
    raise UserError(msg, exit_code=code)


_LOG = "_smartscope_log"


def note_log(exc: BaseException, path: Path) -> None:
    """Record that ``path`` (a run's ``run.log``) holds ``exc``'s traceback."""
    setattr(exc, _LOG, path)


def log_of(exc: BaseException) -> Path | None:
    """The log that holds ``exc``'s traceback (:func:`note_log`), if one does."""
    found = getattr(exc, _LOG, None)
    return found if isinstance(found, Path) else None
