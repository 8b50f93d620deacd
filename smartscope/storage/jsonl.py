"""JSON lines: append-only, flushed per write; a crash loses at most a partial last line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["JsonlWriter", "dumps", "json_default", "read_jsonl"]


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
    """Append-only JSON lines, flushed per write call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] = path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(dumps(record) + "\n")

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Several lines in one write (the frame writer's batches)."""
        text = "".join(dumps(r) + "\n" for r in records)
        if text:
            self._fh.write(text)
            self._fh.flush()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        self._fh.close()


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
