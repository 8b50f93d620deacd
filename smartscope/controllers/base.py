"""What a controller is: it looks at one analysed frame and may ask for actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from smartscope.actions import Action, ActionRequest
from smartscope.frame import Frame, now_s
from smartscope.pipeline import StageOutput
from smartscope.state import DriverState


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything a controller may base a decision on.

    ``state`` is the driver's state when the frame was acquired.
    """

    frame: Frame
    results: Mapping[str, StageOutput]
    state: DriverState

    def value(self, stage: str, key: str) -> float:
        """A scalar a stage produced; a clear error if the pipeline lacks it."""
        try:
            return self.results[stage].values[key]
        except KeyError:
            have = {s: sorted(o.values) for s, o in self.results.items()}
            raise KeyError(f"no value {key!r} from stage {stage!r}; pipeline gave {have}") from None


@runtime_checkable
class Controller(Protocol):
    name: str

    def update(self, obs: Observation) -> Sequence[ActionRequest]: ...


class ControllerBase:
    """Convenience: ``self.ask(...)`` builds a request stamped with source and frame."""

    name: str = "controller"

    def ask(self, action: Action, reason: str, obs: Observation, **evidence: Any) -> ActionRequest:
        return ActionRequest(
            action=action,
            reason=reason,
            source=self.name,
            frame_index=obs.frame.index,
            evidence=evidence,
            decided_time_s=now_s(),
        )
