"""JSON lines: append-only, flushed per write; a crash loses at most a partial last line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["JsonlWriter", "dumps", "json_default", "read_jsonl"]

log = logging.getLogger(__name__)


def json_default(obj: Any) -> Any:
    """JSON for what ``json`` does not know: numpy scalars and arrays, paths, pydantic models."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "to_json"):
        return obj.to_json()
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=json_default, separators=(",", ":"))


class JsonlWriter:
    """Append-only JSON lines, flushed per write call.

    A log write that fails (a full disk) is logged once and not retried, and never raises
    into the thread that logs: the run's own fault handling (the frame writer's error)
    reports the disk. ``error`` says what happened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] = path.open("a", encoding="utf-8", buffering=1)
        self.error: str | None = None

    def write(self, record: Mapping[str, Any]) -> None:
        self._write(dumps(record) + "\n")

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Several lines in one write (the frame writer's batches)."""
        text = "".join(dumps(r) + "\n" for r in records)
        if text:
            self._write(text)

    def _write(self, text: str) -> None:
        if self.error is not None or self._fh.closed:
            return
        try:
            self._fh.write(text)
            self._fh.flush()
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror or exc}"
            log.error(self.error)

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError as exc:  # the last flush on a full disk
            log.error("cannot close %s: %s", self.path, exc)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a JSONL file; a last line cut short by a crash is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
