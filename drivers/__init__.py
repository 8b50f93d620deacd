"""Acquisition backends behind one Protocol (:class:`~smartscope.drivers.base.Driver`)."""

from __future__ import annotations

from smartscope.config import SmartscopeConfig
from smartscope.drivers.base import ActionNotSupported, ApplyResult, Driver, DriverError
from smartscope.safety import SafetyGate
from smartscope.state import DriverState

__all__ = ["ActionNotSupported", "ApplyResult", "Driver", "DriverError", "DriverState", "open_driver"]


def open_driver(cfg: SmartscopeConfig, gate: SafetyGate | None = None) -> Driver:
    """Connect the backend the config names and apply its acquisition settings; every
    write it makes on the way is vetted by ``gate`` (the run's safety gate)."""
    m = cfg.microscope
    if m.driver == "replay":
        from smartscope.drivers.replay import ReplayDriver

        assert m.replay_path is not None  # the config validator guarantees it
        return ReplayDriver(m.replay_path, fps=m.replay_fps)
    if m.driver == "pycromanager":
        from smartscope.drivers.mmcore import PycromanagerDriver

        return PycromanagerDriver(m, cfg.acquisition, cfg.safe_state, gate=gate)
    if cfg.acquisition.sequence is not None:  # an MDA plan: pymmcore-plus's runner and engine
        from smartscope.drivers.mda import MDADriver

        return MDADriver(m, cfg.acquisition, cfg.safe_state, gate=gate)
    from smartscope.drivers.mmcore import PymmcorePlusDriver

    return PymmcorePlusDriver(m, cfg.acquisition, cfg.safe_state, gate=gate)
