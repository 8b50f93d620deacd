"""Virtual staining as a live pipeline stage (``kind: stain``).

Each label-free frame becomes virtual fluorescence channels as it is acquired. With
``given`` set (channel completion), the newest acquired frame of each named fluorescence
channel — no older than ``max_given_age_frames`` — is handed to the generator too, and
only the other channels are predicted from scratch. The stage sees the frames the loop
analyses (the newest one each time); when analysis falls behind, a given channel can be
skipped, and ``max_given_age_frames`` keeps a stale one out.

Images (saved by the loop as OME-TIFF stacks in the run's ``outputs/``, channels named):

- ``<name>.channels``: the acquired label-free frame (ADU) followed by the virtual
  channels (normalized target units): the run's label-free data with its virtual
  stains as extra channels, frame by frame;
- ``<name>.disagreement``: the per-pixel disagreement map of each virtual channel.

Values (what controllers and the report read): ``disagreement``,
``disagreement_ratio`` (over the held-out median in the bundle), ``input_shift`` (largest
z-score of the input statistics against training), ``trusted`` (1 when both are under
their limits), ``given_channels`` (how many fluorescence channels were given) and
``virtual_mean:<channel>``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from smartscope.config.stages import StainStageConfig
from smartscope.engines.runtime import Engine
from smartscope.exceptions import InvalidValue
from smartscope.frame import Frame
from smartscope.models.stain.predict import (
    is_trusted,
    predict_with_trust,
    ratio_limit,
)
from smartscope.pipeline import StageError, StageOutput

__all__ = ["StainStage"]


class StainStage:
    """Implements :class:`smartscope.pipeline.Stage` for a virtual-staining bundle."""

    def __init__(self, config: StainStageConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.name = config.name
        self.engine = engine or Engine.open(config.bundle, config.backend, device=config.device)
        man = self.engine.manifest
        if man.task != "stain":
            raise InvalidValue(
                f"bundle: {config.bundle}: task is {man.task!r}, a stain stage needs a 'stain' bundle"
            )
        self.channels = list(man.outputs[0].channels)
        inputs = man.inputs[0].channels
        extra = [c for c in inputs if c.startswith("label_free@")]
        if extra:
            raise InvalidValue(
                f"{config.bundle}: {man.name!r} also takes label-free planes {extra}; the live stain "
                "stage feeds one in-focus frame per prediction (use the bundle offline: "
                "models.stain.predict with a (planes, Y, X) stack, bench/stain.py)"
            )
        bad = [c for c in config.given if c not in inputs]
        if bad:
            raise InvalidValue(
                f"given: {bad} are not fluorescence inputs of {man.name!r} "
                f"(inputs {inputs}; label-free-only bundles take none)"
            )
        self._latest: dict[str, tuple[int, np.ndarray]] = {}  # acquisition channel -> (index, image)
        self.calibration = dict(man.calibration)
        self.ratio_max = config.disagreement_ratio_max or ratio_limit(self.calibration)

    @property
    def backend_description(self) -> str:
        return self.engine.describe()

    def process(self, frame: Frame, upstream: Mapping[str, StageOutput]) -> StageOutput:
        cfg = self.config
        img = frame.image
        if img.ndim != 2:
            raise StageError(f"stage {self.name!r}: expected a (Y, X) frame, got {img.shape}")
        if cfg.label_free_channel and frame.channel != cfg.label_free_channel:
            if frame.channel in cfg.given.values():
                self._latest[frame.channel] = (frame.index, img)
            return StageOutput()  # a fluorescence frame: kept for completion, nothing to predict
        given = {}
        for bundle_ch, acq_ch in cfg.given.items():
            hit = self._latest.get(acq_ch)
            if (
                hit is not None
                and frame.index - hit[0] <= cfg.max_given_age_frames
                and hit[1].shape == img.shape
            ):
                given[bundle_ch] = hit[1]
        pred, values = predict_with_trust(self.engine, img, given, cfg.tta)
        values["trusted"] = float(is_trusted(values, self.calibration, self.ratio_max, cfg.input_shift_max))
        values["given_channels"] = float(len(given))
        for i, c in enumerate(self.channels):
            values[f"virtual_mean:{c}"] = float(pred.virtual[i].mean())
        images = {"channels": np.concatenate([img[None].astype(np.float32), pred.virtual])}
        names = {"channels": ["label_free_adu", *[f"virtual_{c}" for c in self.channels]]}
        if pred.disagreement is not None:
            images["disagreement"] = pred.disagreement
            names["disagreement"] = [f"disagreement_{c}" for c in self.channels]
        return StageOutput(images=images, values=values, channel_names=names)

    def close(self) -> None:
        self.engine.close()
