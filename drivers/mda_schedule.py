"""What an MDA run images next, and when: the plan's events plus what controllers asked for.

Pure logic (no core, an injected clock): :class:`Schedule` holds the plan's events
(``list(sequence)``, in order) grouped into *jobs* — the consecutive events of one stage
position at one timepoint (its grid tiles, channels and z planes) — and the extra jobs of
``AcquireAt`` requests. The MDA driver asks it for the next job, waits until it is due,
and feeds the job's events to pymmcore-plus's runner.

Timing follows pymmcore-plus's runner: an event's ``min_start_time`` counts from the
moment the last event with ``reset_event_timer`` came up (a *segment*: the whole run for a
time-outer plan, each position's time series for a position-outer one). Invariants:

* untouched, the schedule yields the plan's events in ``list(sequence)`` order, each job no
  earlier than its ``min_start_time`` (ties and late jobs go in plan order);
* the next segment starts only when every job of the current one is done or dropped;
* a position's own jobs stay in plan order; re-timing one position (``set_interval``)
  or skipping it moves only that position's jobs;
* of the jobs due, the plan's go first, then the extras (other positions keep their
  schedule; a plan the hardware cannot keep up with leaves no time for extras); a burst
  is cut where the plan's next job is due.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import useq

__all__ = ["Job", "Schedule"]


@dataclass(slots=True)
class Job:
    """Events the runner gets back to back.

    ``rel_s``: the plan's ``min_start_time`` (plan jobs; seconds from its segment's start);
    ``due_s``: the absolute due time (extra jobs). ``series`` is the image series of its
    frames (``p<p>`` for the plan's, one per stage position; a plan without positions is
    position 0); ``interval_s`` the time-lapse interval its frames are taken at.
    """

    events: list[useq.MDAEvent]
    order: int
    position: int | None = None
    t: int = 0
    segment: int = 0
    rel_s: float = 0.0
    due_s: float = 0.0
    interval_s: float = 0.0
    series: str = ""
    extra: bool = False
    timepoints: list[list[useq.MDAEvent]] = field(default_factory=list)
    timepoint_s: float = 0.0
    start_cost_s: float = 0.0


@dataclass(slots=True)
class _Clock:
    """A position's re-timed schedule: timepoint ``t`` is due at ``base_s + (t - base_t) *
    interval_s``, or with ``interval_s`` None at ``base_s + (rel - base_rel)`` (the plan's
    spacing from its last timepoint on)."""

    base_s: float
    base_t: int
    base_rel: float
    interval_s: float | None


@dataclass
class Schedule:
    """The run's schedule (see the module doc); used from one thread.

    The plan's jobs wait in one queue per segment and position, in plan order; only the
    head of each queue of the current segment can be next (a position's later jobs are due
    no earlier and come later in the plan), so choosing costs O(positions), not O(plan).
    """

    events: Sequence[useq.MDAEvent]
    extras: list[Job] = field(init=False, default_factory=list)
    dropped: list[Job] = field(init=False, default_factory=list)
    positions: list[int] = field(init=False)

    def __post_init__(self) -> None:
        jobs = _jobs(self.events)
        self.positions = sorted({j.position for j in jobs if j.position is not None})
        # segment -> position -> its jobs in plan order; segments in plan order
        self._queues: dict[int, dict[int | None, deque[Job]]] = {}
        for job in jobs:
            self._queues.setdefault(job.segment, {}).setdefault(job.position, deque()).append(job)
        self._n_plan = len(jobs)
        self._segment = jobs[0].segment if jobs else 0
        self._anchor: float | None = None
        self._clocks: dict[tuple[int, int | None], _Clock] = {}
        self._override: dict[int | None, float | None] = {}
        self._skipped: set[int | None] = set()
        self._last: dict[tuple[int, int | None], tuple[int, float, float]] = {}
        self._n_extra = 0

    # ------------------------------------------------------------- reading

    def done(self) -> bool:
        return self._n_plan == 0 and not self.extras

    def plan_left(self) -> int:
        """Plan jobs not yet run nor dropped."""
        return self._n_plan

    def skipped(self, position: int | None) -> bool:
        return position in self._skipped

    def interval_s(self, position: int | None) -> float | None:
        """The re-timed interval of a position, if one is set."""
        return self._override.get(position)

    def due(self, job: Job) -> float:
        """When a job is due (plan jobs of a segment that has not begun: not yet known)."""
        if job.extra:
            return job.due_s
        assert self._anchor is not None and job.segment == self._segment
        clk = self._clocks.get((job.segment, job.position))
        if clk is None:
            return self._anchor + job.rel_s
        if clk.interval_s is not None:
            return clk.base_s + (job.t - clk.base_t) * clk.interval_s
        return clk.base_s + (job.rel_s - clk.base_rel)

    # ------------------------------------------------------------- choosing

    def next(self, now: float) -> tuple[Job, float] | None:
        """The next job and its due time (maybe later than ``now``); None when all is done."""
        while True:
            heads = self._heads(now)
            active = [j for j in heads if j.position not in self._skipped]
            for job in heads:
                if job.position in self._skipped and (not active or self.due(job) <= now):
                    self._drop(job)  # came due while skipped, or nothing else holds the segment
            if active or self._n_plan == 0:
                break
        jobs = [(self.due(j), j) for j in [*active, *self.extras]]
        if not jobs:
            return None
        ready = [(d, j) for d, j in jobs if d <= now]
        if ready:  # the plan's due jobs first (in due, then plan order), then extras
            due, job = min(ready, key=lambda dj: (dj[1].extra, dj[0], dj[1].order))
        else:
            due, job = min(jobs, key=lambda dj: (dj[0], dj[1].extra, dj[1].order))
        return job, due

    def _heads(self, now: float) -> list[Job]:
        """The first job of each position in the current segment; begins the next segment
        once the current one is empty."""
        queues = self._queues.get(self._segment, {})
        if self._n_plan and (self._anchor is None or not queues):
            self._segment = next(iter(self._queues))
            self._begin_segment(self._segment, now)
            queues = self._queues[self._segment]
        return [q[0] for q in queues.values()]

    def _begin_segment(self, segment: int, now: float) -> None:
        self._anchor = now
        for position, interval in self._override.items():
            queue = self._queues.get(segment, {}).get(position)
            if interval is not None and queue:
                first = queue[0]
                self._clocks[(segment, position)] = _Clock(now + first.rel_s, first.t, first.rel_s, interval)

    def _pop(self, job: Job) -> None:
        """Remove a plan job (the head of its queue)."""
        queues = self._queues[job.segment]
        queue = queues[job.position]
        assert queue[0] is job
        queue.popleft()
        if not queue:
            del queues[job.position]
            if not queues:
                del self._queues[job.segment]
        self._n_plan -= 1

    def _drop(self, job: Job) -> None:
        self._pop(job)
        self.dropped.append(job)

    def take(self, job: Job, now: float) -> list[useq.MDAEvent]:
        """The runner gets the job (due by ``now``): its events to run, in order.

        A burst with timepoints to spare (``AcquireAt`` at interval 0) gives as many
        timepoints as fit before the plan's next due job, at least one; the rest stays
        queued, so a burst never holds the other positions past their time."""
        if not job.extra:
            self._pop(job)
            self._last[(job.segment, job.position)] = (job.t, now, job.rel_s)
            return job.events
        if len(job.timepoints) > 1:
            upcoming = [self.due(j) for j in self._heads(now) if j.position not in self._skipped]
            room = min(upcoming, default=math.inf) - now - job.start_cost_s
            fit = len(job.timepoints) if math.isinf(room) else int(room / max(job.timepoint_s, 1e-6))
            k = max(1, min(len(job.timepoints), fit))
            taken, job.timepoints = job.timepoints[:k], job.timepoints[k:]
            job.events = [e for tp in job.timepoints for e in tp]
            if not job.timepoints:
                self.extras.remove(job)
            return [e for tp in taken for e in tp]
        self.extras.remove(job)
        return job.events

    # ------------------------------------------------------------- changing

    def add(
        self,
        timepoints: list[list[useq.MDAEvent]],
        due_s: float,
        position: int | None,
        series: str,
        interval_s: float,
        timepoint_s: float = 0.0,
        start_cost_s: float = 0.0,
    ) -> list[Job]:
        """Extra jobs (an ``AcquireAt``): timepoint ``k`` due at ``due_s + k * interval_s``;
        at interval 0 one job whose timepoints run back to back (hardware-sequenced where
        the devices allow), cut where the plan's next job is due (``timepoint_s``: the
        expected time of one timepoint, ``start_cost_s`` of starting a sequence)."""
        groups = [timepoints] if interval_s == 0 else [[tp] for tp in timepoints]
        jobs = []
        for k, group in enumerate(groups):
            self._n_extra += 1  # extras among themselves: in the order asked
            job = Job(
                [e for tp in group for e in tp],
                order=self._n_extra,
                position=position,
                due_s=due_s + k * interval_s,
                interval_s=interval_s,
                series=series,
                extra=True,
                timepoints=group,
                timepoint_s=timepoint_s,
                start_cost_s=start_cost_s,
            )
            self.extras.append(job)
            jobs.append(job)
        return jobs

    def skip(self, position: int, skip: bool, now: float) -> None:
        if skip:
            self._skipped.add(position)
            return
        self._skipped.discard(position)
        # timepoints that came due while it was skipped are not caught up
        queue = self._queues.get(self._segment, {}).get(position)
        while self._anchor is not None and queue and self.due(queue[0]) < now:
            self._drop(queue[0])
            queue = self._queues.get(self._segment, {}).get(position)

    def set_interval(self, position: int, interval_s: float | None, now: float) -> None:
        if interval_s is None:
            self._override.pop(position, None)
        else:
            self._override[position] = interval_s
        key = (self._segment, position)
        queue = self._queues.get(self._segment, {}).get(position)
        if self._anchor is None or not queue:
            return  # applies when its segment begins
        last = self._last.get(key)
        if last is not None:
            t, start, rel = last
            self._clocks[key] = _Clock(start, t, rel, interval_s)
        elif interval_s is None:
            self._clocks.pop(key, None)
        else:
            first = queue[0]
            self._clocks[key] = _Clock(self.due(first), first.t, first.rel_s, interval_s)


def _jobs(events: Sequence[useq.MDAEvent]) -> list[Job]:
    """Group the plan's events: consecutive events of one segment, timepoint and position."""
    jobs: list[Job] = []
    segment = 0
    for i, e in enumerate(events):
        if e.reset_event_timer and i > 0:
            segment += 1
        t = int(e.index.get("t", 0))
        position = int(e.index.get("p", 0))  # a plan without positions images one place: 0
        rel = float(e.min_start_time or 0.0)
        last = jobs[-1] if jobs else None
        if last is not None and (last.segment, last.t, last.position) == (segment, t, position):
            last.events.append(e)
            continue
        jobs.append(Job([e], order=i, position=position, t=t, segment=segment, rel_s=rel))
    # the plan's interval at each job: the spacing to the position's next timepoint
    by_key: dict[tuple[int, int | None], list[Job]] = {}
    for job in jobs:
        by_key.setdefault((job.segment, job.position), []).append(job)
    for series in by_key.values():
        times = sorted({j.t: j.rel_s for j in series}.items())
        gaps = {t0: r1 - r0 for (t0, r0), (_, r1) in itertools.pairwise(times)}
        fallback = times[-1][1] - times[-2][1] if len(times) > 1 else 0.0
        for job in series:
            job.interval_s = gaps.get(job.t, fallback)
            job.series = f"p{job.position}"
    return jobs
