"""Learned event detector (U-Net heat map): ground truth, training path, shipped bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smartscope.config import LearnedEventDetectorConfig
from smartscope.frame import Frame
from smartscope.models import BUNDLES_DIR
from smartscope.models.events.data import HELDOUT_SEED_BASE, event_target, frame_label
from smartscope.models.events.stage import LearnedEventDetector, trigger_thresholds
from smartscope.models.events.train import roc_auc, train_bundle
from smartscope.simulators.microscope import VirtualMicroscope

EVENT = {"onset_s": 10.0, "fission_s": 14.0, "y_px": 30.0, "x_px": 40.0}


def test_target_follows_the_event_phases() -> None:
    shape = (64, 64)
    before, _ = event_target([EVENT], 9.0, shape)
    faint_heat, faint_keep = event_target([EVENT], 10.5, shape)  # 12 % of the constriction
    on_heat, on_keep = event_target([EVENT], 13.0, shape)
    late_heat, late_keep = event_target([EVENT], 18.0, shape)  # fission + 4 s
    assert before.max() == 0.0
    assert faint_heat.max() == 0.0 and faint_keep[30, 40] == 0.0 and faint_keep[0, 0] == 1.0
    assert on_heat[30, 40] == pytest.approx(1.0) and on_heat[0, 0] < 1e-6 and on_keep.min() == 1.0
    assert late_heat.max() == 0.0 and late_keep[30, 40] == 0.0
    assert [frame_label([EVENT], t) for t in (5.0, 10.5, 16.9, 18.0, 22.5)] == [0, 1, 1, -1, 0]


def test_roc_auc_counts_pairs() -> None:
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.1, 0.2])) == 1.0
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5
    # 3 of 4 (positive, negative) pairs ordered right
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.3, 0.5, 0.1])) == 0.75


def _stage_scores(bundle: Path, seed: int, duration_s: float) -> list[tuple[float, float, float, int]]:
    """(t_s, score, distance to the nearest event site, frame label) per frame, stage on ORT."""
    stage = LearnedEventDetector(LearnedEventDetectorConfig(bundle=bundle, backend="onnxruntime"))
    vm = VirtualMicroscope("events", seed=seed, sensor_px=256, duration_s=duration_s)
    vm.interval_ms = 1000.0
    events = vm.events_truth()
    rows = []
    try:
        for i in range(int(duration_s)):
            img, truth = vm.render_frame()
            md = {"SimTime_s": f"{truth.t_s:.6f}"}
            v = stage.process(
                Frame(index=i, image=img, camera_time_s=truth.t_s, metadata={"mm": md}), {}
            ).values
            d = min(np.hypot(v["event_y_px"] - e["y_px"], v["event_x_px"] - e["x_px"]) for e in events)
            rows.append((truth.t_s, v["event_score"], float(d), frame_label(events, truth.t_s)))
    finally:
        stage.close()
    return rows


def test_tiny_training_run_makes_a_bundle_the_stage_runs(tmp_path: Path) -> None:
    """Same code path as ``smartscope train events``: crops, training, held-out thresholds,
    export; the bundle then runs in the stage through ONNX Runtime."""
    out = tmp_path / "events-tiny"
    metrics = train_bundle(
        out, n_train_seeds=1, steps=8, n_heldout_seeds=1, duration_s=20.0, batch=4, command="test"
    )
    man = json.loads((out / "engine.json").read_text())
    assert man["task"] == "events" and man["provenance"]["command"] == "test"
    assert 0.0 <= man["metrics"]["heldout_auc_net"] <= 1.0
    assert 0.0 <= man["metrics"]["heldout_auc_classical"] <= 1.0
    th = trigger_thresholds(out)
    assert 0.0 <= th["off_threshold"] <= th["on_threshold"] <= 1.0
    assert th["on_threshold"] == pytest.approx(metrics["trigger_on_threshold"])
    rows = _stage_scores(out, seed=3, duration_s=4.0)
    assert rows[0][1] == 0.0  # first frame: reference only
    assert all(0.0 <= s <= 1.0 for _, s, _, _ in rows[1:])
    assert len({s for _, s, _, _ in rows[1:]}) > 1  # the heat map follows the frames


SHIPPED = BUNDLES_DIR / "events-unet-small"


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="no shipped events-unet-small bundle")
def test_shipped_bundle_separates_event_frames_from_quiet_ones() -> None:
    """On a field no training or held-out run used (1 s frames, stage on ONNX Runtime):
    frames just after a fission score above the trigger's on-threshold, at the event
    site, and above every quiet frame but few."""
    th = trigger_thresholds(SHIPPED)
    seed, duration_s = HELDOUT_SEED_BASE + 500, 60.0
    events = VirtualMicroscope("events", seed=seed, sensor_px=256, duration_s=duration_s).events_truth()
    rows = _stage_scores(SHIPPED, seed, duration_s)

    def fresh(t: float) -> bool:  # an event parted less than 3 s ago
        return any(0.0 <= t - e["fission_s"] < 3.0 for e in events)

    divided = [(s, d) for t, s, d, lab in rows[1:] if lab == 1 and fresh(t)]
    quiet = [s for _, s, _, lab in rows[1:] if lab == 0]
    assert len(divided) >= 3 and len(quiet) >= 3, (divided, quiet)
    assert float(np.median([s for s, _ in divided])) >= th["on_threshold"], (divided, th)
    assert all(d < 8.0 for s, d in divided if s >= th["on_threshold"])  # located at an event
    auc = roc_auc(
        np.r_[np.ones(len(divided)), np.zeros(len(quiet))] > 0, np.r_[[s for s, _ in divided], quiet]
    )
    assert auc >= 0.8, (auc, divided, quiet)
