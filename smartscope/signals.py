"""Stop signals end a run like Ctrl-C, and a second one cannot cut the shutdown short.

:func:`install` (the CLI does it once) makes SIGTERM and SIGHUP — how service managers,
schedulers, ``kill`` and a closed terminal stop a process — raise :class:`Interrupted`, a
``KeyboardInterrupt``, in the main thread, so every command stops the way Ctrl-C stops
it. Inside :func:`shielded` (the loop's shutdown: safe state, frames drained, files
closed, metrics written) further stop signals are logged, kept (the context yields the
list) and otherwise ignored: the shutdown finishes first. A command that was stopped exits
with ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM), also when the signal came
while it was starting or closing (:attr:`Interrupted.during` says when).
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
    """A stop signal, raised in the main thread; ``during`` says what it stopped (e.g.
    ``start-up``), when something caught it on the way and knows."""

    def __init__(self, signum: int, during: str = "") -> None:
        super().__init__(signal_name(signum) + (f" during {during}" if during else ""))
        self.signum = signum
        self.during = during


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
def shielded(why: str) -> Iterator[list[int]]:
    """Stop signals are logged and kept, not acted on, inside: the context yields the list
    of those received (main thread only; elsewhere a no-op that yields an empty list)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def ignore(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        log.warning("%s received while %s: finishing that first", signal_name(signum), why)

    previous: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, ignore)
    try:
        yield received
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
