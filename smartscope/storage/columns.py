"""Table rows (localizations, event rows) as columns in HDF5, readable while they grow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.frame import now_s

__all__ = ["ColumnarWriter", "read_columns"]


class ColumnarWriter:
    """Table rows (numeric) -> one HDF5 file of equal-length 1-D datasets, one per column.

    Rows are buffered and appended as one chunk per column once ``chunk_rows`` are pending
    or ``flush_s`` has passed since the last append, then flushed. The file is in HDF5's
    single-writer/multiple-reader mode from the first chunk on: readers may open it while
    it grows, and a killed process leaves every appended chunk readable (at most the
    pending rows are lost). Columns are fixed by the first chunk (``frame`` int64, the rest
    float64; a missing value is NaN); a later row with a new column is an error.
    """

    def __init__(self, path: Path, chunk_rows: int = 4096, flush_s: float = 1.0) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self.flush_s = flush_s
        self.n_rows = 0
        self._pending: list[Mapping[str, Any]] = []
        self._last = now_s()
        self._file: Any = None
        self._columns: list[str] = []

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._pending.extend(rows)
        if len(self._pending) >= self.chunk_rows or now_s() - self._last >= self.flush_s:
            self.flush()

    def _open(self, first: Mapping[str, Any]) -> None:
        import h5py

        self._columns = list(first)
        self._file = h5py.File(self.path, "w", libver="latest")
        for c in self._columns:
            dtype = np.int64 if c == "frame" else np.float64
            self._file.create_dataset(c, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(self.chunk_rows,))
        self._file.swmr_mode = True

    def flush(self) -> None:
        self._last = now_s()
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        if self._file is None:
            self._open(rows[0])
        unknown = {k for r in rows for k in r} - set(self._columns)
        if unknown:
            raise ValueError(
                f"{self.path.name}: columns {sorted(unknown)} not in the first rows' {self._columns}"
            )
        n0, n = self.n_rows, len(rows)
        for c in self._columns:
            ds = self._file[c]
            col = np.array([r.get(c, np.nan) for r in rows], dtype=ds.dtype)
            ds.resize((n0 + n,))
            ds[n0:] = col
        self.n_rows = n0 + n
        self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """All columns of a :class:`ColumnarWriter` file (readable while it is being written)."""
    import h5py

    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        return {k: np.asarray(f[k][:]) for k in f}
