"""Replay: a recorded stack played back as if live, through the same loop and pipeline.

Reads a multi-page TIFF/OME-TIFF (e.g. a previous run's ``raw.ome.tif``) page by page
(memory use stays one frame), paced at the recorded frame rate (from the run's
``frames.jsonl`` beside the stack, else the OME ``DeltaT`` of each plane) or at a chosen
``fps``. Recorded data cannot obey actions: every action is accepted, logged as not
applicable, and has no effect; ``state()`` reports the recorded settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import tifffile

from smartscope.actions import Action
from smartscope.drivers.base import ApplyResult, DriverError
from smartscope.frame import Frame, now_s
from smartscope.state import DriverState


def _recorded_times(path: Path, tif: tifffile.TiffFile, n: int) -> list[float] | None:
    """Per-frame camera times, relative to the first frame, in seconds, if recorded."""
    jsonl = path.parent / "frames.jsonl"
    if jsonl.is_file():
        times: list[float] = []
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by a crash ends the usable record
            if rec.get("file") == path.name:
                times.append(float(rec["camera_time_s"]))
        if len(times) >= n:
            return [t - times[0] for t in times[:n]]
    if tif.is_ome and tif.ome_metadata:
        import re

        deltas = [float(m) for m in re.findall(r'DeltaT="([-0-9.eE+]+)"', tif.ome_metadata)]
        if len(deltas) >= n:
            return [d - deltas[0] for d in deltas[:n]]
    return None


class ReplayDriver:
    name = "replay"

    def __init__(self, path: Path, fps: float | None = None, loop: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise DriverError(f"microscope.replay_path: {path} does not exist")
        try:
            self._tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise DriverError(f"microscope.replay_path: {path} is not a readable TIFF ({exc})") from exc
        self.path = path
        self.n_pages = len(self._tif.pages)
        if self.n_pages == 0:
            raise DriverError(f"microscope.replay_path: {path} holds no images")
        first = self._tif.pages.first
        if len(first.shape) != 2:
            raise DriverError(
                f"microscope.replay_path: {path} pages have shape {first.shape}; "
                "replay plays 2-D (Y, X) frames"
            )
        self.fps = fps
        self._times = None if fps else _recorded_times(path, self._tif, self.n_pages)
        if self._times is None and fps is None:
            self.fps = 10.0  # nothing recorded: a stated default, reported in state()
        self._i = 0
        self._n_target: int | None = None
        self._t0 = 0.0
        self._state = DriverState(
            exposure_ms=float("nan"),
            interval_ms=1e3 / self.fps if self.fps else float("nan"),
            roi=(0, 0, int(first.shape[1]), int(first.shape[0])),
            source=str(path),
        )

    def start(self, n_frames: int | None) -> None:
        self._n_target = self.n_pages if n_frames is None else min(n_frames, self.n_pages)
        self._t0 = time.perf_counter()

    def _due(self, i: int) -> float:
        if self._times is not None:
            return self._t0 + self._times[i]
        assert self.fps is not None
        return self._t0 + i / self.fps

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._n_target is None or self._i >= self._n_target:
            raise StopIteration
        wait = self._due(self._i) - time.perf_counter()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        page = self._tif.pages[self._i]
        img = page.asarray()
        t = now_s()
        frame = Frame(
            index=self._i,
            image=img,
            camera_time_s=t,
            state=self._state,
            metadata={"replay_page": self._i},
        )
        frame.times["camera"] = t
        self._i += 1
        return frame

    def apply(self, actions: Sequence[Action]) -> ApplyResult:
        msg = "replay: recorded data cannot change; action logged only"
        return ApplyResult(
            first_frame_index=self._i, errors=[msg for _ in actions], revision=self._state.revision
        )

    def state(self) -> DriverState:
        return self._state

    def safe_state(self) -> None:
        pass

    def stop(self) -> None:
        self._n_target = min(self._n_target or 0, self._i)

    def close(self) -> None:
        self._tif.close()
