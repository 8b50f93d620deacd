"""MDA plans through pymmcore-plus's runner on a real core (mm-test-adapters demo config).

A plan saved by useq-schema itself runs unchanged (its frames' indices are
``list(sequence)``), every field of the sequence is honoured or refused by name before any
hardware moves, controllers change the plan through the safety gate and the audit log,
and stops and faults keep the loop's guarantees.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import useq

from smartscope.actions import AcquireAt, ActionRequest, SetPositionInterval, SkipPosition, StartBurst
from smartscope.config import ConfigError, validate_config
from smartscope.config.mda import with_fov
from smartscope.controllers.base import ControllerBase, Observation
from smartscope.drivers import DriverError
from smartscope.drivers.mda import MDADriver
from smartscope.runner import run
from smartscope.safety import Devices, SafetyGate
from smartscope.scenarios.base import virtual_cfg_file, virtual_microscope_config
from smartscope.storage import read_jsonl
from tests.conftest import DATA, cfg_dict
from tests.test_fault_injection import check_invariants

SMALL = [
    {"device": "Camera", "property": "OnCameraCCDXSize", "value": 64},
    {"device": "Camera", "property": "OnCameraCCDYSize", "value": 64},
]
Z_SEQUENCES = {"device": "Z", "property": "UseSequences", "value": "Yes"}


def rich_sequence() -> useq.MDASequence:
    """Positions (one with its own sub-sequence), grid, z, channels with do_stack,
    acquire_every and their own exposures, a two-phase time plan."""
    return useq.MDASequence(
        stage_positions=[
            useq.Position(x=0, y=0, z=0, name="a"),
            useq.Position(
                x=200,
                y=100,
                z=2,
                name="b",
                sequence=useq.MDASequence(grid_plan=useq.GridRowsColumns(rows=1, columns=2)),
            ),
        ],
        z_plan=useq.ZRangeAround(range=2, step=1),
        channels=[
            useq.Channel(config="DAPI", exposure=3),
            useq.Channel(config="FITC", exposure=5, do_stack=False, acquire_every=2),
        ],
        time_plan=useq.MultiPhaseTimePlan(
            phases=[useq.TIntervalLoops(interval=0.05, loops=2), useq.TIntervalLoops(interval=0.1, loops=2)]
        ),
        axis_order=tuple("tpgcz"),
    )


def indices(events: Sequence[useq.MDAEvent]) -> list[dict[str, int]]:
    return [
        {str(getattr(k, "value", k)): int(v) for k, v in e.index.items()}
        for e in events
        if isinstance(e.action, useq.AcquireImage | type(None))
    ]


def mda_cfg(tmp_path: Path, plan: dict[str, Any] | None = None, **over: Any) -> Any:
    # a small circular buffer: MMCore initialises all of it at every sequence start
    microscope = {"startup": [*SMALL, Z_SEQUENCES], "buffer_size_mb": 16, **over.pop("microscope", {})}
    acquisition = {"exposure_ms": 2.0, **over.pop("acquisition", {})}
    if plan is not None:
        acquisition["mda"] = plan
    return validate_config(cfg_dict(tmp_path, microscope=microscope, acquisition=acquisition, **over))


def make_driver(cfg: Any, core: Any) -> MDADriver:
    """The driver as the runner makes it: vetted by the run's safety gate (its limits)."""
    gate = SafetyGate(cfg.limits, cfg.microscope.lasers, Devices.from_config(cfg.microscope))
    return MDADriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=core, gate=gate)


def as_dict(seq: useq.MDASequence) -> dict[str, Any]:
    """What napari-micromanager writes: the sequence as useq-schema serialises it."""
    return json.loads(seq.model_dump_json(exclude_unset=True))


# --------------------------------------------------------------------- the plan runs unchanged


@pytest.mark.parametrize("given", ["inline", "yaml_file", "json_file"])
def test_a_saved_plan_runs_unchanged(demo_core: Any, tmp_path: Path, given: str) -> None:
    seq = rich_sequence()
    if given == "inline":
        cfg = mda_cfg(tmp_path, as_dict(seq))
    else:
        path = tmp_path / ("plan.yaml" if given == "yaml_file" else "plan.json")
        path.write_text(seq.yaml() if given == "yaml_file" else seq.model_dump_json(), encoding="utf-8")
        cfg = mda_cfg(tmp_path, acquisition={"mda_file": str(path)})
    driver = make_driver(cfg, core=demo_core)
    res = run(cfg, driver=driver, report=False)
    assert res.status == "completed", res.reason
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    # the grid's field of view is the camera's (64 px at 1 µm), as pymmcore-plus's engine sets it
    want = list(with_fov(useq.MDASequence.model_validate(as_dict(seq)), (64.0, 64.0)))
    assert [f["axes"] for f in frames] == indices(want)
    for f, e in zip(frames, want, strict=True):
        assert f["series"] == f"p{e.index['p']}" + (f"-g{e.index['g']}" if "g" in e.index else "")
        assert f["channel"] == e.channel.config
        assert f["state"]["exposure_ms"] == e.exposure
        assert f["state"]["z_um"] == pytest.approx(e.z_pos)
        assert f["state"]["xy_um"] == pytest.approx([e.x_pos, e.y_pos], abs=0.01)  # stage steps
        assert f["state"]["pixel_size_um"] == 1.0
    check_invariants(Path(res.run_dir))


@pytest.mark.parametrize("given", ["inline", "yaml_file"])
def test_a_saved_plan_runs_unchanged_on_the_virtual_microscope(tmp_path: Path, given: str) -> None:
    """Positions × z × channels × time through open_driver on the virtual .cfg: the indices
    are list(sequence), and the camera's own metadata says each frame was taken where and
    with the light its state claims (the whole job of one position and timepoint goes out
    as one hardware sequence: laser powers and Z are sequenceable there)."""
    seq = useq.MDASequence(
        stage_positions=[(0.0, 0.0, 0.0), (6.4, 0.0, 1.0)],
        z_plan={"range": 2, "step": 1},
        channels=[{"config": "488", "exposure": 5}, {"config": "561", "exposure": 5}],
        time_plan={"interval": 0.2, "loops": 2},
    )
    cfg_file = virtual_cfg_file(tmp_path / "virtual.cfg", "cells", 1, 64, "RealTime", 0.0, 5.0)
    acquisition: dict[str, Any] = {"exposure_ms": 5.0}
    if given == "inline":
        acquisition["mda"] = as_dict(seq)
    else:
        (tmp_path / "plan.yaml").write_text(seq.yaml() or "", encoding="utf-8")
        acquisition["mda_file"] = str(tmp_path / "plan.yaml")
    cfg = validate_config(
        cfg_dict(
            tmp_path,
            microscope={**virtual_microscope_config(cfg_file, ["488", "561"]), "buffer_size_mb": 32},
            acquisition=acquisition,
        )
    )
    res = run(cfg, report=False)
    assert res.status == "completed", res.reason
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    assert [f["axes"] for f in frames] == indices(list(seq))
    for f, e in zip(frames, seq, strict=True):
        mm, state = f["mm"], f["state"]
        assert float(mm["SimStageX_um"]) == pytest.approx(state["xy_um"][0]) == pytest.approx(e.x_pos)
        assert float(mm["SimZ_um"]) == pytest.approx(state["z_um"]) == pytest.approx(e.z_pos)
        lit = e.channel.config
        assert float(mm[f"SimPowerMean_mW_{lit}"]) > 5 and state["lasers"][lit] == 10.0
        assert float(mm["SimPixelSize_um"]) == state["pixel_size_um"] == 0.1
    check_invariants(Path(res.run_dir))


def test_z_stacks_are_hardware_sequenced_where_the_stage_can(demo_core: Any, tmp_path: Path) -> None:
    seq = useq.MDASequence(
        stage_positions=[(0, 0, 0), (50, 50, 1)], z_plan={"range": 4, "step": 1}, channels=["DAPI"]
    )
    cfg = mda_cfg(tmp_path, as_dict(seq))
    driver = make_driver(cfg, core=demo_core)
    res = run(cfg, driver=driver, report=False)
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    assert [f["axes"] for f in frames] == indices(list(seq))
    triggered = [f for f in frames if f.get("mm")]  # sequenced frames carry the camera's metadata
    assert len(triggered) == len(frames) == 10
    # the same plan with sequencing off: one snap per event, same indices
    demo_core.mda.engine.use_hardware_sequencing = False
    driver = make_driver(cfg, core=demo_core)
    res = run(cfg, driver=driver, report=False)
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    assert [f["axes"] for f in frames] == indices(list(seq))
    assert not any(f.get("mm") for f in frames)


def test_an_autofocus_plan_runs_on_a_core_with_an_autofocus_device(demo_core: Any, tmp_path: Path) -> None:
    seq = useq.MDASequence(
        stage_positions=[(0, 0, 0), (10, 10, 0)],
        channels=["DAPI"],
        time_plan={"interval": 0, "loops": 2},
        autofocus_plan=useq.AxesBasedAF(autofocus_motor_offset=0, axes=("p",)),
    )
    assert len(list(seq)) > len(indices(list(seq)))  # autofocus events take no image
    cfg = mda_cfg(tmp_path, as_dict(seq))
    res = run(cfg, driver=make_driver(cfg, core=demo_core), report=False)
    assert res.status == "completed", res.reason
    assert [f["axes"] for f in read_jsonl(Path(res.run_dir) / "frames.jsonl")] == indices(list(seq))


def test_setup_event_and_shutter_across_z_reach_the_engine(demo_core: Any, tmp_path: Path) -> None:
    seq = useq.MDASequence(
        z_plan={"range": 2, "step": 1},
        channels=["DAPI"],
        time_plan={"interval": 0, "loops": 2},
        keep_shutter_open_across=("z",),
        setup=useq.MDAEvent(properties=[("Camera", "Mode", "Noise")]),
        metadata={"experiment": "shutter"},
    )
    # useq-schema 0.9's yaml() drops the setup action's type tag (it does not read it back):
    # the full JSON dump does
    cfg = mda_cfg(tmp_path, json.loads(seq.model_dump_json()))
    seen: list[useq.MDAEvent] = []
    demo_core.mda.events.eventStarted.connect(seen.append)
    demo_core.mda.engine.use_hardware_sequencing = False  # one event per plane: the shutter matters
    res = run(cfg, driver=make_driver(cfg, core=demo_core), report=False)
    assert res.status == "completed", res.reason
    assert demo_core.getProperty("Camera", "Mode") == "Noise"  # the setup event was applied
    assert [e.keep_shutter_open for e in seen] == [e.keep_shutter_open for e in seq]
    assert [e.keep_shutter_open for e in seen].count(True) == 4  # open from z0 to z2, twice
    assert demo_core.getAutoShutter()  # handed back after the plan


def test_a_well_plate_plan_and_acquire_at_one_of_its_wells(demo_core: Any, tmp_path: Path) -> None:
    plate = useq.WellPlatePlan(plate="96-well", a1_center_xy=(0, 0), selected_wells=([0, 0], [0, 1]))
    seq = useq.MDASequence(stage_positions=plate, channels=["DAPI"], time_plan={"interval": 0.2, "loops": 3})
    script = {("p0", 1): [AcquireAt(position=1, n_frames=2)]}
    _, frames, _ = _run_script(demo_core, tmp_path, seq, script)
    assert [f["axes"] for f in frames if "burst" not in f["series"]] == indices(list(seq))
    burst = [f for f in frames if f["series"] == "p1-burst1"]
    assert len(burst) == 2 and all(
        f["state"]["xy_um"] == pytest.approx([9000.0, 0.0], abs=0.01) for f in burst
    )


# --------------------------------------------------------------------- refused before anything moves


@pytest.mark.parametrize(
    ("plan", "extra", "field", "words"),
    [
        (
            {"channels": [{"config": "DAPI", "group": "Colour"}]},
            {},
            "acquisition.mda.channels[0].group",
            "no config group",
        ),
        ({"channels": ["DAPI", "GFP"]}, {}, "acquisition.mda.channels[1].config", "no preset 'GFP'"),
        (
            {"stage_positions": [{"x": 0, "y": 0, "sequence": {"channels": ["Texas"]}}]},
            {},
            "acquisition.mda.stage_positions[0].sequence.channels[0].config",
            "no preset",
        ),
        (
            {
                "stage_positions": [{"x": 0, "y": 0}, {"x": 5000, "y": 0}],
                "grid_plan": {"rows": 2, "columns": 2},
            },
            {"limits": {"xy_um": [[-1000, 1000], [-1000, 1000]]}},
            "acquisition.mda.grid_plan",
            "outside limits.xy_um",
        ),
        (
            {"channels": [{"config": "DAPI", "camera": "Cam2"}]},
            {},
            "acquisition.mda.channels[0].camera",
            "not the camera",
        ),
        (
            {"stage_positions": [{"x": 0, "y": 0, "properties": [["Camera", "Nope", "1"]]}]},
            {},
            "acquisition.mda.stage_positions[0].properties",
            "no property Camera.Nope",
        ),
    ],
)
def test_a_plan_the_hardware_cannot_do_is_refused_before_anything_moves(
    demo_core: Any, tmp_path: Path, plan: dict[str, Any], extra: dict[str, Any], field: str, words: str
) -> None:
    cfg = mda_cfg(tmp_path, plan, **extra)
    demo_core.setXYPosition(12.0, 34.0)
    demo_core.waitForSystem()
    width = demo_core.getImageWidth()
    with pytest.raises(DriverError) as info:
        make_driver(cfg, core=demo_core)
    text = str(info.value)
    assert field in text and words in text, text
    assert "nothing was set" in text
    # not even the start-up properties: the camera is as the .cfg left it, the stage where it was
    assert demo_core.getImageWidth() == width != 64
    assert demo_core.getXYPosition() == pytest.approx((12.0, 34.0), abs=0.01)


def test_autofocus_without_an_autofocus_device_is_refused(laser_core: Any, tmp_path: Path) -> None:
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2}, autofocus_plan=useq.AxesBasedAF(axes=("t",))
    )
    cfg = mda_cfg(
        tmp_path, as_dict(seq), microscope={"config_file": str(DATA / "demo_laser.cfg"), "startup": []}
    )
    with pytest.raises(
        DriverError, match=r"acquisition\.mda\.autofocus_plan: the configuration has no autofocus"
    ):
        make_driver(cfg, core=laser_core)


@pytest.mark.parametrize(
    ("acquisition", "limits", "field", "words"),
    [
        (
            {"mda": {"z_plan": {"range": 20, "step": 5}}},
            {"z_um": [-5, 5]},
            "acquisition.mda.z_plan",
            "outside limits.z_um",
        ),
        (
            {"mda": {"stage_positions": [{"x": 0, "y": 0, "z": 9}]}},
            {"z_um": [-5, 5]},
            "acquisition.mda.stage_positions[0].z",
            "outside limits.z_um",
        ),
        (
            {"mda": {"stage_positions": [{"x": 0, "y": 0}, {"x": 1, "y": 1e6}]}},
            {"xy_um": [[-100, 100], [-100, 100]]},
            "acquisition.mda.stage_positions[1]",
            "outside limits.xy_um",
        ),
        (
            {"mda": {"channels": [{"config": "DAPI", "exposure": 5000}]}},
            {},
            "acquisition.mda.channels[0].exposure",
            "limits.exposure_ms",
        ),
        (
            {"mda": {"time_plan": {"interval": 0.01, "loops": 3}}},
            {"interval_ms_min": 50},
            "acquisition.mda.time_plan.interval",
            "interval_ms_min",
        ),
        (
            {"mda": {"channels": ["DAPI"]}, "channels": [{"group": "Channel", "preset": "DAPI"}]},
            {},
            "acquisition.channels",
            "brings its own",
        ),
        (
            {"mda": {"time_plan": {"interval": 0.1, "loops": 3}}, "interval_ms": 5},
            {},
            "acquisition.interval_ms",
            "sets the timing",
        ),
        ({"mda": {"channels": ["DAPI"]}, "mda_file": "x.yaml"}, {}, "acquisition.mda_file", "does not exist"),
        ({"mda_file": "plan.txt"}, {}, "acquisition.mda_file", "does not exist"),
        ({"mda": {}}, {}, "acquisition.mda", "no events"),
        (
            {"mda": {"channels": ["DAPI"]}},
            {"driver": "pycromanager"},
            "acquisition.mda",
            "pycromanager cannot",
        ),
    ],
)
def test_bad_plans_are_refused_when_the_config_is_read(
    tmp_path: Path, acquisition: dict[str, Any], limits: dict[str, Any], field: str, words: str
) -> None:
    microscope = {"driver": limits.pop("driver")} if "driver" in limits else {}
    with pytest.raises(ConfigError) as info:
        validate_config(cfg_dict(tmp_path, acquisition=acquisition, limits=limits, microscope=microscope))
    assert any(line.startswith(field) and words in line for line in info.value.problems), info.value.problems


def test_an_invalid_plan_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("channels:\n  - config: DAPI\n    exposure: fast\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        validate_config(cfg_dict(tmp_path, acquisition={"mda_file": str(path)}))
    (line,) = info.value.problems
    assert line.startswith("acquisition.mda_file") and str(path) in line and "channels.exposure" in line


# --------------------------------------------------------------------- controllers change the plan


class _Script(ControllerBase):
    """Asks for given actions when the first frame of given (series, t) arrives."""

    name = "script"

    def __init__(self, plan: dict[tuple[str, int], list[Any]]) -> None:
        self.plan = dict(plan)

    def update(self, obs: Observation) -> list[ActionRequest]:
        key = (obs.frame.series, obs.frame.axes.get("t", -1))
        return [self.ask(a, "scripted", obs) for a in self.plan.pop(key, [])]


def _run_script(
    core: Any, tmp_path: Path, seq: useq.MDASequence, script: dict[tuple[str, int], list[Any]], **over: Any
) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    cfg = mda_cfg(tmp_path, as_dict(seq), pipeline={"stages": [{"kind": "identity"}]}, **over)
    driver = make_driver(cfg, core=core)
    res = run(cfg, driver=driver, controllers=[_Script(script)], report=False)
    run_dir = Path(res.run_dir)
    check_invariants(run_dir, all_stored=True)
    return res, read_jsonl(run_dir / "frames.jsonl"), read_jsonl(run_dir / "actions.jsonl")


def _time_lapse(n_positions: int = 3, loops: int = 6, interval_s: float = 0.25) -> useq.MDASequence:
    return useq.MDASequence(
        stage_positions=[(100.0 * i, 0.0, 0.0) for i in range(n_positions)],
        channels=["DAPI"],
        time_plan={"interval": interval_s, "loops": loops},
    )


def test_acquire_at_images_one_position_fast_while_the_others_keep_their_schedule(
    demo_core: Any, tmp_path: Path
) -> None:
    seq = _time_lapse()
    # 60 timepoints × 3 planes as fast as they go: longer than the plan's interval, so it must
    # be cut where the plan is due (hardware-sequenced pieces in between the plan's snaps)
    burst = AcquireAt(position=1, n_frames=60, interval_ms=0, z_offsets_um=(-1.0, 0.0, 1.0))
    res, frames, records = _run_script(demo_core, tmp_path, seq, {("p1", 1): [burst]})
    assert res.status == "completed", res.reason
    plan = [f for f in frames if not f["series"].endswith("burst1")]
    extra = [f for f in frames if f["series"] == "p1-burst1"]
    assert [f["axes"] for f in plan] == indices(list(seq))  # the plan, complete and in order
    assert [f["axes"] for f in extra] == [
        {"t": t, "c": 0, "z": z, "p": 1} for t in range(60) for z in range(3)
    ]
    assert all(f["state"]["burst"] and f["state"]["xy_um"] == [100.0, 0.0] for f in extra)
    assert sorted({f["state"]["z_um"] for f in extra}) == [-1.0, 0.0, 1.0]
    assert sum(bool(f.get("mm")) for f in extra) == len(extra)  # hardware-sequenced
    (rec,) = [r for r in records if r["request"]["action"]["kind"] == "acquire_at"]
    first_with = min(f["index"] for f in frames if f["state"]["revision"] >= 1)
    assert rec["verdict"] == "applied" and rec["first_frame_index"] == first_with
    assert all(f["state"]["revision"] >= 1 for f in extra)
    # the burst ran between the plan's timepoints, which kept their schedule
    t0 = frames[0]["camera_time_s"]
    first_burst, last_burst = extra[0]["camera_time_s"], extra[-1]["camera_time_s"]
    during = [f for f in plan if first_burst < f["camera_time_s"] < last_burst]
    assert during, "the plan went on while the burst ran"
    for f in plan:
        if f["axes"]["t"] > 0:
            assert f["camera_time_s"] - t0 == pytest.approx(0.25 * f["axes"]["t"], abs=0.2)


def test_skip_and_re_time_positions(demo_core: Any, tmp_path: Path) -> None:
    seq = _time_lapse(loops=8, interval_s=0.2)
    script = {
        ("p0", 1): [SkipPosition(position=2)],
        ("p0", 2): [SetPositionInterval(position=1, interval_ms=500)],
        ("p0", 5): [SkipPosition(position=2, skip=False)],
        ("p0", 6): [SkipPosition(position=7)],  # not in the plan: a failed action, the run goes on
    }
    res, frames, records = _run_script(demo_core, tmp_path, seq, script)
    assert res.status == "completed", res.reason
    by_p = {p: [f for f in frames if f["axes"]["p"] == p] for p in range(3)}
    assert [f["axes"]["t"] for f in by_p[0]] == list(range(8))
    assert [f["axes"]["t"] for f in by_p[1]] == list(range(8))  # every timepoint, later
    times1 = [f["camera_time_s"] for f in by_p[1]]
    gaps = [b - a for a, b in itertools.pairwise(times1)]
    assert max(gaps[4:]) > 0.4 > gaps[0]  # re-timed from 200 to 500 ms
    skipped = set(range(8)) - {f["axes"]["t"] for f in by_p[2]}
    assert skipped and 0 in {f["axes"]["t"] for f in by_p[2]} and 7 in {f["axes"]["t"] for f in by_p[2]}
    verdicts = {
        r["request"]["action"]["kind"] + str(r["request"]["action"].get("position")): r for r in records
    }
    assert (
        verdicts["skip_position7"]["verdict"] == "failed"
        and "no stage position 7" in verdicts["skip_position7"]["note"]
    )
    assert verdicts["position_interval1"]["verdict"] == "applied"


def test_plan_actions_are_vetted_by_the_gate(demo_core: Any, tmp_path: Path) -> None:
    seq = _time_lapse(loops=4, interval_s=0.1)
    script = {
        ("p0", 1): [
            AcquireAt(xy_um=(5000.0, 0.0)),  # outside the stage limits: refused by the gate
            AcquireAt(position=0, z_um=0.0, z_offsets_um=(0.0, 50.0)),  # a plane outside z: refused
            AcquireAt(position=2, z_offsets_um=(0.0, 20.0)),  # the position's z + 20: refused by the driver
            AcquireAt(position=0, n_frames=3, interval_ms=1.0),  # clamped to interval_ms_min
            StartBurst(interval_ms=100),  # an MDA run bursts with AcquireAt
        ]
    }
    limits = {"xy_um": [[-1000, 1000], [-1000, 1000]], "z_um": [-10, 10], "interval_ms_min": 20}
    _, frames, records = _run_script(demo_core, tmp_path, seq, script, limits=limits)
    by_seq = sorted(records, key=lambda r: r["seq"])  # the audit log in the order asked
    verdicts = [(r["verdict"], r["note"]) for r in by_seq]
    assert verdicts[0][0] == "refused" and "limits.xy_um" in verdicts[0][1]
    assert verdicts[1][0] == "refused" and "limits.z_um" in verdicts[1][1]
    assert verdicts[2][0] == "failed" and "limits.z_um" in verdicts[2][1]
    assert verdicts[3][0] == "clamped" and by_seq[3]["applied"]["interval_ms"] == 20
    assert verdicts[4][0] == "failed" and "AcquireAt" in verdicts[4][1]
    assert [f["axes"]["t"] for f in frames if f["series"] == "p0-burst1"] == [0, 1, 2]


def test_acquire_at_a_place_outside_the_plan(demo_core: Any, tmp_path: Path) -> None:
    seq = _time_lapse(n_positions=2, loops=3, interval_s=0.2)
    target = AcquireAt(xy_um=(50.0, 60.0), z_um=1.0, z_offsets_um=(-0.5, 0.5), channels=("FITC",), n_frames=2)
    _, frames, records = _run_script(demo_core, tmp_path, seq, {("p0", 1): [target]})
    assert [r["verdict"] for r in records] == ["applied"]
    extra = [f for f in frames if f["series"] == "at1"]
    assert [f["axes"] for f in extra] == [{"t": t, "c": 0, "z": z} for t in range(2) for z in range(2)]
    assert all(
        f["channel"] == "FITC" and f["state"]["xy_um"] == pytest.approx([50.0, 60.0], abs=0.01) for f in extra
    )
    assert sorted({f["state"]["z_um"] for f in extra}) == [0.5, 1.5]
    assert [f["axes"] for f in frames if f["series"] != "at1"] == indices(list(seq))


def test_plan_actions_need_an_mda_plan(demo_core: Any, tmp_path: Path) -> None:
    from smartscope.drivers.mmcore import PymmcorePlusDriver

    cfg = validate_config(cfg_dict(tmp_path, acquisition={"exposure_ms": 1.0, "n_frames": 3}))
    driver = PymmcorePlusDriver(cfg.microscope, cfg.acquisition, cfg.safe_state, core=demo_core)
    result = driver.apply([AcquireAt(position=0), SkipPosition(position=0)])
    assert all(e is not None and "needs an MDA plan" in e for e in result.errors)


# --------------------------------------------------------------------- stops and faults


def test_a_stop_mid_plan_keeps_every_frame_taken(demo_core: Any, tmp_path: Path) -> None:
    seq = _time_lapse(loops=200, interval_s=0.05)
    cfg = mda_cfg(tmp_path, as_dict(seq), acquisition={"duration_s": 1.0})
    res = run(cfg, driver=make_driver(cfg, core=demo_core), report=False)
    assert res.stop_reason.name == "DURATION"
    m = check_invariants(Path(res.run_dir))
    assert 3 <= m["frames_stored"] < len(list(seq))
    frames = read_jsonl(Path(res.run_dir) / "frames.jsonl")
    assert [f["axes"] for f in frames] == indices(list(seq))[: len(frames)]


def test_n_frames_caps_the_plan(demo_core: Any, tmp_path: Path) -> None:
    seq = useq.MDASequence(z_plan={"range": 8, "step": 1}, time_plan={"interval": 0, "loops": 5})
    cfg = mda_cfg(tmp_path, as_dict(seq), acquisition={"n_frames": 12})
    res = run(cfg, driver=make_driver(cfg, core=demo_core), report=False)
    m = check_invariants(Path(res.run_dir))
    # a z-stack goes out as one hardware sequence: frames already taken past the cap are kept
    assert 12 <= m["frames_stored"] <= 18


def test_a_failed_snap_is_a_fault_that_ends_safe(laser_core: Any, tmp_path: Path) -> None:
    """pymmcore-plus's engine logs a failed snap and goes on; the driver makes it a fault."""
    from tests.conftest import LASERS

    seq = useq.MDASequence(z_plan={"range": 1, "step": 1}, time_plan={"interval": 0, "loops": 20})
    cfg = mda_cfg(
        tmp_path,
        as_dict(seq),
        microscope={"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS, "startup": []},
        acquisition={"lasers_mw": {"488": 5.0}},
    )
    driver = make_driver(cfg, core=laser_core)
    snap, calls = laser_core.snapImage, {"n": 0}

    def failing_snap(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 7:
            raise RuntimeError("injected: camera error")
        snap(*args)

    laser_core.snapImage = failing_snap
    try:
        res = run(cfg, driver=driver, report=False)
    finally:
        del laser_core.snapImage
    assert res.status == "failed" and "frame(s) expected" in res.reason, res.reason
    assert float(laser_core.getProperty("Laser488", "Voltage")) == 0.0
    m = check_invariants(Path(res.run_dir))
    assert m["frames_stored"] == 7


def test_a_stalled_camera_ends_safe_and_the_run_ends(laser_core: Any, tmp_path: Path) -> None:
    from tests.conftest import LASERS

    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 50})
    cfg = mda_cfg(
        tmp_path,
        as_dict(seq),
        microscope={"config_file": str(DATA / "demo_laser.cfg"), "lasers": LASERS, "startup": []},
        acquisition={"lasers_mw": {"488": 5.0}},
        watchdog={"camera_stall_s": 0.5, "camera_start_s": 2.0},
    )
    driver = make_driver(cfg, core=laser_core)
    driver.stop_timeout_s = 1.0
    snap, calls, release = laser_core.snapImage, {"n": 0}, threading.Event()

    def hanging_snap(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            release.wait(30)  # a camera that never returns
        snap(*args)

    laser_core.snapImage = hanging_snap
    t0 = time.perf_counter()
    try:
        res = run(cfg, driver=driver, report=False)
    finally:
        release.set()
        if driver._thread is not None:  # the runner ends at the next event boundary
            driver._thread.join(5)
        del laser_core.snapImage
    assert res.status == "failed" and "camera stalled" in res.reason
    assert time.perf_counter() - t0 < 10
    assert float(laser_core.getProperty("Laser488", "Voltage")) == 0.0
    check_invariants(Path(res.run_dir))


def test_a_ragged_plan_and_a_burst_land_in_ome_zarr_where_their_indices_say(
    demo_core: Any, tmp_path: Path
) -> None:
    """do_stack=False, acquire_every, a grid position and a burst with its own planes: every
    stored plane sits at the frame's (t, c, z) in its series' image; the places the plan
    leaves out are empty."""
    import numpy as np

    tensorstore = pytest.importorskip("tensorstore")
    seq = rich_sequence()
    burst = AcquireAt(position=0, n_frames=2, z_offsets_um=(-1.0, 0.0, 1.0, 2.0), channels=("FITC",))
    res, frames, _ = _run_script(
        demo_core, tmp_path, seq, {("p0", 1): [burst]}, storage={"format": "ome-zarr"}
    )
    assert res.status == "completed", res.reason
    run_dir = Path(res.run_dir)
    assert {f["series"] for f in frames} == {"p0", "p1-g0", "p1-g1", "p0-burst1"}
    arrays: dict[str, tuple[list[str], Any]] = {}
    for name in {f["file"] for f in frames}:
        path = run_dir / name
        meta = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
        store = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "0")}}
        arrays[name] = ([a["name"] for a in meta["axes"]], tensorstore.open(store).result().read().result())
    stored: dict[str, set[tuple[int, ...]]] = {}
    for f in frames:
        axes, data = arrays[f["file"]]
        where = tuple(int(i) for i in np.unravel_index(f["page"], data.shape[: len(axes) - 2]))
        assert dict(zip(axes[:-2], where, strict=True)) == {a: f["axes"].get(a, 0) for a in axes[:-2]}
        assert data[where].any()
        stored.setdefault(f["file"], set()).add(where)
    # the burst's own shape: 1 channel (no c axis) × 4 planes; the plan's: 3 t × 2 channels × 3 planes
    assert arrays["raw.p0-burst1.ome.zarr"][1].shape[:-2] == (2, 4)
    assert arrays["raw.p0.ome.zarr"][1].shape[:-2] == (3, 2, 3)
    for name, (axes, data) in arrays.items():  # what the plan leaves out is empty
        for where in np.ndindex(*data.shape[: len(axes) - 2]):
            assert data[where].any() == (where in stored[name]), (name, where)
