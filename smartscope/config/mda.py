"""A useq-schema ``MDASequence`` as a run's plan: read, resolved and checked without hardware.

``acquisition.mda`` (inline) or ``acquisition.mda_file`` (a YAML or JSON file written by
``MDASequence(...).yaml()``, e.g. by napari-micromanager's MDA widget) is read here with
useq-schema's own models, so every field of the sequence keeps its meaning. The plan's
events are ``list(sequence)`` exactly; :func:`plan_events` first sets the grid plans' field
of view (which only the core's pixel size and ROI know), as pymmcore-plus's engine does.

Nothing here expands a plan before its size is known: :func:`plan_size` counts its events
from each axis's own size (an upper bound where channels skip planes or timepoints), and
:func:`extent_problems` checks z planes and stage positions against the limits from each
plan's range, so a plan of 10⁹ planes is refused in microseconds. Expanding is for plans
within ``limits.max_plan_events``. :func:`plan_problems` names, field by field and event by
event, what the limits refuse: a z plane outside ``limits.z_um``, a stage position outside
``limits.xy_um``, an exposure outside ``limits.exposure_ms``, a time-lapse interval below
``limits.interval_ms_min``. What needs the hardware (channel groups and presets, the
autofocus device) is checked by the driver.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import useq
from pydantic import ValidationError

from smartscope.config.reading import ReadError, load_json, load_yaml, read_text
from smartscope.config.safety import LimitsConfig
from smartscope.exceptions import InvalidValue

__all__ = [
    "declared_channels",
    "event_index",
    "extent_problems",
    "image_events",
    "plan_events",
    "plan_problems",
    "plan_size",
    "read_sequence",
    "read_sequence_file",
    "size_problem",
    "with_fov",
]

FIELD = "acquisition.mda"
MAX_PLAN_BYTES = 1 << 20  # a plan as JSON (positions, channels, ... and free-form metadata)
MAX_METADATA_BYTES = 64 << 10  # each free-form ``metadata`` mapping of the plan


def _invalid(err: ValidationError, prefix: str) -> ValueError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return ValueError(
        f"not a valid useq-schema MDASequence: {prefix}{loc}: {first['msg']} ({err.error_count()} problem(s))"
    )


def _capped(mda: Mapping[str, Any], prefix: str) -> None:
    """Free-form text is bounded: the whole plan, and each ``metadata`` mapping in it."""
    size = len(json.dumps(mda, default=str))
    if size > MAX_PLAN_BYTES:
        raise InvalidValue(f"{prefix}: {size} bytes as JSON; a plan is at most {MAX_PLAN_BYTES}")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            meta = node.get("metadata")
            if meta is not None and len(json.dumps(meta, default=str)) > MAX_METADATA_BYTES:
                raise InvalidValue(f"{where}metadata: more than {MAX_METADATA_BYTES} bytes as JSON")
            for k, v in node.items():
                if k != "metadata":
                    walk(v, f"{where}{k}.")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where[:-1]}[{i}].")

    walk(mda, f"{prefix}.")


def read_sequence(mda: Mapping[str, Any]) -> useq.MDASequence:
    """An inline sequence (``acquisition.mda``); ``ValueError`` names the field inside it."""
    _capped(mda, "mda")
    try:
        return useq.MDASequence.model_validate(dict(mda))
    except ValidationError as err:
        raise _invalid(err, "mda.") from None


def read_sequence_file(path: Path) -> useq.MDASequence:
    """A sequence saved by useq-schema (``MDASequence.yaml()`` / ``.model_dump_json()``),
    read within the bounds of :mod:`smartscope.config.reading`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidValue(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InvalidValue(f"{path} is not a .yaml, .yml or .json file")
    try:
        text = read_text(path, MAX_PLAN_BYTES)
        data = load_json(text, str(path)) if suffix == ".json" else load_yaml(text, str(path))
    except ReadError as exc:
        raise InvalidValue(str(exc)) from None
    if not isinstance(data, Mapping):
        raise InvalidValue(f"{path}: not a useq-schema MDASequence (a mapping), got {type(data).__name__}")
    _capped(data, str(path))
    try:
        return useq.MDASequence.model_validate(dict(data))
    except ValidationError as err:
        raise _invalid(err, f"{path}: ") from None


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


# ------------------------------------------------------------- size and extent, unexpanded

_HUGE = 10**18  # a count that is not finite (a time plan with a zero interval)


def _timepoints(plan: Any) -> int:
    if plan is None:
        return 0
    phases = getattr(plan, "phases", None)
    if phases is not None:
        return sum(_timepoints(ph) for ph in phases)
    interval = getattr(plan, "interval", None)
    if "duration" in type(plan).model_fields and "loops" not in type(plan).model_fields:
        seconds = interval.total_seconds() if interval is not None else 0.0
        if seconds <= 0:
            return _HUGE
        return int(plan.duration.total_seconds() // seconds) + 1
    return int(plan.loops)


def _with_grid_fov(grid: Any, fov_um: tuple[float, float] | None) -> Any:
    """The grid with the camera's field of view, as :func:`with_fov` sets it."""
    if fov_um is None:
        return grid
    return grid.model_copy(update={"fov_width": fov_um[0], "fov_height": fov_um[1]})


def _grid_count(grid: Any, fov_um: tuple[float, float] | None) -> int:
    """Tiles of a grid plan; a plan whose count needs the field of view is 1 until it is known."""
    if grid is None:
        return 0
    grid = _with_grid_fov(grid, fov_um)
    if isinstance(grid, useq.GridFromPolygon):
        if grid.fov_width is None or grid.fov_height is None:
            return 1
        (x0, x1), (y0, y1) = _span([v[0] for v in grid.vertices]), _span([v[1] for v in grid.vertices])
        dx, dy = grid._step_size(grid.fov_width, grid.fov_height)
        return (math.ceil((x1 - x0) / dx) + 1) * (math.ceil((y1 - y0) / dy) + 1)
    try:
        return int(grid.num_positions())
    except ValueError:  # GridFromEdges / GridWidthHeight without a field of view yet
        return 1


def _span(values: Sequence[float]) -> tuple[float, float]:
    return (min(values), max(values)) if values else (0.0, 0.0)


def _grid_corners(grid: Any) -> list[tuple[float, float]]:
    """Points spanning a grid's tiles: the corners of a rectangular grid (from its rows,
    columns and step), else every tile (their number is within the plan's size limit)."""
    if isinstance(grid, useq.GridFromEdges | useq.GridRowsColumns | useq.GridWidthHeight):
        dx, dy = grid._step_size(grid.fov_width or 1.0, grid.fov_height or 1.0)
        rows, cols = grid._nrows(dy), grid._ncolumns(dx)
        x0, y0 = grid._offset_x(dx), grid._offset_y(dy)
        xs, ys = (x0, x0 + (max(cols, 1) - 1) * dx), (y0, y0 - (max(rows, 1) - 1) * dy)
        return [(x, y) for x in xs for y in ys]
    return [(t.x, t.y) for t in grid.iter_grid_positions()]


def _has_axes(seq: useq.MDASequence | None) -> bool:
    return seq is not None and bool(
        seq.time_plan or seq.stage_positions or seq.z_plan or seq.grid_plan or seq.channels
    )


def plan_size(seq: useq.MDASequence, fov_um: tuple[float, float] | None = None) -> int:
    """How many events ``list(sequence)`` has at most, from each axis's own size (never by
    expanding it). Exact for a plain product of axes; an upper bound where channels skip
    planes or timepoints (``do_stack``, ``acquire_every``) or autofocus events are added.
    Grids whose size needs the field of view count once until ``fov_um`` is given."""
    t = max(_timepoints(seq.time_plan), 1)
    g = max(_grid_count(seq.grid_plan, fov_um), 1)
    c = max(len(seq.channels), 1)
    z = max(seq.z_plan.num_positions(), 1) if seq.z_plan is not None else 1
    autofocus = 2 if seq.autofocus_plan is not None else 1
    positions = seq.stage_positions
    if not _has_axes(seq):
        return 0
    if not positions:
        return t * g * c * z * autofocus
    if not isinstance(positions, tuple):  # a well plate plan: no sub-sequences
        return len(positions) * t * g * c * z * autofocus
    total = 0
    for pos in positions:
        sub = pos.sequence
        if _has_axes(sub):
            assert sub is not None
            outer = t * (1 if sub.channels else c) * (1 if sub.z_plan else z) * (1 if sub.grid_plan else g)
            af = 2 if sub.autofocus_plan is not None else autofocus
            total += outer * plan_size(sub, fov_um) * af
        else:
            total += t * g * c * z * autofocus
        if total > _HUGE:
            return _HUGE
    return total


def size_problem(
    seq: useq.MDASequence, limits: LimitsConfig, fov_um: tuple[float, float] | None = None
) -> str | None:
    """Why a plan is too large to run (``limits.max_plan_events``), or ``None``."""
    n = plan_size(seq, fov_um)
    if n > limits.max_plan_events:
        sizes = {"t": _timepoints(seq.time_plan), "p": len(seq.stage_positions), "c": len(seq.channels)}
        if seq.z_plan is not None:
            sizes["z"] = seq.z_plan.num_positions()
        shown = ", ".join(f"{k}={v:g}" if v < _HUGE else f"{k}=unbounded" for k, v in sizes.items() if v)
        return (
            f"{FIELD}: {n:.3g} events ({shown}) is more than limits.max_plan_events "
            f"{limits.max_plan_events:g}"
        )
    return None


def _z_offsets(plan: Any) -> tuple[float, float]:
    """The lowest and highest plane of a z plan (relative or absolute), from its range."""
    if isinstance(plan, useq.ZRelativePositions | useq.ZAbsolutePositions):
        values = list(plan.positions())
        return (min(values), max(values)) if values else (0.0, 0.0)
    start, _stop, step = plan._start_stop_step()
    last = start + (max(plan.num_positions(), 1) - 1) * step
    return min(start, last), max(start, last)


def extent_problems(
    seq: useq.MDASequence, limits: LimitsConfig, fov_um: tuple[float, float] | None = None
) -> list[str]:
    """What the limits refuse in the plan's z planes and stage positions, from each plan's
    range (no event is made), one line per field. Grid tiles need the field of view
    (``fov_um``); before it is known they are left to the driver."""
    problems: dict[str, str] = {}
    channel_dz = [c.z_offset or 0.0 for c in seq.channels] or [0.0]

    def check(pos: Any, j: int | None, z_plan: Any, grid: Any) -> None:
        sub = getattr(pos, "sequence", None) if j is not None else None
        base_z = getattr(pos, "z", None)
        if limits.z_um is not None:
            lo_lim, hi_lim = limits.z_um
            zs: list[float] = []
            if z_plan is not None:
                lo, hi = _z_offsets(z_plan)
                shift = (base_z or 0.0) if z_plan.is_relative else 0.0
                zs = [lo + shift + min(channel_dz), hi + shift + max(channel_dz)]
                own = sub is not None and sub.z_plan is not None
                field = f"{FIELD}.stage_positions[{j}].sequence.z_plan" if own else f"{FIELD}.z_plan"
            elif base_z is not None:
                zs = [base_z]
                field = f"{FIELD}.stage_positions[{j}].z"
            bad = [z for z in zs if not lo_lim <= z <= hi_lim]
            if bad:
                problems.setdefault(
                    field, f"{field}: z {bad[0]:g} µm is outside limits.z_um {lo_lim:g}..{hi_lim:g}"
                )
        if limits.xy_um is None:
            return
        (xlo, xhi), (ylo, yhi) = limits.xy_um
        x, y = getattr(pos, "x", None), getattr(pos, "y", None)
        points: list[tuple[float | None, float | None]] = [(x, y)]
        field = f"{FIELD}.stage_positions[{j}]" if j is not None else f"{FIELD}.stage_positions"
        if grid is not None:
            g = _with_grid_fov(grid, fov_um)
            if getattr(g, "fov_width", None) is None:
                return  # tiles placed by the field of view: the driver checks them once it is known
            if _grid_count(g, fov_um) > limits.max_plan_events:
                return  # refused by the size check
            dx, dy = (x or 0.0, y or 0.0) if g.is_relative else (0.0, 0.0)
            points = [(px + dx, py + dy) for px, py in _grid_corners(g)]
            own = sub is not None and sub.grid_plan is not None
            field = f"{FIELD}.stage_positions[{j}].sequence.grid_plan" if own else f"{FIELD}.grid_plan"
        for px, py in points:
            if (px is not None and not xlo <= px <= xhi) or (py is not None and not ylo <= py <= yhi):
                problems.setdefault(
                    field,
                    f"{field}: stage position ({px}, {py}) µm is outside limits.xy_um "
                    f"x {xlo:g}..{xhi:g}, y {ylo:g}..{yhi:g}",
                )
                break

    positions = seq.stage_positions
    if not positions:
        check(None, None, seq.z_plan, seq.grid_plan)
    for j, pos in enumerate(positions):
        sub = pos.sequence if isinstance(positions, tuple) else None
        z_plan = sub.z_plan if sub is not None and sub.z_plan is not None else seq.z_plan
        grid = sub.grid_plan if sub is not None and sub.grid_plan is not None else seq.grid_plan
        check(pos, j, z_plan, grid)
    return list(problems.values())
