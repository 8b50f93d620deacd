"""A useq-schema ``MDASequence`` as a run's plan: read, resolved and checked without hardware.

``acquisition.mda`` (inline) or ``acquisition.mda_file`` (a YAML or JSON file written by
``MDASequence(...).yaml()``, e.g. by napari-micromanager's MDA widget) is read here with
useq-schema's own models, so every field of the sequence keeps its meaning. The plan's
events are ``list(sequence)`` exactly; :func:`plan_events` first sets the grid plans' field
of view (which only the core's pixel size and ROI know), as pymmcore-plus's engine does.
:func:`plan_problems` names, field by field, what the limits refuse: a z plane outside
``limits.z_um``, a stage position outside ``limits.xy_um``, an exposure outside
``limits.exposure_ms``, a time-lapse interval below ``limits.interval_ms_min``. What needs
the hardware (channel groups and presets, the autofocus device) is checked by the driver.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import useq
from pydantic import ValidationError

from smartscope.config.safety import LimitsConfig

__all__ = [
    "declared_channels",
    "event_index",
    "image_events",
    "plan_events",
    "plan_problems",
    "read_sequence",
    "read_sequence_file",
    "with_fov",
]

FIELD = "acquisition.mda"


def _invalid(err: ValidationError, prefix: str) -> ValueError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return ValueError(
        f"not a valid useq-schema MDASequence: {prefix}{loc}: {first['msg']} ({err.error_count()} problem(s))"
    )


def read_sequence(mda: Mapping[str, Any]) -> useq.MDASequence:
    """An inline sequence (``acquisition.mda``); ``ValueError`` names the field inside it."""
    try:
        return useq.MDASequence.model_validate(dict(mda))
    except ValidationError as err:
        raise _invalid(err, "mda.") from None


def read_sequence_file(path: Path) -> useq.MDASequence:
    """A sequence saved by useq-schema (``MDASequence.yaml()`` / ``.model_dump_json()``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"{path} is not a .yaml, .yml or .json file")
    try:
        return useq.MDASequence.from_file(path)
    except ValidationError as err:
        raise _invalid(err, f"{path}: ") from None
    except Exception as exc:  # YAML or JSON syntax
        raise ValueError(f"{path} cannot be read: {exc}") from None


def event_index(event: useq.MDAEvent) -> dict[str, int]:
    """The event's ``index`` with plain string keys (useq uses its ``Axis`` enum)."""
    return {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()}


def with_fov(seq: useq.MDASequence, fov_um: tuple[float, float] | None) -> useq.MDASequence:
    """The sequence with every grid plan's field of view set to ``fov_um`` (width, height).

    pymmcore-plus's engine does this in ``setup_sequence`` from the core's pixel size and
    ROI; a queue-fed run never gives the engine the sequence, so it is done here.
    """
    if fov_um is None:
        return seq
    w, h = fov_um

    def fix(s: useq.MDASequence) -> useq.MDASequence:
        update: dict[str, Any] = {}
        if s.grid_plan is not None:
            update["grid_plan"] = s.grid_plan.model_copy(update={"fov_width": w, "fov_height": h})
        if isinstance(s.stage_positions, tuple) and any(
            p.sequence is not None and p.sequence.grid_plan is not None for p in s.stage_positions
        ):
            update["stage_positions"] = tuple(
                p.model_copy(update={"sequence": fix(p.sequence)}) if p.sequence is not None else p
                for p in s.stage_positions
            )
        return s.model_copy(update=update) if update else s

    return fix(seq)


def plan_events(seq: useq.MDASequence, fov_um: tuple[float, float] | None = None) -> list[useq.MDAEvent]:
    """``list(sequence)`` once the grid plans know the field of view."""
    return list(with_fov(seq, fov_um))


def image_events(events: Sequence[useq.MDAEvent]) -> list[useq.MDAEvent]:
    """The events that take an image (autofocus and custom actions take none)."""
    return [e for e in events if isinstance(e.action, useq.AcquireImage | type(None))]


def declared_channels(seq: useq.MDASequence) -> Iterator[tuple[str, useq.Channel]]:
    """Every channel the plan declares, with the field that declares it."""
    for i, ch in enumerate(seq.channels):
        yield f"{FIELD}.channels[{i}]", ch
    if isinstance(seq.stage_positions, tuple):
        for j, pos in enumerate(seq.stage_positions):
            if pos.sequence is not None:
                for i, ch in enumerate(pos.sequence.channels):
                    yield f"{FIELD}.stage_positions[{j}].sequence.channels[{i}]", ch


def declared_autofocus(seq: useq.MDASequence) -> Iterator[tuple[str, Any]]:
    """Every autofocus plan the plan declares, with its field."""
    if seq.autofocus_plan is not None:
        yield f"{FIELD}.autofocus_plan", seq.autofocus_plan
    if isinstance(seq.stage_positions, tuple):
        for j, pos in enumerate(seq.stage_positions):
            if pos.sequence is not None and pos.sequence.autofocus_plan is not None:
                yield f"{FIELD}.stage_positions[{j}].sequence.autofocus_plan", pos.sequence.autofocus_plan


def _position(seq: useq.MDASequence, p: int | None) -> useq.Position | None:
    if p is None or not isinstance(seq.stage_positions, tuple) or p >= len(seq.stage_positions):
        return None
    return seq.stage_positions[p]


def _z_field(seq: useq.MDASequence, event: useq.MDAEvent) -> str:
    """The field a z plane comes from: the position's own z plan, the plan's, or its z."""
    p = event.index.get("p")
    pos = _position(seq, p)
    if pos is not None and pos.sequence is not None and pos.sequence.z_plan is not None:
        return f"{FIELD}.stage_positions[{p}].sequence.z_plan"
    if seq.z_plan is not None:
        return f"{FIELD}.z_plan"
    return f"{FIELD}.stage_positions[{p}].z" if pos is not None else f"{FIELD}.z_plan"


def _xy_field(seq: useq.MDASequence, event: useq.MDAEvent) -> str:
    p = event.index.get("p")
    pos = _position(seq, p)
    if "g" in event.index:
        if pos is not None and pos.sequence is not None and pos.sequence.grid_plan is not None:
            return f"{FIELD}.stage_positions[{p}].sequence.grid_plan"
        return f"{FIELD}.grid_plan"
    return f"{FIELD}.stage_positions[{p}]" if pos is not None else f"{FIELD}.stage_positions"


def _time_plans(seq: useq.MDASequence, where: str = FIELD) -> Iterator[tuple[str, Any]]:
    plan = seq.time_plan
    if plan is not None:
        phases = getattr(plan, "phases", None)
        if phases is not None:
            for k, phase in enumerate(phases):
                yield f"{where}.time_plan.phases[{k}]", phase
        else:
            yield f"{where}.time_plan", plan
    if isinstance(seq.stage_positions, tuple):
        for j, pos in enumerate(seq.stage_positions):
            if pos.sequence is not None:
                yield from _time_plans(pos.sequence, f"{where}.stage_positions[{j}].sequence")


def plan_problems(
    seq: useq.MDASequence, events: Sequence[useq.MDAEvent], limits: LimitsConfig, check_xy: bool = True
) -> list[str]:
    """What the limits refuse in this plan, one line per field (first offending event each).

    ``check_xy=False`` skips stage positions of grid plans whose field of view is not known
    yet (before the core is loaded); the driver checks again with it.
    """
    problems: dict[str, str] = {}

    def once(where: str, why: str) -> None:
        problems.setdefault(where, f"{where}: {why}")

    lo, hi = limits.exposure_ms
    for where, ch in declared_channels(seq):
        if ch.exposure is not None and not lo <= ch.exposure <= hi:
            once(f"{where}.exposure", f"{ch.exposure:g} ms is outside limits.exposure_ms {lo:g}..{hi:g}")
    for where, plan in _time_plans(seq):
        interval = getattr(plan, "interval", None)
        if interval is not None and interval.total_seconds() * 1e3 < limits.interval_ms_min:
            once(
                f"{where}.interval",
                f"{interval.total_seconds() * 1e3:g} ms is below limits.interval_ms_min "
                f"{limits.interval_ms_min:g} ms",
            )
    for e in events:
        if e.z_pos is not None and limits.z_um is not None:
            zlo, zhi = limits.z_um
            if not zlo <= e.z_pos <= zhi:
                once(
                    _z_field(seq, e),
                    f"z {e.z_pos:g} µm (event {event_index(e)}) is outside limits.z_um {zlo:g}..{zhi:g}",
                )
        if limits.xy_um is not None and (check_xy or "g" not in e.index):
            (xlo, xhi), (ylo, yhi) = limits.xy_um
            x, y = e.x_pos, e.y_pos
            if (x is not None and not xlo <= x <= xhi) or (y is not None and not ylo <= y <= yhi):
                once(
                    _xy_field(seq, e),
                    f"stage position ({x}, {y}) µm (event {event_index(e)}) is outside limits.xy_um "
                    f"x {xlo:g}..{xhi:g}, y {ylo:g}..{yhi:g}",
                )
    return list(problems.values())
