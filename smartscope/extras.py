"""Optional extras (pyproject.toml) and the sentence that names one when it is missing."""

from __future__ import annotations

__all__ = ["EXTRA_OF", "needs_extra"]

EXTRA_OF: dict[str, str] = {
    "onnx": "inference",
    "onnxruntime": "inference",
    "torch": "ml",
    "bioimageio": "bioimageio",
    "napari": "viewer",
    "qtpy": "viewer",
    "PyQt6": "viewer",
    "npe2": "viewer",
    "pycromanager": "pycromanager",
    "tensorrt": "tensorrt",
    "tensorstore": "zarr",
    "zarr": "zarr",
    "dask": "cluster",
    "distributed": "cluster",
    "dask_jobqueue": "cluster",
}
"""Top-level module -> the extra that installs it (``pip install 'smartscope[EXTRA]'``)."""


def needs_extra(extra: str, what: str = "") -> str:
    lead = f"{what} needs" if what else "needs"
    return f"{lead} the '{extra}' extra: pip install 'smartscope[{extra}]'"
