"""pymmcore-plus signals under either of its back-ends, psygnal or Qt.

pymmcore-plus emits its core and MDA signals through Qt instead of psygnal when a Qt
application exists as the core is made (napari, pymmcore-widgets, napari-micromanager;
``PYMM_SIGNALS_BACKEND`` overrides). Three differences matter to smartscope:

- A Qt signal connected to a plain callable calls it on the thread that connected it,
  through that thread's event loop. A frame emitted on the MDA runner thread would wait
  for a main thread that is itself waiting for the frame: :func:`connect_direct` asks for
  the call on the emitting thread, which is what psygnal does anyway.
- Disconnecting a slot that is not connected raises in Qt: :func:`disconnect_quietly`.
- A Qt bound signal is a new object at every attribute access. Two accesses compare
  equal and hash alike but are not identical, so a signal identifies its core by
  equality, never by ``id``. A psygnal signal knows its group (``instance``); a Qt one
  does not, so a core that wants its Python devices (which see single signals through a
  proxy) to reach its whole group registers it: :func:`register_core`,
  :func:`signal_group_of`.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["connect_direct", "disconnect_quietly", "is_qt_signal", "register_core", "signal_group_of"]

_QT_PACKAGES = ("PyQt5", "PyQt6", "PySide2", "PySide6")


def _qt_package(signal: Any) -> str | None:
    package = type(signal).__module__.split(".", 1)[0]
    return package if package in _QT_PACKAGES else None


def is_qt_signal(signal: Any) -> bool:
    """True for a Qt bound signal (pymmcore-plus's Qt back-end)."""
    return _qt_package(signal) is not None


def connect_direct(signal: Any, slot: Callable[..., Any]) -> None:
    """Connect ``slot`` to be called on the thread that emits ``signal``, for either back-end."""
    package = _qt_package(signal)
    if package is None:
        signal.connect(slot)  # psygnal calls on the emitting thread by default
        return
    qt = importlib.import_module(f"{package}.QtCore").Qt
    direct = getattr(getattr(qt, "ConnectionType", qt), "DirectConnection", None)
    if direct is None:  # PyQt5 keeps the members on Qt itself
        direct = qt.DirectConnection
    signal.connect(slot, direct)


def disconnect_quietly(signal: Any, slot: Callable[..., Any]) -> None:
    """Disconnect ``slot`` from ``signal``; nothing happens if it was not connected."""
    if _qt_package(signal) is None:
        signal.disconnect(slot, missing_ok=True)
        return
    with contextlib.suppress(TypeError, RuntimeError):  # Qt: not connected, or the sender is gone
        signal.disconnect(slot)


# Signal groups of cores that registered themselves; weak, so a core that is gone drops out.
_REGISTERED: list[weakref.ref[Any]] = []
_REGISTERED_LOCK = threading.Lock()


def register_core(core: Any) -> None:
    """Let code that holds one of ``core``'s signals find its whole signal group.

    Needed only under the Qt back-end, where a Python device's core proxy gives single
    signals (``propertyChanged``, ...) that do not know their group. Call it before loading
    the devices that look for the group (smartscope's ``AutofocusUniMMCore`` does).
    """
    with _REGISTERED_LOCK:
        _REGISTERED[:] = [r for r in _REGISTERED if r() is not None and r() is not core.events]
        _REGISTERED.append(weakref.ref(core.events))


def signal_group_of(signal: Any) -> Any:
    """The signal group (a core's ``events``) that ``signal``, its ``propertyChanged``,
    belongs to: psygnal's own ``instance``, else a registered core's; None if unknown."""
    group = getattr(signal, "instance", None)
    if group is not None:
        return group
    with _REGISTERED_LOCK:
        for ref in _REGISTERED:
            events = ref()
            if events is not None and events.propertyChanged == signal:
                return events
    return None
