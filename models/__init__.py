"""Training entry points, the learned families' run-time stages and the engine bundles the project
ships; the network architectures they train are in :mod:`smartscope.engines.networks`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from smartscope.engines.bundle import EngineManifest

__all__ = ["BUNDLES_DIR", "heldout_input", "shipped_bundle"]

BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"


def shipped_bundle(name: str) -> Path:
    """Folder of a bundle shipped in ``models/bundles`` (made by this project's training)."""
    path = BUNDLES_DIR / name
    if not path.is_dir():
        have = sorted(p.name for p in BUNDLES_DIR.iterdir() if p.is_dir())
        raise FileNotFoundError(f"no shipped bundle {name!r} in {BUNDLES_DIR}; have {have}")
    return path


def heldout_input(manifest: EngineManifest) -> np.ndarray | None:
    """A held-out input field of a bundle in camera units, re-created from its provenance,
    or None when its family cannot (then the user gives one: ``--test-input``). Only
    simulated denoising fields can be re-created."""
    prov = manifest.provenance
    if manifest.task == "denoise" and prov.heldout_fovs:
        from smartscope.models.denoise.data import simulated_field

        return simulated_field(prov.heldout_fovs[0], prov.data)
    return None
