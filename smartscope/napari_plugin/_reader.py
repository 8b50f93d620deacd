"""npe2 reader contributions: each returns a reader for paths it understands, else None.

The manifest claims only what these read: folders (napari offers every reader that accepts
folders for any folder; this one takes run folders and OME-Zarr images), OME-TIFF files,
and smartscope's own localization tables. A plain TIFF goes to napari's own reader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from smartscope.napari_plugin._run import (
    LayerData,
    is_ome_image,
    is_run_folder,
    is_table_file,
    ome_layers,
    run_layers,
    table_layers,
)

__all__ = ["get_ome_reader", "get_run_reader", "get_table_reader", "layers_for"]

Reader = Callable[[str | list[str]], list[LayerData]]


def _one(path: str | list[str]) -> str | None:
    if isinstance(path, list):
        return path[0] if len(path) == 1 else None
    return path


def layers_for(path: str | Path) -> list[LayerData] | None:
    """The layers of a run folder, an OME image or a localization table; None otherwise."""
    if is_run_folder(path):
        return run_layers(path)
    if is_ome_image(path):
        return ome_layers(path)
    if is_table_file(path):
        return table_layers(path)
    return None


def _reader(path: str | list[str], accepts: Callable[[str], bool]) -> Reader | None:
    p = _one(path)
    if p is None or not accepts(p):
        return None
    return lambda path: layers_for(_one(path) or p) or []


def get_run_reader(path: str | list[str]) -> Reader | None:
    """Folders: a run folder, or an OME-Zarr image."""
    return _reader(path, lambda p: Path(p).is_dir() and (is_run_folder(p) or is_ome_image(p)))


def get_ome_reader(path: str | list[str]) -> Reader | None:
    return _reader(path, lambda p: Path(p).is_file() and is_ome_image(p))


def get_table_reader(path: str | list[str]) -> Reader | None:
    return _reader(path, is_table_file)
