"""What a run reports, typed: ``metrics.json``, the loop's telemetry, its latency figures and
the events of ``events.jsonl`` (:data:`RunEvent`, one ``TypedDict`` per ``event`` value).

These are ``TypedDict``s (as pymmcore-plus types its frame metadata), so the files and the
remote wire format are plain JSON objects, byte-for-byte what they were, while the code
and the tests that read them by key are checked by mypy.

Two names for the writer queue: ``storage_queue_budget_mb`` (the run's
``storage.queue_mb``, in ``metrics.json``) and ``storage_queued_mb`` (how much is queued
now, in the telemetry); ``storage_queue_peak_mb`` is the most that was queued.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired

__all__ = [
    "FaultEvent",
    "InterruptEvent",
    "Latency",
    "PauseEvent",
    "RemoteCommandEvent",
    "RemoteRefusedEvent",
    "RunEvent",
    "RunMetrics",
    "SafeStateEvent",
    "SkippedAfterSafeStateEvent",
    "StartEvent",
    "StopEvent",
    "Telemetry",
    "WritingEvent",
]

# latency percentiles in ms, keyed p50_ms, p95_ms, p99_ms (NaN when nothing was measured;
# null in metrics.json): see :func:`smartscope.metrics.percentiles_ms`
Latency = dict[str, float]


class Telemetry(TypedDict):
    """A snapshot of a running loop (status displays, remote clients)."""

    frames_acquired: int
    frames_stored: int
    frames_analysed: int
    frames_skipped: int
    frames_failed: int
    actions_applied: int
    fps_stored: float
    storage_queued_mb: float
    latency_decision: Latency
    state: dict[str, Any]
    paused_controllers: list[str]
    fault: str | None
    stopping: bool


class RunMetrics(TypedDict):
    """``metrics.json``: how a run ended and what it did."""

    status: str
    reason: str
    frames_acquired: int
    frames_stored: int
    frames_not_stored: int
    frames_analysed: int
    frames_skipped: int
    frames_failed: int
    actions_applied: int
    wall_s: float
    fps_acquired: float
    fps_analysed: float
    latency_decision: Latency
    latency_action: Latency
    storage_queue_budget_mb: int
    storage_queue_peak_mb: float
    storage_error: str | None
    storage_io: str
    driver: str
    stop_reason: NotRequired[str]
    signal: NotRequired[str]


# ------------------------------------------------------------------ events.jsonl


class StartEvent(TypedDict):
    """The loop started on ``driver``."""

    t: float  # epoch seconds, as every event
    event: Literal["start"]
    driver: str


class StopEvent(TypedDict):
    """The run ended with ``status`` (``metrics.json``'s) for ``reason``."""

    t: float
    event: Literal["stop"]
    status: str
    reason: str


class FaultEvent(TypedDict):
    """Something went wrong; the safe state and the stop follow."""

    t: float
    event: Literal["fault"]
    reason: str


class InterruptEvent(TypedDict):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) by name."""

    t: float
    event: Literal["interrupt"]
    signal: str


class SafeStateEvent(TypedDict):
    """Lights off, mirror flat: ``why`` (a fault, a signal, the end of the run)."""

    t: float
    event: Literal["safe_state"]
    why: str


class PauseEvent(TypedDict):
    """A controller paused or resumed (by a person or a remote client)."""

    t: float
    event: Literal["pause", "resume"]
    controller: str


class SkippedAfterSafeStateEvent(TypedDict):
    """A write the safe state's latch refused (it would have undone the safe state)."""

    t: float
    event: Literal["skipped_after_safe_state"]
    what: str


class WritingEvent(TypedDict):
    """Acquisition is over; ``queued_mb`` still go to disk before the files close."""

    t: float
    event: Literal["writing"]
    queued_mb: float


class RemoteRefusedEvent(TypedDict):
    """``count`` remote requests of ``kind`` refused in one window (``note``: the first reason)."""

    t: float
    event: Literal["remote_refused"]
    origin: str
    kind: str
    count: int
    note: str


class RemoteCommandEvent(TypedDict):
    """A remote command and whether the run took it."""

    t: float
    event: Literal["remote_command"]
    origin: str
    command: dict[str, Any]
    accepted: bool
    note: str


RunEvent = (
    StartEvent
    | StopEvent
    | FaultEvent
    | InterruptEvent
    | SafeStateEvent
    | PauseEvent
    | SkippedAfterSafeStateEvent
    | WritingEvent
    | RemoteRefusedEvent
    | RemoteCommandEvent
)
"""One line of ``events.jsonl``, told apart by its ``event`` field."""
