"""Python autofocus devices, and a ``UniMMCore`` that routes autofocus calls to them.

``UniMMCore`` (pymmcore-plus 0.18) sends every device call to a Python device when the label
is one, except the autofocus calls: its core keeps a slot for the current autofocus device
(``Keyword.CoreAutoFocus``) that no method reads, so ``fullFocus`` and the rest always go
to the C++ core (and its class cannot be patched: it is a SWIG type).
:class:`AutofocusUniMMCore` adds that routing the way ``UniMMCore`` routes the other device
types: each autofocus call first looks for a Python :class:`AutoFocusDevice` (the current
one) and otherwise calls ``UniMMCore``, so C++ autofocus devices behave as without it.

smartscope's drivers open every configuration with it; load the virtual microscope with it
for its autofocus (a plain ``UniMMCore`` loads it too, without autofocus). Drop this module
once ``UniMMCore`` routes autofocus itself.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

from pymmcore_plus import DeviceType, Keyword
from pymmcore_plus.experimental.unicore import UniMMCore
from pymmcore_plus.experimental.unicore.devices._device_base import Device

from smartscope.core_signals import register_core

__all__ = ["AutoFocusDevice", "AutofocusUniMMCore"]


class AutoFocusDevice(Device):
    """A Python autofocus device (Micro-Manager's ``AutoFocus`` device API).

    ``full_focus`` finds focus once; ``incremental_focus`` takes one step towards it; the
    offset is where, relative to the reference it locks onto, focus is held; continuous
    focusing keeps it there while enabled.
    """

    _TYPE: ClassVar[Literal[DeviceType.AutoFocus]] = DeviceType.AutoFocus

    @abstractmethod
    def full_focus(self) -> None: ...

    @abstractmethod
    def incremental_focus(self) -> None: ...

    @abstractmethod
    def get_offset(self) -> float: ...

    @abstractmethod
    def set_offset(self, offset: float) -> None: ...

    @abstractmethod
    def set_continuous_focusing(self, on: bool) -> None: ...

    @abstractmethod
    def get_continuous_focusing(self) -> bool: ...

    @abstractmethod
    def is_continuous_focus_locked(self) -> bool: ...

    @abstractmethod
    def get_last_focus_score(self) -> float: ...

    @abstractmethod
    def get_current_focus_score(self) -> float: ...


def _py_autofocus(core: Any, label: str | None = None) -> AutoFocusDevice | None:
    """The Python autofocus device ``label`` (or the current one), else None."""
    label = label or core.getAutoFocusDevice()
    if label and core.isPyDevice(label):
        dev: AutoFocusDevice = core._pydevices.get_device_of_type(label, AutoFocusDevice)
        return dev
    return None


class AutofocusUniMMCore(UniMMCore):
    """``UniMMCore`` that also routes the autofocus calls to Python autofocus devices.

    Every call falls through to ``UniMMCore`` (and its C++ core) unless the device is a
    Python :class:`AutoFocusDevice`. After a configuration loads, a lone Python autofocus
    device becomes the core's autofocus device if the configuration named none (the
    shipped ``virtual_microscope.cfg`` names none, so that a plain ``UniMMCore``, whose
    loader hands ``Core,AutoFocus`` to the C++ core, still loads it). It registers its
    signals for the virtual devices (:func:`smartscope.core_signals.register_core`),
    which under pymmcore-plus's Qt back-end could not reach them otherwise.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        register_core(self)

    def loadSystemConfiguration(self, fileName: str | Path = "MMConfig_demo.cfg") -> None:
        super().loadSystemConfiguration(fileName)
        if not self.getAutoFocusDevice():
            found = [str(d) for d in self.getLoadedDevicesOfType(DeviceType.AutoFocus) if self.isPyDevice(d)]
            if len(found) == 1:
                self.setAutoFocusDevice(found[0])

    def setAutoFocusDevice(self, focusLabel: str) -> None:
        label = self._set_current_if_pydevice(Keyword.CoreAutoFocus, focusLabel)
        super().setAutoFocusDevice(label)

    def getAutoFocusDevice(self) -> str:  # type: ignore[override]
        return str(self._pycore.current(Keyword.CoreAutoFocus) or super().getAutoFocusDevice())

    def fullFocus(self) -> None:
        if (dev := _py_autofocus(self)) is None:
            return super().fullFocus()
        with dev:
            dev.full_focus()

    def incrementalFocus(self) -> None:
        if (dev := _py_autofocus(self)) is None:
            return super().incrementalFocus()
        with dev:
            dev.incremental_focus()

    def getAutoFocusOffset(self) -> float:
        if (dev := _py_autofocus(self)) is None:
            return float(super().getAutoFocusOffset())
        with dev:
            return float(dev.get_offset())

    def setAutoFocusOffset(self, offset: float) -> None:
        if (dev := _py_autofocus(self)) is None:
            return super().setAutoFocusOffset(offset)
        with dev:
            dev.set_offset(float(offset))

    def enableContinuousFocus(self, enable: bool) -> None:
        if (dev := _py_autofocus(self)) is None:
            return super().enableContinuousFocus(enable)
        with dev:
            dev.set_continuous_focusing(bool(enable))

    def isContinuousFocusEnabled(self) -> bool:
        if (dev := _py_autofocus(self)) is None:
            return bool(super().isContinuousFocusEnabled())
        with dev:
            return bool(dev.get_continuous_focusing())

    def isContinuousFocusLocked(self) -> bool:
        if (dev := _py_autofocus(self)) is None:
            return bool(super().isContinuousFocusLocked())
        with dev:
            return bool(dev.is_continuous_focus_locked())

    def getLastFocusScore(self) -> float:
        if (dev := _py_autofocus(self)) is None:
            return float(super().getLastFocusScore())
        with dev:
            return float(dev.get_last_focus_score())

    def getCurrentFocusScore(self) -> float:
        if (dev := _py_autofocus(self)) is None:
            return float(super().getCurrentFocusScore())
        with dev:
            return float(dev.get_current_focus_score())
