"""npe2 reader contributions: each returns a reader for paths it understands, else None."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from smartscope.napari_plugin._run import LayerData, is_run_folder, is_table_file, run_layers, table_layers

__all__ = ["get_run_reader", "get_table_reader"]

Reader = Callable[[str | list[str]], list[LayerData]]


def _one(path: str | list[str]) -> str | None:
    if isinstance(path, list):
        return path[0] if len(path) == 1 else None
    return path


def get_run_reader(path: str | list[str]) -> Reader | None:
    p = _one(path)
    if p is None or not is_run_folder(p):
        return None
    return lambda path: run_layers(Path(_one(path) or p))


def get_table_reader(path: str | list[str]) -> Reader | None:
    p = _one(path)
    if p is None or not is_table_file(p):
        return None
    return lambda path: table_layers(Path(_one(path) or p))
