"""Stop signals end a run like Ctrl-C, and a second one cannot cut the shutdown short.

:func:`install` (the CLI does it once) makes SIGTERM and SIGHUP — how service managers,
schedulers, ``kill`` and a closed terminal stop a process — raise :class:`Interrupted`, a
``KeyboardInterrupt``, in the main thread, so every command stops the way Ctrl-C stops
it. Inside :func:`shielded` (the loop's shutdown: safe state, frames drained, files
closed, metrics written) further stop signals are logged and ignored. A command that was
stopped exits with ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "Interrupted", "install", "on_stop_signal", "shielded", "signal_name", "signal_of"]

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(
    s
    for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
    if s is not None
)


class Interrupted(KeyboardInterrupt):
    """A stop signal other than Ctrl-C, raised in the main thread."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def signal_of(exc: BaseException) -> int:
    """The signal behind a ``KeyboardInterrupt`` (SIGINT unless it is an :class:`Interrupted`)."""
    return int(getattr(exc, "signum", signal.SIGINT))


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install() -> None:
    """SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (SIGINT already
    raises ``KeyboardInterrupt``). Only from the main thread; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        if sig != signal.SIGINT:
            signal.signal(sig, _raise)


@contextlib.contextmanager
def shielded(why: str) -> Iterator[None]:
    """Stop signals are logged and ignored inside (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ignore(signum: int, frame: FrameType | None) -> None:
        log.warning("%s received while %s: finishing that first", signal_name(signum), why)

    previous: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, ignore)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def on_stop_signal(first: Callable[[int], None]) -> Iterator[None]:
    """Inside, the first stop signal calls ``first(signum)``; the rest are logged and
    ignored. Main thread only (elsewhere a no-op: the process's own handlers apply)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if seen:
            log.warning("%s received while stopping: the safe shutdown goes on", signal_name(signum))
            return
        seen.append(signum)
        first(signum)

    previous: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
