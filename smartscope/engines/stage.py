"""An engine as a pipeline stage: frame in, output images + scalar values out.

Images land in ``StageOutput.images`` (saved beside the raw data by the loop) and
scalars in ``StageOutput.values`` (what controllers read). For restoration engines
(an output with ``denormalize`` and as many channels as the input, e.g. denoising) the
stage also reports a noise/SNR estimate of the raw frame:

- ``noise_adu``: 1.4826 x median absolute deviation of (raw - restored): the per-pixel
  noise the engine removed, robust to structure edges;
- ``background_adu``: 10th percentile of the restored frame;
- ``signal_adu``: 99th percentile of the restored frame minus the background;
- ``snr`` = signal_adu / noise_adu and ``snr_db`` = 20 log10(snr).

A multi-frame engine (``inputs[0].frames = K > 1``, e.g. a real-time denoiser that sees the
current frame and the K - 1 before it) gets the last K frames of the stream, oldest first;
until K frames have arrived the first one stands in for the missing ones. The history
starts over when the frame shape changes (a new ROI or binning).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import numpy as np

from smartscope.config.stages import EngineStageConfig
from smartscope.engines.runtime import Engine
from smartscope.exceptions import InvalidValue
from smartscope.frame import Frame
from smartscope.pipeline import StageError, StageOutput

__all__ = ["EngineStage", "snr_estimate"]


def snr_estimate(raw: np.ndarray, restored: np.ndarray) -> dict[str, float]:
    """Noise and SNR of ``raw`` judged against its restoration (both in camera units)."""
    step = max(1, int(math.sqrt(raw.size / 262144)))
    r = raw[..., ::step, ::step].astype(np.float32)
    d = restored[..., ::step, ::step].astype(np.float32)
    resid = r - d
    noise = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
    bg, top = (float(v) for v in np.percentile(d, [10, 99]))
    signal = top - bg
    noise = max(noise, 1e-6)
    snr = max(signal / noise, 1e-6)
    return {
        "noise_adu": noise,
        "background_adu": bg,
        "signal_adu": signal,
        "snr": snr,
        "snr_db": 20.0 * math.log10(snr),
    }


class EngineStage:
    """Implements :class:`smartscope.pipeline.Stage` for an engine bundle."""

    def __init__(self, config: EngineStageConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.name = config.name
        self.engine = engine or Engine.open(
            config.bundle,
            config.backend,
            device=config.device,
            precision=config.precision,
            max_batch=config.max_batch,
        )
        man = self.engine.manifest
        declared = [t.name for t in man.outputs]
        self.outputs = list(config.outputs) if config.outputs is not None else declared
        unknown = [o for o in self.outputs if o not in declared]
        if unknown:
            raise InvalidValue(
                f"stage {self.name!r} outputs: {unknown} not in the outputs {declared} of bundle "
                f"{config.bundle}"
            )
        spec = man.inputs[0]
        self._frames = spec.frames
        self._history: deque[np.ndarray] = deque(maxlen=spec.frames)
        per_frame = spec.n_channels // spec.frames
        self._restoration = [t.name for t in man.outputs if t.denormalize and t.n_channels == per_frame]

    @property
    def backend_description(self) -> str:
        return self.engine.describe()

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        raw = frame.image
        if raw.ndim != 2:
            raise StageError(f"stage {self.name!r}: expected a (Y, X) frame, got {raw.shape}")
        if self._frames > 1:
            if self._history and self._history[-1].shape != raw.shape:
                self._history.clear()
            self._history.append(raw)
            past = list(self._history)
            outs = self.engine.infer(np.stack([past[0]] * (self._frames - len(past)) + past))
        else:
            outs = self.engine.infer(raw)
        images: dict[str, np.ndarray] = {}
        values: dict[str, float] = {}
        for name in self.outputs:
            arr = outs[name]
            images[name] = arr[0] if arr.shape[0] == 1 else arr
            values[f"{name}_mean"] = float(arr.mean())
        if self.config.snr and self._restoration:
            restored = outs[self._restoration[0]][0]
            values.update(snr_estimate(raw, restored))
        return StageOutput(images=images, values=values)

    def close(self) -> None:
        self.engine.close()
