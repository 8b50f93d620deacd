"""The one small Protocol every acquisition backend implements.

Drivers are used from a single thread, the loop's acquisition thread: ``start`` once,
then ``next_frame`` and ``apply`` alternate. ``safe_state`` is the exception: the watchdog
may call it from another thread, so it must not wait on the acquisition thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from smartscope.actions import Action
from smartscope.exceptions import UserError
from smartscope.frame import Frame
from smartscope.safety import Devices
from smartscope.state import DriverState


class DriverError(UserError, RuntimeError):
    """A backend failed; the message says which device and why."""


class ActionNotSupported(DriverError):
    """The backend cannot carry out this kind of action."""


@dataclass(slots=True)
class ApplyResult:
    """What became of a batch of actions.

    ``errors[i]`` is ``None`` if action ``i`` reached the hardware, else the reason.
    ``revision`` is the state revision the batch created (frames taken with it in force
    carry it in ``frame.state.revision``). ``first_frame_index`` is the first frame index
    acquired with the batch in force when the driver knows it at once (the camera was
    stopped and restarted for it); ``None`` when the batch was applied while the camera
    streams, and the first frame whose whole exposure came after it tells. ``restarted``:
    the camera's sequence was stopped and started again (its start-up time applies).
    """

    first_frame_index: int | None
    errors: list[str | None] = field(default_factory=list)
    revision: int = 0
    restarted: bool = False


@runtime_checkable
class Driver(Protocol):
    """Acquisition backend: frames out, actions in, between frames.

    Attributes
    ----------
    name : str
        The backend, as ``metrics.json`` names it.
    devices : Devices
        The device roles the safety gate vets by, as found on the hardware (camera, focus,
        mirrors, light sources nobody declared).
    camera_started_s : float | None
        ``time.perf_counter()`` when the driver last began (re)starting the camera; until
        a frame comes after it, the watchdog allows the camera's start-up time.
    skipped_writes : list[str]
        Writes refused because the safe state was on (what, in order), for the run's events.
    """

    name: str
    devices: Devices
    camera_started_s: float | None
    skipped_writes: list[str]

    def start(self, n_frames: int | None) -> None:
        """Begin acquiring; ``None`` runs until :meth:`stop`."""

    def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame in acquisition order, or ``None`` if none came in time.

        Raises ``StopIteration`` when a finite source (replay, ``n_frames``) is done.
        """

    def apply(self, actions: Sequence[Action]) -> ApplyResult:
        """Carry out ``actions`` together.

        Frames already acquired under the old settings are still delivered, in order,
        by :meth:`next_frame`. Each frame's ``state`` is the state it was taken in, and a
        frame whose exposure straddled the change is marked ``transition``.
        """

    def state(self) -> DriverState:
        """Current values of what actions change (exposure, laser powers, ROI, ...)."""

    def safe_state(self) -> None:
        """Lights off, shutters closed; callable from any thread, never raises. Final: from
        its first moment nothing but lowering reaches the hardware (a batch, a camera
        restart, a channel preset or a plan event under way included)."""

    def stop(self) -> None:
        """Stop acquiring; frames already acquired may still be read."""

    def close(self) -> None:
        """Release the hardware."""
