"""Network definitions, training entry points and the engine bundles the project ships."""

from __future__ import annotations

from pathlib import Path

BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"


def shipped_bundle(name: str) -> Path:
    """Folder of a bundle shipped in ``models/bundles`` (made by this project's training)."""
    path = BUNDLES_DIR / name
    if not path.is_dir():
        have = sorted(p.name for p in BUNDLES_DIR.iterdir() if p.is_dir())
        raise FileNotFoundError(f"no shipped bundle {name!r} in {BUNDLES_DIR}; have {have}")
    return path
