"""Network weights as a plain ``.npz`` archive: no pickle when saving or loading.

``np.load(..., allow_pickle=False)`` refuses object arrays, so a weights file can hold
only named numeric tensors; a malicious file cannot execute code on load. This is the
format engine bundles and training checkpoints use.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["load_state_npz", "save_state_npz", "state_from_npz_bytes", "state_to_npz_bytes"]


def state_to_npz_bytes(module: nn.Module) -> bytes:
    """All parameters and buffers of ``module`` as an uncompressed ``.npz`` (float32 kept)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_state_npz(module: nn.Module, path: str | Path) -> None:
    Path(path).write_bytes(state_to_npz_bytes(module))


def state_from_npz_bytes(data: bytes, source: str = "weights") -> dict[str, torch.Tensor]:
    """Parse npz bytes into a state dict; object arrays (pickle) are refused."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}
    except ValueError as exc:
        raise ValueError(f"{source}: not a plain numeric .npz archive ({exc})") from exc
    except Exception as exc:  # zipfile.BadZipFile, OSError ...
        raise ValueError(f"{source}: unreadable .npz archive ({type(exc).__name__}: {exc})") from exc


def load_state_npz(module: nn.Module, path: str | Path) -> nn.Module:
    """Load weights from ``path`` into ``module`` (strict: names and shapes must match)."""
    p = Path(path)
    state = state_from_npz_bytes(p.read_bytes(), source=str(p))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{p}: weights do not match the network ({exc})") from exc
    return module
