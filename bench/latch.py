"""The safe state's latch, measured: faults during a batch applied behind a slow camera.

Each run (the drill of ``tests/test_fault_injection.py``): the laser demo config (a real
Micro-Manager core, D-DA standing in for an analog-modulated 488 nm laser at 5 V) behind
one of the two drivers; a camera that takes ``--restart-s`` to stop its sequence and as
long to start it again; at frame 5 a controller asks, in one batch, for a camera change and
9 V of light; 0.3 s into the camera's stop a fault comes from another thread. The laser's
value is read from the core every 2 ms throughout. Reported per driver: runs in which any
sample after the fault's safe state was above 0, the highest such sample, and for how long
the light was on after the safe state (the sum of the intervals of such samples). Before the
latch (issue 23, F1) the batch went on writing: 9 V for the second the camera took to start.

    nice python bench/latch.py --runs 20
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the drill is the test suite's

from tests.conftest import DATA, DRIVERS, open_rig
from tests.test_fault_injection import SlowCamera, fault_during_a_slow_restart, safe_state_time


def one_run(driver: str, root: Path) -> dict[str, float]:
    with open_rig(driver, DATA / "demo_laser.cfg") as rig:
        res, light = fault_during_a_slow_restart(rig, root)
    t_safe = safe_state_time(Path(res.run_dir))
    samples = light.samples
    after = [(t, p) for t, p in samples if t > t_safe]
    before = [p for t, p in samples if t <= t_safe]
    on_s = sum(t1 - t0 for (t0, p), (t1, _) in itertools.pairwise(after) if p > 0)
    return {
        "samples_after": float(len(after)),
        "max_after": max((p for _, p in after), default=float("nan")),
        "on_after_s": on_s,
        "max_before": max(before, default=float("nan")),
        "failed": float(res.status == "failed"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="runs per driver")
    p.add_argument("--restart-s", type=float, default=1.0, help="the camera's stop and start time, each")
    args = p.parse_args()
    SlowCamera.RESTART_S = args.restart_s
    print(
        f"fault 0.3 s into a batch behind a camera that takes {args.restart_s:g} s to stop and "
        f"{args.restart_s:g} s to start; laser read every 2 ms; {args.runs} runs per driver"
    )
    print(
        f"{'driver':>14} {'runs':>5} {'lit after':>10} {'max V after':>12} {'on after (s)':>13} "
        f"{'samples after (min)':>20} {'V before (min)':>15} {'s/run':>6}"
    )
    for driver in DRIVERS:
        rows = []
        t0 = time.monotonic()
        for k in range(args.runs):
            with tempfile.TemporaryDirectory(prefix=f"latch-{driver}-{k}-") as tmp:
                rows.append(one_run(driver, Path(tmp)))
        lit = sum(r["max_after"] > 0 for r in rows)
        print(
            f"{driver:>14} {len(rows):>5} {lit:>10} {max(r['max_after'] for r in rows):>12.3g} "
            f"{max(r['on_after_s'] for r in rows):>13.3f} {min(r['samples_after'] for r in rows):>20.0f} "
            f"{min(r['max_before'] for r in rows):>15.3g} {(time.monotonic() - t0) / len(rows):>6.1f}"
        )
        assert all(r["failed"] for r in rows), "every run must end in its fault"


if __name__ == "__main__":
    main()
