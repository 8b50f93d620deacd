"""Acquisition backends behind one Protocol (:class:`~smartscope.drivers.base.Driver`)."""

from __future__ import annotations

from collections.abc import Callable

from smartscope.config import SmartscopeConfig
from smartscope.drivers.base import ActionNotSupported, ApplyResult, Driver, DriverError
from smartscope.safety import SafetyGate
from smartscope.state import DriverState

__all__ = [
    "DRIVER_BUILDERS",
    "ActionNotSupported",
    "ApplyResult",
    "Driver",
    "DriverError",
    "DriverState",
    "open_driver",
]


def _replay(cfg: SmartscopeConfig, gate: SafetyGate | None) -> Driver:
    from smartscope.drivers.replay import ReplayDriver

    assert cfg.microscope.replay_path is not None  # the config validator guarantees it
    return ReplayDriver(cfg.microscope.replay_path, fps=cfg.microscope.replay_fps)


def _pycromanager(cfg: SmartscopeConfig, gate: SafetyGate | None) -> Driver:
    from smartscope.drivers.mmcore import PycromanagerDriver

    return PycromanagerDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, gate=gate)


def _pymmcore_plus(cfg: SmartscopeConfig, gate: SafetyGate | None) -> Driver:
    if cfg.acquisition.sequence is not None:  # an MDA plan: pymmcore-plus's runner and engine
        from smartscope.drivers.mda import MDADriver

        return MDADriver(cfg.microscope, cfg.acquisition, cfg.safe_state, gate=gate)
    from smartscope.drivers.mmcore import PymmcorePlusDriver

    return PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, gate=gate)


DRIVER_BUILDERS: dict[str, Callable[[SmartscopeConfig, SafetyGate | None], Driver]] = {
    "pymmcore-plus": _pymmcore_plus,
    "pycromanager": _pycromanager,
    "replay": _replay,
}
"""``MicroscopeConfig.driver`` -> builder (a heavy backend is imported only when chosen)."""


def open_driver(cfg: SmartscopeConfig, gate: SafetyGate | None = None) -> Driver:
    """Connect the backend the config names and apply its acquisition settings; every
    write it makes on the way is vetted by ``gate`` (the run's safety gate)."""
    return DRIVER_BUILDERS[cfg.microscope.driver](cfg, gate)
