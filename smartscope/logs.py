"""Logging: the console level (``smartscope --log-level``) and each run's ``run.log``.

:func:`configure` sets the level of the ``smartscope`` loggers and of the console handlers.
:class:`RunLog` is attached by the runner for the duration of one run: a file handler on
the ``smartscope`` logger writes ``run.log`` in the run folder (INFO and above, whatever
the console shows, with time and thread), and as a loop listener it writes the run's
events and every action's verdict there too, so one file tells the run's story in order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartscope.exceptions import InvalidValue
from smartscope.loop import ListenerBase
from smartscope.schema import RunEvent

if TYPE_CHECKING:
    from smartscope.actions import AuditRecord

__all__ = ["LEVELS", "RunLog", "configure"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s [%(threadName)s] %(message)s"
log = logging.getLogger("smartscope.run")


def configure(level: str) -> None:
    """Console level for smartscope's messages (``DEBUG`` also shows formatted errors' tracebacks)."""
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        raise InvalidValue(f"--log-level: {level!r} is not one of {', '.join(LEVELS)}")
    logging.getLogger("smartscope").setLevel(lvl)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(lvl)


class RunLog(ListenerBase):
    """``run.log`` for one run: smartscope's log records, events and action verdicts."""

    def __init__(self, path: Path, level: int = logging.INFO) -> None:
        self.path = path
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setLevel(level)
        self.handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
        self._logger = logging.getLogger("smartscope")
        self._saved_level = self._logger.level
        if self._logger.getEffectiveLevel() > level:
            self._logger.setLevel(level)
        self._logger.addHandler(self.handler)
        log.info("run folder %s", path.parent)

    def on_event(self, event: RunEvent) -> None:
        fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "event"))
        # a fault is logged at ERROR by the loop itself; here it is the run's story, at INFO
        log.info("event %s %s", event.get("event"), fields)

    def on_audit(self, record: AuditRecord) -> None:
        req = record.request
        log.info(
            "action %s from %s at frame %s: %s -> %s (%s)",
            req.action.kind,
            req.source,
            req.frame_index,
            _short(req.action.model_dump(mode="json")),
            record.verdict,
            req.reason,
        )

    def close(self) -> None:
        log.info("run.log closed")
        self._logger.removeHandler(self.handler)
        self._logger.setLevel(self._saved_level)
        self.handler.close()


def _short(value: Any, limit: int = 300) -> str:
    """An action for one log line: a long schedule is cut (actions.jsonl keeps it whole)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
