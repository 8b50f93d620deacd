"""Control commands a remote client may send a run (or the ``smartscope serve`` daemon).

Frozen pydantic models told apart by ``cmd``; the server validates every message against
:data:`COMMAND_ADAPTER` and refuses anything else, naming the field and the reason.
``override`` carries a typed action, vetted by the run's own safety gate like any other.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from smartscope.actions import Action
from smartscope.config.base import FrozenModel

__all__ = [
    "COMMAND_ADAPTER",
    "Command",
    "OverrideCmd",
    "PauseCmd",
    "PauseControllerCmd",
    "QueryCmd",
    "ResumeCmd",
    "StartCmd",
    "StopCmd",
]


class _Cmd(FrozenModel):
    pass


class QueryCmd(_Cmd):
    cmd: Literal["query"] = "query"


class StopCmd(_Cmd):
    cmd: Literal["stop"] = "stop"
    reason: str = Field(default="stopped remotely", max_length=500)


class PauseCmd(_Cmd):
    """Pause the run's steering: every controller paused; acquisition goes on."""

    cmd: Literal["pause"] = "pause"


class ResumeCmd(_Cmd):
    cmd: Literal["resume"] = "resume"


class PauseControllerCmd(_Cmd):
    cmd: Literal["pause_controller"] = "pause_controller"
    name: str = Field(min_length=1, max_length=200)
    paused: bool = True


class OverrideCmd(_Cmd):
    """Set a value by hand: any typed action, vetted by the run's safety limits."""

    cmd: Literal["override"] = "override"
    action: Action
    reason: str = Field(default="remote override", max_length=500)


class StartCmd(_Cmd):
    """Start a run from a config file the daemon (``smartscope serve``) offers, by name."""

    cmd: Literal["start"] = "start"
    config: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.ya?ml$", max_length=200, description="e.g. 'demo.yaml'")


Command = Annotated[
    QueryCmd | StopCmd | PauseCmd | ResumeCmd | PauseControllerCmd | OverrideCmd | StartCmd,
    Field(discriminator="cmd"),
]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
