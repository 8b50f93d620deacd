"""An engine = a verified bundle + a backend + normalization (or bioimage.io processing) + tiling.

Normalization and processing run here, on the host, on the whole frame (per-frame
statistics are the frame's, never a tile's), for every backend alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smartscope.engines.backends import Backend, BackendChoice, Precision, select_backend
from smartscope.engines.bundle import Bundle, EngineManifest, load_bundle
from smartscope.engines.processing import Processor
from smartscope.engines.tiling import run_tiled
from smartscope.exceptions import InvalidValue

__all__ = ["Engine"]


class Engine:
    """Runs a bundle on camera frames: normalize -> (tiled) backend -> de-normalize."""

    def __init__(self, bundle: Bundle, backend: Backend, *, max_batch: int = 4) -> None:
        if len(bundle.manifest.inputs) != 1:
            raise InvalidValue(f"{bundle.source}: the runtime supports engines with one input tensor")
        self.bundle = bundle
        self.backend = backend
        self.max_batch = max_batch
        man = bundle.manifest
        self._pre = Processor(man.preprocessing) if man.preprocessing is not None else None
        self._post = {t.name: Processor(t.postprocessing) for t in man.outputs if t.postprocessing}

    @classmethod
    def open(
        cls,
        path: str | Path,
        backend: BackendChoice = "auto",
        *,
        device: str | None = None,
        precision: Precision | None = None,
        max_batch: int = 4,
    ) -> Engine:
        bundle = load_bundle(path)
        return cls(
            bundle,
            select_backend(bundle, backend, device=device, precision=precision),
            max_batch=max_batch,
        )

    @property
    def manifest(self) -> EngineManifest:
        return self.bundle.manifest

    def normalization_params(self, image: np.ndarray) -> tuple[float | np.ndarray, float | np.ndarray]:
        """(offset, scale) mapping this frame to network units: ``x = (adu - offset) / scale``.

        Scalars, or ``(C, 1, 1)`` arrays for a per-channel normalization.
        """
        norm = self.manifest.normalization
        if norm.channel_offset_adu is not None and norm.channel_scale_adu is not None:
            off = np.asarray(norm.channel_offset_adu, np.float32)[:, None, None]
            return off, np.asarray(norm.channel_scale_adu, np.float32)[:, None, None]
        if norm.kind == "affine":
            return norm.offset_adu, norm.scale_adu
        step = max(1, int(np.sqrt(image.size / 262144)))
        sub = image[..., ::step, ::step]
        lo, hi = np.percentile(sub, [norm.low_percentile, norm.high_percentile])
        return float(lo), float(max(hi - lo, 1e-6))

    def infer(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """``image``: (H, W) or (C, H, W) in camera units -> ``{output: (C', H, W) float32}``.

        Outputs flagged ``denormalize`` in the manifest come back in camera units.
        """
        img = np.asarray(image)
        if img.ndim == 2:
            img = img[None]
        want = self.manifest.inputs[0].n_channels
        if img.ndim != 3 or img.shape[0] != want:
            raise InvalidValue(
                f"engine {self.manifest.name!r} expects {want} channel(s) "
                f"{self.manifest.inputs[0].channels}, got array of shape {np.shape(image)}"
            )
        offset: float | np.ndarray
        scale: float | np.ndarray
        if self._pre is not None:
            offset, scale = 0.0, 1.0  # 'denormalize' is refused with 'preprocessing'
            x = self._pre(img)
        else:
            offset, scale = self.normalization_params(img)
            x = (img.astype(np.float32) - np.asarray(offset, np.float32)) / np.asarray(scale, np.float32)
        t = self.manifest.tile
        outs = run_tiled(
            self.backend.run,
            x,
            tile=t.size_px,
            overlap=t.overlap_px,
            multiple=t.multiple_px,
            max_batch=self.max_batch,
        )
        for spec in self.manifest.outputs:
            if spec.denormalize:
                outs[spec.name] = outs[spec.name] * np.asarray(scale, np.float32) + np.asarray(
                    offset, np.float32
                )
            if spec.name in self._post:
                outs[spec.name] = self._post[spec.name](outs[spec.name])
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in outs.items()}

    def reset(self) -> None:
        """Forget per-dataset statistics of the bundle's processing (a new data set)."""
        for proc in (self._pre, *self._post.values()):
            if proc is not None:
                proc.reset()

    def describe(self) -> str:
        m = self.manifest
        return f"{m.name} ({m.task} v{m.version}) via {self.backend.describe()}"

    def close(self) -> None:
        self.backend.close()
