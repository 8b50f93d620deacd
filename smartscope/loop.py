"""The closed loop: acquire → store and analyse → decide → vet → apply, between frames.

Four threads, one rule each:

* **acquisition** (owns the driver): apply any vetted actions, take the next frame off the
  camera and hand the same frame to the writer and to analysis at once. It never waits on
  analysis nor on the disk (only on the writer's memory budget, by policy).
* **writer** (:class:`smartscope.storage.FrameWriter`): writes raw frames, engine outputs
  and their logs, in batches; it owns every image file of the run.
* **analysis**: take the newest offered frame (older unanalysed ones are counted as
  skipped), run the pipeline, let controllers decide, pass requests through safety.
  Frames marked ``transition`` (an action took effect during their exposure) are analysed
  and stored but never shown to controllers.
* **watchdog**: a camera that does not deliver (from its (re)start: ``camera_start_s``;
  between frames: ``camera_stall_s``) or a stage that does not return is a fault: the safe
  state goes on at once, from this thread, and the run ends.

Any fault (driver error, stage error, stall, storage error or full writer queue, Ctrl-C)
ends the same way: safe state, every frame taken off the camera written, files closed,
the reason in ``events.jsonl`` and ``metrics.json``. The safe state is final: an apply that
was in flight when the fault came is followed by the safe state again, and no action is
applied after a fault. ``stored = analysed + skipped + failed`` holds for every run whose
frames all reached the disk.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import numpy as np

from smartscope.actions import ActionRequest, AuditRecord
from smartscope.config.run import SmartscopeConfig
from smartscope.controllers.base import Controller, Observation
from smartscope.drivers.base import Driver
from smartscope.exceptions import UserError
from smartscope.frame import Frame, now_s
from smartscope.metrics import percentiles_ms, strict_json
from smartscope.pipeline import Pipeline, StageError, StageOutput, StageSkipped
from smartscope.safety import Decision, Devices, SafetyGate
from smartscope.schema import RunEvent, RunMetrics, Telemetry
from smartscope.signals import on_stop_signal, shielded, signal_name
from smartscope.storage import FrameWriter, QueueFull, RunFolder
from smartscope.storage.pool import FramePool, reserve, trim_allocator

log = logging.getLogger(__name__)

# storage.reserve_queue "auto" reserves the writer queue's memory for frames this large or
# larger (a 1024² uint16 frame is 2 MiB; the small frames of a demo are not worth it)
RESERVE_MIN_FRAME_BYTES = 1 << 20

MAX_PENDING_ACTIONS = 256  # requests vetted but not yet applied; more are refused (and audited)


class LoopListener(Protocol):
    """Receives what the loop does, e.g. to stream it (``smartscope.remote``).

    Callbacks run on the loop's threads: ``on_frame`` on the acquisition thread, so it
    must only hand the frame off (never block, never copy big data synchronously). A
    listener that raises is logged and dropped; it can never stop the loop.
    """

    def on_frame(self, frame: Frame) -> None: ...

    def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None: ...

    def on_audit(self, record: AuditRecord) -> None: ...

    def on_event(self, event: RunEvent) -> None: ...


class ListenerBase:
    """A :class:`LoopListener` that ignores everything; subclass and override what you need."""

    def on_frame(self, frame: Frame) -> None:
        pass

    def on_analysis(self, frame: Frame, results: Mapping[str, StageOutput]) -> None:
        pass

    def on_audit(self, record: AuditRecord) -> None:
        pass

    def on_event(self, event: RunEvent) -> None:
        pass


class LatestSlot:
    """Holds the newest frame for analysis; replacing an untaken one counts a skip."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.skipped = 0
        self.skipped_indices: deque[int] = deque(maxlen=100_000)

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.skipped += 1
                self.skipped_indices.append(self._frame.index)
            self._frame = frame
            self._cond.notify()

    def take(self, timeout_s: float) -> Frame | None:
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout_s)
            frame, self._frame = self._frame, None
            return frame

    def count_unanalysed(self, frame: Frame) -> None:
        with self._cond:
            self.skipped += 1
            self.skipped_indices.append(frame.index)

    def close(self) -> int:
        """No more frames; an untaken one counts as skipped. Returns the final count."""
        with self._cond:
            if self._frame is not None:
                self.skipped += 1
                self.skipped_indices.append(self._frame.index)
                self._frame = None
            self._closed = True
            self._cond.notify_all()
            return self.skipped


class RunStatus(str, Enum):
    """How a run ended: all it was asked for, stopped early, or a fault."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class StopReason(str, Enum):
    """Why the acquisition stopped; the value is the default message."""

    ALL_FRAMES = "all frames acquired"
    DURATION = "duration reached"
    USER = "stopped by user"
    INTERRUPT = "interrupted (Ctrl-C)"
    REMOTE = "stopped remotely"
    REQUESTED = "stop requested"  # by a program: a scenario reached its goal, a listener...
    FAULT = "fault"
    ENDED = "acquisition ended"

    def __str__(self) -> str:
        return self.value

    @property
    def status(self) -> RunStatus:
        if self is StopReason.FAULT:
            return RunStatus.FAILED
        if self in (StopReason.ALL_FRAMES, StopReason.DURATION):
            return RunStatus.COMPLETED
        return RunStatus.STOPPED


class RunFailed(UserError, RuntimeError):
    """A run that had to succeed (a demo's) ended in a fault; the message says why and where
    its run folder is (everything up to the fault is in it)."""


@dataclass
class RunResult:
    run_dir: str
    status: RunStatus
    reason: str  # the message: what happened, in words
    metrics: RunMetrics
    stop_reason: StopReason = StopReason.ENDED
    signal: int | None = None  # the stop signal (SIGINT, SIGTERM, SIGHUP) that ended it
    signal_while_closing: bool = False  # it came once the run was closing: the closing finished

    @property
    def exit_code(self) -> int:
        """What a command should exit with: 128 + signal if one stopped it, 1 if it failed."""
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.status is RunStatus.FAILED else 0


class Loop:
    """One run of the closed loop. Build and run it with :func:`smartscope.runner.run`."""

    def __init__(
        self,
        cfg: SmartscopeConfig,
        driver: Driver,
        pipeline: Pipeline,
        controllers: Sequence[Controller],
        run: RunFolder,
        progress: Callable[[int, int | None], None] | None = None,
        safety: SafetyGate | None = None,
    ) -> None:
        self.cfg = cfg
        self.driver = driver
        self.pipeline = pipeline
        self.controllers = list(controllers)
        self.run = run
        self.safety = safety or SafetyGate(
            cfg.limits, cfg.microscope.lasers, Devices.from_config(cfg.microscope)
        )
        self.progress = progress
        self.slot = LatestSlot()
        self.writer: FrameWriter | None = None  # started by run_loop
        self._pending: queue.Queue[AuditRecord] = queue.Queue()
        self._stop = threading.Event()
        # set when the acquisition thread has returned. The main thread waits on this, not on
        # Thread.join: in CPython 3.11 a Ctrl-C that interrupts join() can mark the still
        # running thread as finished, and the run would then close files under it.
        self._acq_done = threading.Event()
        self._fault_lock = threading.Lock()
        self._fault: str | None = None
        self._apply_lock = threading.Lock()  # held while the driver applies a batch
        self._stop_reason: StopReason | None = None
        self._stop_message = ""
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._paused: set[str] = set()
        self.listeners: list[LoopListener] = []
        # actions applied while the camera streamed, waiting for the first frame taken with
        # them in force: (state revision, records, time applied)
        self._awaiting: deque[tuple[int, list[AuditRecord]]] = deque()
        self.signal: int | None = None  # the stop signal that ended the run, if one did
        self._closing = False  # _finish has begun: the run ends whatever comes now
        self._signal_while_closing = False
        self._draining = False
        self._reserve: FramePool | None = None  # the writer queue's memory (first raw frame on)
        self._reserve_decided = False  # whether the first frame has decided it
        # telemetry
        self.n_acquired = 0
        self.n_stored = 0
        self.n_analysed = 0
        self.n_failed = 0
        self.n_actions = 0
        self._last_frame_t = 0.0
        self._camera_started_t: float | None = None  # set at (re)start until the first frame
        self._analysis_started: tuple[int, float] | None = None
        self._camera_time: dict[int, float] = {}
        self.decision_latency_s: list[float] = []
        self.action_latency_s: list[float] = []
        self._t_start = 0.0
        self._t_end = 0.0
        self._first_cam_t: float | None = None
        self._last_cam_t: float | None = None

    # ------------------------------------------------------------- control

    def add_listener(self, listener: LoopListener) -> None:
        self.listeners.append(listener)

    def _notify(self, method: str, *args: Any) -> None:
        for listener in list(self.listeners):
            try:
                getattr(listener, method)(*args)
            except Exception as exc:
                log.error("listener %r dropped: %s raised %s", listener, method, exc)
                self.listeners.remove(listener)

    def _event(self, event: RunEvent) -> None:
        self.run.events.write(event)
        self._notify("on_event", event)

    @property
    def paused_controllers(self) -> set[str]:
        return set(self._paused)

    @property
    def controller_names(self) -> list[str]:
        return [c.name for c in self.controllers]

    def faulted(self) -> bool:
        """A fault has been raised (a call, not a property: it changes under other threads)."""
        return self._fault is not None

    def telemetry(self) -> Telemetry:
        """A snapshot of the running loop (for status displays and remote clients)."""
        wall = max(time.perf_counter() - self._t_start, 1e-9) if self._t_start else 0.0
        writer = self.writer
        return {
            "frames_acquired": self.n_acquired,
            "frames_stored": self.n_stored,
            "frames_analysed": self.n_analysed,
            "frames_skipped": self.slot.skipped,
            "frames_failed": self.n_failed,
            "actions_applied": self.n_actions,
            "fps_stored": self.n_stored / wall if wall else 0.0,
            "storage_queued_mb": (writer.queued_bytes / 2**20) if writer is not None else 0.0,
            "latency_decision": percentiles_ms(self.decision_latency_s[-500:]),
            "state": self.driver.state().to_json(),
            "paused_controllers": sorted(self._paused),
            "fault": self._fault,
            "stopping": self._stop.is_set(),
        }

    def request_stop(self, reason: StopReason = StopReason.USER, message: str = "") -> None:
        """End the run after the frame in hand; the first reason given is the one kept."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop_message = message or reason.value
            self._stop.set()

    def fault(self, reason: str) -> None:
        """Something went wrong: safe state now (from the calling thread), then stop."""
        with self._fault_lock:
            first = self._fault is None
            if first:
                self._fault = reason
        if not first:
            return
        log.error("fault: %s", reason)
        self._event({"t": now_s(), "event": "fault", "reason": reason})
        self._safe_state(f"fault: {reason}")
        self.request_stop(StopReason.FAULT, reason)

    def interrupt(self, signum: int) -> None:
        """A stop signal (or a person at the keyboard): safe state now, then stop. Once the
        run is closing it is only noted: the closing (safe state included) finishes first."""
        if self.signal is not None:
            return
        self.signal = signum
        name = signal_name(signum)
        self._event({"t": now_s(), "event": "interrupt", "signal": name})
        if self._closing:
            self._signal_while_closing = True
            return
        self._safe_state(name)
        self.request_stop(StopReason.INTERRUPT, f"interrupted ({name})")

    def _safe_state(self, why: str) -> None:
        self.driver.safe_state()
        self.safety.observe_safe_state()
        self._event({"t": now_s(), "event": "safe_state", "why": why})

    def pause_controller(self, name: str, paused: bool = True) -> None:
        names = {c.name for c in self.controllers}
        if name not in names:
            raise KeyError(f"no controller {name!r}; have {sorted(names)}")
        (self._paused.add if paused else self._paused.discard)(name)
        self._event({"t": now_s(), "event": "pause" if paused else "resume", "controller": name})

    def submit(self, request: ActionRequest) -> AuditRecord:
        """A request from outside the controllers (a person, a remote client)."""
        return self._vet(request)

    # ------------------------------------------------------------- actions

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def _audit(self, rec: AuditRecord) -> None:
        self.run.actions.write(rec.model_dump(mode="json"))
        self._notify("on_audit", rec)

    def _vet(self, request: ActionRequest) -> AuditRecord:
        if self._pending.qsize() >= MAX_PENDING_ACTIONS:  # bounded, whoever floods it
            rec = AuditRecord(
                seq=self._next_seq(),
                request=request,
                verdict="refused",
                applied=None,
                note=f"{MAX_PENDING_ACTIONS} actions already wait to be applied",
            )
            self._audit(rec)
            return rec
        records: list[AuditRecord] = []

        def queue_it(decision: Decision) -> None:  # in the gate's locked step: vet order = apply order
            rec = AuditRecord(
                seq=self._next_seq(),
                request=request,
                verdict=decision.verdict,
                applied=decision.action,
                note=decision.note,
            )
            if decision.action is not None:
                self._pending.put(rec)
            records.append(rec)

        self.safety.vet(request, then=queue_it)
        (rec,) = records
        if rec.applied is None:
            self._audit(rec)
        return rec

    def _take_pending(self) -> list[AuditRecord]:
        batch: list[AuditRecord] = []
        while True:
            try:
                batch.append(self._pending.get_nowait())
            except queue.Empty:
                return batch

    def _apply_pending(self) -> None:
        if self._pending.empty() or self._fault is not None:
            return  # after a fault nothing is applied: the requests are refused at the end
        with self._apply_lock:
            if self.faulted():  # a fault came between the check above and the lock
                return
            batch = self._take_pending()
            actions = [r.applied for r in batch if r.applied is not None]
            result = self.driver.apply(actions)
            # rates count from when the hardware got each value, not when it was vetted
            self.safety.observe_applied(actions, result.errors)
        if self.faulted():
            # the fault came while the driver was applying: whatever that batch switched on
            # goes off again, after it
            self._safe_state("fault during an apply: safe state re-applied after it")
        t = now_s()
        waiting: list[AuditRecord] = []
        for rec, err in zip(batch, result.errors, strict=True):
            if err is None:
                assert rec.applied is not None
                self.n_actions += 1
                cam_t = self._camera_time.get(rec.request.frame_index or -1)
                if cam_t is not None:
                    self.action_latency_s.append(t - cam_t)
                done = rec.model_copy(
                    update={"applied_time_s": t, "first_frame_index": result.first_frame_index}
                )
                if result.first_frame_index is None:
                    waiting.append(done)  # known once a frame with it in force arrives
                    continue
            else:
                done = rec.model_copy(
                    update={
                        "verdict": "failed",
                        "note": (rec.note + "; " + err).strip("; "),
                        "applied_time_s": t,
                    }
                )
            self._audit(done)
        if waiting:
            self._awaiting.append((result.revision, waiting))

    def _resolve_awaiting(self, frame: Frame) -> None:
        """The first frame taken (whole) with a batch in force names it in the audit log."""
        state = frame.state
        if frame.transition or state is None:
            return
        while self._awaiting and state.revision >= self._awaiting[0][0]:
            _, records = self._awaiting.popleft()
            for rec in records:
                self._audit(rec.model_copy(update={"first_frame_index": frame.index}))

    # ------------------------------------------------------------- threads

    def _acquire(self) -> None:
        try:
            self._acquire_frames()
        finally:
            self._acq_done.set()

    def _acquire_frames(self) -> None:
        n_target = self.cfg.acquisition.n_frames
        deadline = (
            time.perf_counter() + self.cfg.acquisition.duration_s if self.cfg.acquisition.duration_s else None
        )
        driver = self.driver
        try:
            self._camera_started_t = time.perf_counter()
            driver.start(n_target)
            while True:
                if self._stop.is_set() or (deadline and time.perf_counter() > deadline):
                    if not self._stop.is_set():
                        self.request_stop(StopReason.DURATION)
                    driver.stop()
                    self._drain_remaining()
                    return
                self._apply_pending()
                try:
                    frame = driver.next_frame(0.05)
                except StopIteration:
                    self.request_stop(StopReason.ALL_FRAMES)
                    return
                if frame is not None:
                    self._hand_off(frame)
        except Exception as exc:
            self.fault(f"driver {driver.name}: {type(exc).__name__}: {exc}")
            try:
                driver.stop()
                self._drain_remaining()
            except Exception as exc2:  # still report the first error
                log.error("while draining after a driver fault: %s", exc2)

    def _drain_remaining(self) -> None:
        """Frames the camera already took are stored even when the run is ending."""
        self._draining = True
        while True:
            try:
                frame = self.driver.next_frame(0.0)
            except StopIteration:
                return
            if frame is None:
                return
            self._hand_off(frame, analyse=False)

    def _hand_off(self, frame: Frame, analyse: bool = True) -> None:
        """The same frame to the writer and to analysis; the acquisition thread's whole job."""
        frame.stamp("dequeued")
        if frame.state is None:
            frame.state = self.driver.state()
        self.n_acquired += 1
        self._last_frame_t = time.perf_counter()
        self._camera_started_t = None
        if self._first_cam_t is None:
            self._first_cam_t = frame.camera_time_s
        self._last_cam_t = frame.camera_time_s
        if self._awaiting:
            self._resolve_awaiting(frame)
        assert self.writer is not None
        frame.image = self._reserved(frame.image)
        try:
            self.writer.put_raw(frame, wait=self._draining)
        except QueueFull as exc:  # the frame is queued; the run ends with every frame written
            self.fault(str(exc))
        if analyse:
            self.slot.put(frame)
        else:
            self.slot.count_unanalysed(frame)
        if self.listeners:
            self._notify("on_frame", frame)
        if self.progress is not None:
            self.progress(self.n_acquired, self.cfg.acquisition.n_frames)

    def _reserved(self, image: np.ndarray) -> np.ndarray:
        """The frame in the writer queue's reserved memory (:mod:`smartscope.storage.pool`);
        the reserve is made at the first frame, whose size it is cut to."""
        if not self._reserve_decided:
            self._reserve_decided = True
            policy = self.cfg.storage.reserve_queue
            if policy == "never" or (policy == "auto" and image.nbytes < RESERVE_MIN_FRAME_BYTES):
                return image
            budget = self.cfg.storage.queue_mb << 20
            slots = max(2, budget // max(image.nbytes, 1))  # the queue budget, no more
            self._reserve = reserve(image.nbytes, slots)
            log.info(
                "writer queue: %.0f MiB held for %d frames of %.1f MiB (touched in the background, kept)",
                self._reserve.nbytes / 2**20,
                slots,
                image.nbytes / 2**20,
            )
        return image if self._reserve is None else self._reserve.hold(image)

    def _on_stored(self, frames: Sequence[Frame]) -> None:
        self.n_stored += len(frames)

    def _analyse(self) -> None:
        on_error = self.cfg.pipeline.on_error
        save = self.cfg.pipeline.save_outputs
        writer = self.writer
        assert writer is not None
        while True:
            frame = self.slot.take(0.1)
            if frame is None:
                if self._stop.is_set():
                    return
                continue
            if self._fault is not None:
                self.slot.count_unanalysed(frame)
                return
            self._analysis_started = (frame.index, time.perf_counter())
            try:
                results = self.pipeline.run(frame)
            except StageSkipped as exc:
                self.slot.count_unanalysed(frame)
                self.run.analysis.write({"index": frame.index, "skipped": str(exc)})
                continue
            except StageError as exc:
                self.n_failed += 1
                self.run.analysis.write({"index": frame.index, "error": str(exc)})
                if on_error == "stop":
                    self.fault(str(exc))
                    return
                continue
            finally:
                self._analysis_started = None
            self._camera_time[frame.index] = frame.camera_time_s
            if len(self._camera_time) > 4096:
                self._camera_time.pop(next(iter(self._camera_time)))
            if save:
                t_save = now_s()
                for name, out in results.items():
                    for key, img in out.images.items():
                        writer.put_output(name, key, frame.index, img, t_save, out.channel_names.get(key))
                    if out.rows:
                        writer.put_rows(name, frame.index, out.rows)
            if not frame.transition:  # a mixed exposure is no evidence for a controller
                obs = Observation(frame, results, frame.state or self.driver.state())
                for ctl in self.controllers:
                    if ctl.name in self._paused:
                        continue
                    try:
                        requests = ctl.update(obs)
                    except Exception as exc:
                        self.fault(f"controller {ctl.name!r} raised {type(exc).__name__}: {exc}")
                        return
                    for req in requests:
                        self._vet(req)
            t_dec = frame.stamp("decided")
            if self.listeners:
                self._notify("on_analysis", frame, results)
            self.decision_latency_s.append(t_dec - frame.camera_time_s)
            self.n_analysed += 1
            self.run.analysis.write(
                {
                    "index": frame.index,
                    "times": frame.times,
                    "values": {n: o.values for n, o in results.items() if o.values},
                    **({"transition": True} if frame.transition else {}),
                }
            )

    def _watch(self) -> None:
        wd = self.cfg.watchdog
        while not self._stop.wait(0.05):
            now = time.perf_counter()
            state = self.driver.state()
            interval_s = state.interval_ms / 1e3 if math.isfinite(state.interval_ms) else 0.0
            exposure_s = state.exposure_ms / 1e3 if math.isfinite(state.exposure_ms) else 0.0
            started = self._camera_started_t
            restarted = self.driver.camera_started_s  # the driver (re)started it since the last frame
            if restarted is not None and restarted > self._last_frame_t:
                started = restarted if started is None else max(started, restarted)
            if started is not None:  # (re)started, no frame yet: a camera's start-up time applies
                waited, allowed = now - started, wd.camera_start_s + interval_s + exposure_s
                what = "since the camera was started"
            else:
                waited, allowed = now - self._last_frame_t, wd.camera_stall_s + interval_s + exposure_s
                what = "since the last one"
            if waited > allowed:
                self.fault(f"camera stalled: no frame for {waited:.1f} s {what} (allowed {allowed:.1f} s)")
                return
            analysing = self._analysis_started
            if analysing is not None and now - analysing[1] > wd.pipeline_stall_s:
                self.fault(
                    f"pipeline stalled: frame {analysing[0]} in analysis for {now - analysing[1]:.1f} s"
                )
                return

    # ----------------------------------------------------------------- run

    def run_loop(self) -> RunResult:
        self.safety.observe_state(self.driver.state())
        self._event({"t": now_s(), "event": "start", "driver": self.driver.name})
        storage = self.cfg.storage
        self.writer = FrameWriter(
            self.run,
            storage.queue_mb << 20,
            storage.on_queue_full,
            on_stored=self._on_stored,
            on_error=self.fault,
        )
        self._t_start = time.perf_counter()
        self._camera_started_t = self._t_start
        acq = threading.Thread(target=self._acquire, name="smartscope-acquire", daemon=True)
        ana = threading.Thread(target=self._analyse, name="smartscope-analyse", daemon=True)
        dog = threading.Thread(target=self._watch, name="smartscope-watchdog", daemon=True)
        acq.start()
        ana.start()
        dog.start()
        # Ctrl-C, SIGTERM, SIGHUP: a safe, complete stop; once the run is closing, a signal
        # is kept (the exit status says it came) but the closing finishes first
        with shielded("the run closes") as late:
            with on_stop_signal(self.interrupt):
                if late:  # came in the instant before the handler was in place
                    self.interrupt(late[0])
                while not self._acq_done.wait(0.1):
                    pass
                self._finish(ana, dog)
            stop = StopReason.FAULT if self._fault else (self._stop_reason or StopReason.ENDED)
            status = stop.status
            reason = self._fault or self._stop_message
            self._event({"t": now_s(), "event": "stop", "status": status.value, "reason": reason})
            metrics = self.metrics(status, reason)
            metrics["stop_reason"] = stop.name.lower()
            if self.signal is None and late:
                self.signal = late[-1]
                self._signal_while_closing = True
            if self.signal is not None:
                metrics["signal"] = signal_name(self.signal)
            self.run.write_json("metrics.json", strict_json(metrics))  # null, never NaN
        return RunResult(
            str(self.run.path), status, reason, metrics, stop, self.signal, self._signal_while_closing
        )

    def _finish(self, ana: threading.Thread, dog: threading.Thread) -> None:
        """The end of every run, fault or not: analysis released, pending requests refused,
        safe state, every queued frame written, files finished."""
        self._t_end = time.perf_counter()
        self._closing = True
        self.request_stop(StopReason.ENDED)
        self.slot.close()
        ana.join(min(self.cfg.watchdog.pipeline_stall_s, 5.0))
        if ana.is_alive():  # a hung stage: release it, do not wait forever
            if self._analysis_started is not None:
                self.n_failed += 1  # the frame it hung on
            self.pipeline.close()
            ana.join(2)
        dog.join(1)
        self._refuse_pending_at_end()
        self._safe_state("end of run")
        for what in self.driver.skipped_writes:  # what the safe state's latch refused
            self._event({"t": now_s(), "event": "skipped_after_safe_state", "what": what})
        assert self.writer is not None
        self._event({"t": now_s(), "event": "writing", "queued_mb": self.writer.queued_bytes / 2**20})
        try:
            self.writer.close()
        except TimeoutError as exc:
            self.fault(str(exc))
        if self._reserve is not None:
            log.debug(
                "writer reserve: %d frames held so far, %d kept as they came",
                self._reserve.held,
                self._reserve.passed,
            )
            trim_allocator()  # the popped frames' chunks the allocator kept go back

    def _refuse_pending_at_end(self) -> None:
        """Requests vetted but never applied (the run ended first, or a fault came) are
        logged as refused; applied ones no frame was taken with are logged without one."""
        why = (
            "refused: a fault put the microscope in its safe state"
            if self._fault
            else ("run ended before it could be applied")
        )
        for rec in self._take_pending():
            self._audit(rec.model_copy(update={"verdict": "refused", "note": why}))
        while self._awaiting:
            _, records = self._awaiting.popleft()
            for rec in records:
                note = (rec.note + "; no frame was taken with it in force").strip("; ")
                self._audit(rec.model_copy(update={"note": note}))

    def metrics(self, status: RunStatus, reason: str) -> RunMetrics:
        wall = max(self._t_end - self._t_start, 1e-9)
        cam_span = (
            (self._last_cam_t - self._first_cam_t)
            if self._first_cam_t is not None and self._last_cam_t is not None
            else 0.0
        )
        fps = (self.n_acquired - 1) / cam_span if cam_span > 0 and self.n_acquired > 1 else 0.0
        writer = self.writer
        return {
            "status": status.value,
            "reason": reason,
            "frames_acquired": self.n_acquired,
            "frames_stored": self.n_stored,
            "frames_not_stored": writer.frames_not_written if writer is not None else 0,
            "frames_analysed": self.n_analysed,
            "frames_skipped": self.slot.skipped,
            "frames_failed": self.n_failed,
            "actions_applied": self.n_actions,
            "wall_s": wall,
            "fps_acquired": fps,
            "fps_analysed": self.n_analysed / wall,
            "latency_decision": percentiles_ms(self.decision_latency_s),
            "latency_action": percentiles_ms(self.action_latency_s),
            "storage_queue_budget_mb": self.cfg.storage.queue_mb,
            "storage_queue_peak_mb": (writer.peak_queued_bytes / 2**20) if writer is not None else 0.0,
            "storage_error": writer.error if writer is not None else None,
            "storage_io": self.run.io,
            "driver": self.driver.name,
        }
