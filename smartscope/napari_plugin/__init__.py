"""smartscope's napari plugin (npe2): a live widget for a running loop, readers for run
folders and localization tables, and the action log as a table.

The manifest is ``napari.yaml`` beside this file, registered under the ``napari.manifest``
entry point, so napari lists "smartscope" among its plugins. ``smartscope view RUN_DIR``
opens a run with it. The layer logic lives in :mod:`._run` and needs neither napari nor
Qt; :mod:`._widget` holds the Qt parts (the optional ``viewer`` extra).
"""
