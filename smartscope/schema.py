"""What a run reports, typed: ``metrics.json``, the loop's telemetry and its latency figures.

These are ``TypedDict``s (as pymmcore-plus types its frame metadata), so the files and the
remote wire format are plain JSON objects, byte-for-byte what they were, while the code
and the tests that read them by key are checked by mypy.

Two names for the writer queue: ``storage_queue_budget_mb`` (the run's
``storage.queue_mb``, in ``metrics.json``) and ``storage_queued_mb`` (how much is queued
now, in the telemetry); ``storage_queue_peak_mb`` is the most that was queued.
"""

from __future__ import annotations

from typing import Any, TypedDict

from typing_extensions import NotRequired

__all__ = ["Latency", "RunMetrics", "Telemetry"]

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
