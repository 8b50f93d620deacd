"""``smartscope view RUN_DIR``: open a run folder (or a localization table) in napari."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["populate", "view_cmd"]


def populate(viewer: Any, path: Path) -> Any:
    """Read ``path`` into ``viewer`` with the smartscope plugin; for a run folder, return its
    action-log table widget (the caller docks it), else None."""
    from smartscope.napari_plugin._run import is_run_folder
    from smartscope.napari_plugin._widget import ActionLogWidget

    viewer.open(str(path), plugin="smartscope")
    return ActionLogWidget(viewer, path) if is_run_folder(path) else None


def view_cmd(
    path: Annotated[Path, typer.Argument(help="run folder, or a ThunderSTORM CSV / Picasso HDF5 table")],
) -> None:
    """Open a run in napari: raw frames at the calibrated scale, engine outputs, localizations,
    events on the time axis and the action log as a table (the smartscope napari plugin)."""
    from smartscope.napari_plugin._run import is_run_folder, is_table_file

    if not (is_run_folder(path) or is_table_file(path)):
        raise ValueError(
            f"{path}: neither a run folder (frames.jsonl + raw*.ome.tif) nor a localization table"
        )
    import napari  # a missing 'viewer' extra is named by the CLI's error formatter

    viewer = napari.Viewer(title=f"smartscope: {path.name}")
    table = populate(viewer, path)
    if table is not None:
        viewer.window.add_dock_widget(table, name="action log", area="bottom")
    napari.run()
