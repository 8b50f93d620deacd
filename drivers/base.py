"""The one small Protocol every acquisition backend implements.

Drivers are used from a single thread, the loop's acquisition thread: ``start`` once,
then ``next_frame`` and ``apply`` alternate, so every action lands at a frame boundary.
``safe_state`` is the exception: the watchdog may call it from another thread, so it
must not wait on the acquisition thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from smartscope.actions import Action
from smartscope.frame import Frame
from smartscope.state import DriverState


class DriverError(RuntimeError):
    """A backend failed; the message says which device and why."""


class ActionNotSupported(DriverError):
    """The backend cannot carry out this kind of action."""


@dataclass(slots=True)
class ApplyResult:
    """What became of a batch of actions applied at one frame boundary.

    ``first_frame_index``: the first frame index acquired with the batch in force.
    ``errors[i]`` is ``None`` if action ``i`` reached the hardware, else the reason.
    """

    first_frame_index: int
    errors: list[str | None] = field(default_factory=list)


@runtime_checkable
class Driver(Protocol):
    """Acquisition backend: frames out, actions in, between frames."""

    name: str

    def start(self, n_frames: int | None) -> None:
        """Begin acquiring; ``None`` runs until :meth:`stop`."""

    def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame in acquisition order, or ``None`` if none came in time.

        Raises ``StopIteration`` when a finite source (replay, ``n_frames``) is done.
        """

    def apply(self, actions: Sequence[Action]) -> ApplyResult:
        """Carry out ``actions`` together, before the next frame is exposed.

        Frames already acquired under the old settings are still delivered, in order,
        by :meth:`next_frame`; ``ApplyResult.first_frame_index`` says where the new
        settings begin. Each frame's ``state`` is the state it was taken in.
        """

    def state(self) -> DriverState:
        """Current values of what actions change (exposure, laser powers, ROI, ...)."""

    def safe_state(self) -> None:
        """Lasers off, shutters closed; callable from any thread, never raises."""

    def stop(self) -> None:
        """Stop acquiring; frames already acquired may still be read."""

    def close(self) -> None:
        """Release the hardware."""
