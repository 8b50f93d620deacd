"""``smartscope view PATH``: open a run folder, an OME image or a localization table in napari."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from smartscope.exceptions import fail

__all__ = ["populate", "view_cmd"]


def populate(viewer: Any, path: Path) -> Any:
    """Read ``path`` into ``viewer`` with the smartscope plugin's readers (any file name:
    napari's reader dispatch, which goes by name patterns, is not asked); for a run folder,
    return its action-log table widget (the caller docks it), else None."""
    from napari.layers import Layer

    from smartscope.napari_plugin._reader import layers_for
    from smartscope.napari_plugin._run import is_run_folder
    from smartscope.napari_plugin._widget import ActionLogWidget

    for data, kw, kind in layers_for(path) or []:
        viewer.add_layer(Layer.create(data, kw, kind))
    return ActionLogWidget(viewer, path) if is_run_folder(path) else None


def view_cmd(
    path: Annotated[
        Path,
        typer.Argument(
            help="run folder (OME-TIFF or OME-Zarr), OME-TIFF / OME-Zarr image, or a "
            "ThunderSTORM CSV / Picasso HDF5 table"
        ),
    ],
) -> None:
    """Open a run in napari: raw frames per channel on named axes (t, p, z, y, x) in µm and s,
    engine outputs, localizations, events on the time axis and the action log as a table (the
    smartscope napari plugin)."""
    from smartscope.napari_plugin._run import is_ome_image, is_run_folder, is_table_file

    if not (is_run_folder(path) or is_ome_image(path) or is_table_file(path)):
        fail(
            f"{path}: neither a run folder (frames.jsonl + raw*.ome.tif or raw*.ome.zarr), an OME "
            "image, nor a localization table",
            2,
        )
    import napari  # a missing 'viewer' extra is named by the CLI's error formatter

    viewer = napari.Viewer(title=f"smartscope: {path.name}")
    table = populate(viewer, path)
    if table is not None:
        viewer.window.add_dock_widget(table, name="action log", area="bottom")
    napari.run()
