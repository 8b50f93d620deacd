"""The physics-based virtual microscope.

Plain-Python API (no Micro-Manager): :mod:`.optics` (pupil PSF, Zernike, Strehl,
objectives), :mod:`.camera` (sCMOS/EMCCD), :mod:`.samples` (cells, SMLM emitters, events,
drift), :mod:`.scene` (``CellScene``, ``SMLMScene``), :mod:`.stage` (the sample plane under
the XY stage), :mod:`.lights` (light over wall-clock time), :mod:`.microscope`
(``VirtualMicroscope``), :mod:`.datasets` (``denoise_pairs``, ``stain_pairs``, ``smlm_frames``).
Micro-Manager: :mod:`.devices` and ``virtual_microscope.cfg`` (:func:`virtual_config_path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["AutofocusUniMMCore", "get_virtual_microscope", "virtual_config_path"]


def virtual_config_path() -> Path:
    """Path of the Micro-Manager configuration that loads the whole virtual microscope."""
    return Path(__file__).with_name("virtual_microscope.cfg")


def __getattr__(name: str) -> Any:
    if name == "AutofocusUniMMCore":  # imported on use: it loads pymmcore-plus
        from .autofocus import AutofocusUniMMCore

        return AutofocusUniMMCore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_virtual_microscope(core: Any) -> Any:
    """The ``VirtualMicroscope`` behind a ``UniMMCore`` that loaded the virtual devices."""
    from .devices import get_virtual_microscope as _get

    return _get(core)
