"""Demo scenarios on the virtual microscope, one module each, all of the same shape.

Each module (``bleach``, ``events``, ``events_positions``, ``ao``, ``lowlight``, ``smlm``, ``stain``) defines
``run_config`` (its run configuration), ``run``, ``score`` (against the simulator's ground
truth) and ``plot``, gathered in its ``SCENARIO`` (:class:`~smartscope.scenarios.base.Scenario`).
:data:`SCENARIOS` is the registry ``smartscope demo --scenario NAME`` looks names up in;
:func:`run_demo` runs one and leaves its plot, ``smart_summary.json`` and report in the run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartscope.exceptions import InvalidValue
from smartscope.scenarios import ao, bleach, events, events_positions, lowlight, smlm, stain
from smartscope.scenarios.base import NO_HOOKS, Hooks, Scenario, ScenarioResult, add_to_report

__all__ = ["SCENARIOS", "DemoOutcome", "run_demo"]

SCENARIOS: dict[str, Scenario[Any, Any]] = {
    m.SCENARIO.name: m.SCENARIO for m in (bleach, events, events_positions, ao, lowlight, smlm, stain)
}


@dataclass(frozen=True)
class DemoOutcome:
    """What a demo left behind: the result, its summary against ground truth, and the plot."""

    result: ScenarioResult
    summary: dict[str, Any]
    plot: Path


def run_demo(
    name: str,
    out: Path = Path("runs"),
    seed: int = 0,
    frames: int | None = None,
    hooks: Hooks = NO_HOOKS,
    params: Any = None,
) -> DemoOutcome:
    """Run scenario ``name`` (its demo parameters, or ``params``); plot and summary go in its run folder."""
    spec = SCENARIOS.get(name)
    if spec is None:
        raise InvalidValue(f"scenario must be one of {sorted(SCENARIOS)}, got {name!r}")
    out.mkdir(parents=True, exist_ok=True)
    result = spec.run(params if params is not None else spec.demo_params(seed, frames), out, hooks)
    run_dir = Path(result.run_dir)
    png = spec.plot(result, run_dir / f"{spec.name}.png")
    summary = spec.score(result)
    (run_dir / "smart_summary.json").write_text(
        json.dumps(summary, indent=2, default=float), encoding="utf-8"
    )
    add_to_report(png)
    return DemoOutcome(result, summary, png)
