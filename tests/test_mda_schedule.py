"""The MDA schedule as pure logic, on a simulated clock: plan order and timing as
pymmcore-plus's runner keeps them, and what plan actions change (only what they name)."""

from __future__ import annotations

from typing import Any

import pytest
import useq

from smartscope.drivers.mda_schedule import Schedule

STEP_S = 0.01  # what one event takes on the simulated clock


def drive(
    sched: Schedule, actions: dict[int, Any] | None = None, start: float = 0.0
) -> list[tuple[float, dict[str, int], str]]:
    """Run the schedule to the end: (start time, index, series) of every event; ``actions``
    maps a job count to a callable(sched, now) applied after that many jobs."""
    now, out, n = start, [], 0
    actions = dict(actions or {})
    while (pick := sched.next(now)) is not None:
        job, due = pick
        now = max(now, due)
        for e in sched.take(job, now):
            out.append(
                (round(now, 6), {str(getattr(k, "value", k)): int(v) for k, v in e.index.items()}, job.series)
            )
            now += STEP_S
        n += 1
        if n in actions:
            actions.pop(n)(sched, now)
    return out


def plan_of(seq: useq.MDASequence) -> list[dict[str, int]]:
    return [{str(getattr(k, "value", k)): int(v) for k, v in e.index.items()} for e in seq]


SEQUENCES = {
    "tpcz": useq.MDASequence(
        stage_positions=[(0, 0, 0), (1, 1, 0)],
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
        time_plan={"interval": 1, "loops": 3},
    ),
    "ptcz (a time series per position)": useq.MDASequence(
        stage_positions=[(0, 0, 0), (1, 1, 0), (2, 2, 0)],
        channels=["DAPI"],
        time_plan={"interval": 0.5, "loops": 3},
        axis_order=tuple("ptcz"),
    ),
    "multi-phase": useq.MDASequence(
        stage_positions=[(0, 0, 0), (1, 1, 0)],
        time_plan=useq.MultiPhaseTimePlan(
            phases=[useq.TIntervalLoops(interval=0.2, loops=3), useq.TIntervalLoops(interval=2, loops=2)]
        ),
    ),
    "sub-sequences": useq.MDASequence(
        stage_positions=[
            useq.Position(x=0, y=0),
            useq.Position(x=5, y=5, sequence=useq.MDASequence(time_plan={"interval": 0.1, "loops": 4})),
        ],
        channels=["DAPI"],
        time_plan={"interval": 1, "loops": 2},
    ),
    "no time plan": useq.MDASequence(z_plan={"range": 4, "step": 1}, channels=["DAPI", "FITC"]),
    "channel outer": useq.MDASequence(
        channels=["DAPI", "FITC"], time_plan={"interval": 0.3, "loops": 3}, axis_order=tuple("ctz")
    ),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_untouched_the_plan_runs_in_list_order_at_its_times(name: str) -> None:
    seq = SEQUENCES[name]
    events = list(seq)
    out = drive(Schedule(events))
    assert [i for _, i, _ in out] == plan_of(seq)
    # each event no earlier than its min_start_time from its segment's start (as the runner)
    anchor = 0.0
    for (t, _, _), e in zip(out, events, strict=True):
        if e.reset_event_timer:
            anchor = t
        assert t >= anchor + (e.min_start_time or 0.0) - 1e-9


def test_a_time_lapse_keeps_its_interval_when_the_hardware_is_fast() -> None:
    seq = SEQUENCES["tpcz"]
    out = drive(Schedule(list(seq)))
    starts = {i["t"]: t for t, i, _ in out if i["p"] == 0 and i["c"] == 0 and i["z"] == 0}
    assert starts == {0: 0.0, 1: 1.0, 2: 2.0}


def test_set_interval_re_times_one_position_and_leaves_the_others() -> None:
    seq = useq.MDASequence(stage_positions=[(0, 0, 0), (1, 1, 0)], time_plan={"interval": 1, "loops": 6})
    out = drive(Schedule(list(seq)), {2: lambda s, now: s.set_interval(1, 0.25, now)})
    t0 = {i["t"]: t for t, i, _ in out if i["p"] == 0}
    t1 = {i["t"]: t for t, i, _ in out if i["p"] == 1}
    assert t0 == pytest.approx({k: float(k) for k in range(6)})  # untouched: on the plan's times
    assert sorted(t1) == list(range(6))  # every timepoint, in order
    assert [t1[k + 1] - t1[k] for k in range(5)] == pytest.approx([0.25] * 5)  # from t=0 on
    # restoring the plan's spacing continues from the position's last timepoint
    out = drive(
        Schedule(list(seq)),
        {2: lambda s, now: s.set_interval(1, 3.0, now), 5: lambda s, now: s.set_interval(1, None, now)},
    )
    t1 = {i["t"]: t for t, i, _ in out if i["p"] == 1}
    gaps = [round(t1[k + 1] - t1[k], 6) for k in range(5)]
    assert 3.0 in gaps and gaps[-1] == pytest.approx(1.0)


def test_skipped_positions_drop_the_timepoints_due_meanwhile_and_resume() -> None:
    seq = useq.MDASequence(stage_positions=[(0, 0, 0), (1, 1, 0)], time_plan={"interval": 1, "loops": 6})
    out = drive(
        Schedule(list(seq)),
        {2: lambda s, now: s.skip(1, True, now), 6: lambda s, now: s.skip(1, False, now)},
    )
    t1 = [i["t"] for _, i, _ in out if i["p"] == 1]
    assert t1[0] == 0 and t1[-1] == 5 and len(t1) < 6  # a gap, then the plan again
    assert [i["t"] for _, i, _ in out if i["p"] == 0] == list(range(6))


def test_a_skipped_position_in_a_position_outer_plan_moves_on_at_once() -> None:
    seq = SEQUENCES["ptcz (a time series per position)"]
    out = drive(Schedule(list(seq)), {1: lambda s, now: s.skip(0, True, now)})
    assert [i["p"] for _, i, _ in out] == [0, 1, 1, 1, 2, 2, 2]
    assert out[1][0] < 0.1  # p1's series starts right away, not after p0's times


def test_a_burst_is_cut_where_the_plan_is_due_and_the_plan_goes_first() -> None:
    seq = useq.MDASequence(stage_positions=[(0, 0, 0), (1, 1, 0)], time_plan={"interval": 1, "loops": 3})
    burst = [[useq.MDAEvent(index={"t": k, "p": 1})] for k in range(300)]

    def ask(s: Schedule, now: float) -> None:
        s.add(burst, now, 1, "p1-burst1", 0.0, timepoint_s=STEP_S)

    out = drive(Schedule(list(seq)), {2: ask})
    plan = [(t, i) for t, i, s in out if s != "p1-burst1"]
    assert [i for _, i in plan] == plan_of(seq)
    for t, i in plan:  # the plan kept its schedule within one event
        assert t == pytest.approx(i["t"] * 1.0 + i["p"] * STEP_S, abs=2 * STEP_S)
    extra = [i["t"] for _, i, s in out if s == "p1-burst1"]
    assert extra == list(range(300))  # every burst frame, in order


def test_timed_extras_interleave_with_the_plan() -> None:
    seq = useq.MDASequence(stage_positions=[(0, 0, 0), (1, 1, 0)], time_plan={"interval": 0.5, "loops": 4})
    burst = [[useq.MDAEvent(index={"t": k, "p": 0})] for k in range(10)]
    asked: list[float] = []

    def ask(s: Schedule, now: float) -> None:
        asked.append(now)
        s.add(burst, now, 0, "p0-burst1", 0.1)

    out = drive(Schedule(list(seq)), {1: ask})
    series = [s for _, _, s in out]
    first, last = series.index("p0-burst1"), len(series) - 1 - series[::-1].index("p0-burst1")
    assert "p1" in series[first:last] and "p0" in series[first:last]  # interleaved
    times = [t for t, _, s in out if s == "p0-burst1"]
    for k, t in enumerate(times):  # each at its time, or one plan job later
        assert asked[0] + 0.1 * k - 1e-9 <= t <= asked[0] + 0.1 * k + 2 * STEP_S + 1e-9
