"""Virtual staining inference with a trust signal — one path for training, the loop and bench.

:func:`predict` builds the generator's input from a label-free frame (and, for channel
completion, any acquired fluorescence channels), runs the engine under test-time
augmentation (TTA: the frame as is, mirrored left-right, up-down, and both; each
prediction mirrored back) and returns the mean prediction and the per-pixel standard
deviation across the augmentations: the **disagreement map**. A network that has learnt
the mapping predicts the same stain whichever way the cells are mirrored; on inputs
unlike its training data (defocus, other illumination) the predictions drift apart.

:func:`input_stats` summarizes the normalized label-free frame (mean, standard deviation,
and the fraction of its power in fine detail, which drops with defocus).
The bundle's ``calibration`` holds the held-out median/95th percentile of the
disagreement and the training spread of the input statistics; :func:`trust_values`
turns a frame's numbers into ratios and z-scores against them, so a controller or a
person can tell a prediction not to be believed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from smartscope.config.stages import STAIN_INPUT_SHIFT_MAX as DEFAULT_INPUT_SHIFT_MAX
from smartscope.config.stages import STAIN_TTA_MAX as TTA_MAX
from smartscope.engines.runtime import Engine
from smartscope.exceptions import InvalidValue

__all__ = [
    "INPUT_STATS",
    "TTA_MAX",
    "StainPrediction",
    "build_input",
    "input_stats",
    "is_trusted",
    "label_free_normalized",
    "label_free_planes",
    "normalized_target",
    "predict",
    "predict_with_trust",
    "trust_values",
]

INPUT_STATS = ("mean", "std", "detail")


@dataclass(frozen=True)
class StainPrediction:
    virtual: np.ndarray  # (C, H, W) float32, normalized target units
    disagreement: np.ndarray | None  # (C, H, W) float32 std across TTA, None when tta == 1
    channels: tuple[str, ...]


def label_free_planes(engine: Engine) -> int:
    """How many label-free inputs the bundle takes: the in-focus frame + extra planes."""
    return sum(1 for n in engine.manifest.inputs[0].channels if n.split("@")[0] == "label_free")


def build_input(
    engine: Engine, label_free: np.ndarray, given: Mapping[str, np.ndarray] | None = None
) -> np.ndarray:
    """The engine's input ``(C_in, H, W)`` in camera units: label-free, given channels, masks.

    ``label_free``: the in-focus frame ``(Y, X)``, or ``(P, Y, X)`` with the bundle's extra
    planes after it, in the bundle's order (``label_free@<dz>um`` inputs). Channels not
    given are zero (the generator gates them by their mask); masks are 0/1 with an
    identity normalization in the bundle.
    """
    names = engine.manifest.inputs[0].channels
    n_lf = label_free_planes(engine)
    lf = np.asarray(label_free, np.float32)
    if lf.ndim == 2:
        lf = lf[None]
    if lf.ndim != 3 or lf.shape[0] != n_lf:
        raise InvalidValue(
            f"label-free input must be (Y, X) or ({n_lf}, Y, X) for {engine.manifest.name!r} "
            f"(planes {names[:n_lf]}), got shape {np.shape(label_free)}"
        )
    given = dict(given or {})
    fl_names = [n for n in names[n_lf:] if not n.startswith("mask:")]
    unknown = sorted(set(given) - set(fl_names))
    if unknown:
        raise InvalidValue(f"given channels {unknown} are not inputs of {engine.manifest.name!r}: {fl_names}")
    x = np.zeros((len(names), *lf.shape[1:]), np.float32)
    x[:n_lf] = lf
    for i, n in enumerate(names):
        if n in given:
            g = np.asarray(given[n], np.float32)
            if g.shape != lf.shape[1:]:
                raise InvalidValue(f"given channel {n!r} has shape {g.shape}, label-free {lf.shape[1:]}")
            x[i] = g
        elif n.startswith("mask:") and n[5:] in given:
            x[i] = 1.0
    return x


_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def predict(
    engine: Engine,
    label_free: np.ndarray,
    given: Mapping[str, np.ndarray] | None = None,
    tta: int = TTA_MAX,
) -> StainPrediction:
    """Virtual channels (mean over ``tta`` mirrored copies) and their disagreement map."""
    if not 1 <= tta <= TTA_MAX:
        raise InvalidValue(f"tta={tta} must be 1..{TTA_MAX}")
    x = build_input(engine, label_free, given)
    out_name = engine.manifest.outputs[0].name
    preds = []
    for axes in _FLIPS[:tta]:
        xi = np.flip(x, axes) if axes else x
        yi = engine.infer(np.ascontiguousarray(xi))[out_name]
        preds.append(np.flip(yi, axes) if axes else yi)
    stack = np.stack(preds)
    mean = stack.mean(axis=0).astype(np.float32)
    dis = stack.std(axis=0).astype(np.float32) if tta > 1 else None
    return StainPrediction(mean, dis, tuple(engine.manifest.outputs[0].channels))


def input_stats(label_free_normalized: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and fine-detail power fraction of a normalized frame.

    ``detail``: the fraction of the frame's power (mean removed) at 0.04–0.16 cycles/px —
    structure a few pixels across, below the optical cutoff of the shipped training optics
    (NA 0.9, 550 nm, 100 nm pixels: 0.16 cycles/px), so it falls when the image blurs
    (defocus) and is not dominated by shot noise.
    """
    a = np.asarray(label_free_normalized, np.float64)
    step = max(1, int(np.sqrt(a.size / 262144)))
    a = a[::step, ::step]
    spec = np.abs(np.fft.rfft2(a - a.mean())) ** 2
    fr = np.hypot(np.fft.fftfreq(a.shape[0])[:, None], np.fft.rfftfreq(a.shape[1])[None, :]) / step
    band = (fr >= 0.04) & (fr < 0.16)
    total = float(spec.sum()) or 1.0
    return {"mean": float(a.mean()), "std": float(a.std()), "detail": float(spec[band].sum() / total)}


def label_free_normalized(engine: Engine, label_free: np.ndarray) -> np.ndarray:
    """The in-focus label-free frame in the network's units (the bundle's fixed map for
    channel 0); of a ``(P, Y, X)`` stack of planes, the first (in-focus) one."""
    norm = engine.manifest.normalization
    if norm.channel_offset_adu is None or norm.channel_scale_adu is None:
        raise InvalidValue(f"{engine.manifest.name!r}: a stain bundle needs per-channel normalization")
    lf = np.asarray(label_free, np.float32)
    lf = lf[0] if lf.ndim == 3 else lf
    return (lf - norm.channel_offset_adu[0]) / norm.channel_scale_adu[0]


def trust_values(
    pred: StainPrediction,
    stats: Mapping[str, float],
    calibration: Mapping[str, float],
) -> dict[str, float]:
    """Per-frame trust summary against the bundle's calibration.

    - ``disagreement``: mean of the disagreement map (normalized units);
    - ``disagreement_ratio``: that over the held-out median (≈ 1 on data like training);
    - ``input_z_<stat>``: z-score of each input statistic against the training fields;
    - ``input_shift``: the largest |z|.
    """
    out: dict[str, float] = {}
    if pred.disagreement is not None:
        d = float(pred.disagreement.mean())
        out["disagreement"] = d
        ref = calibration.get("disagreement_median")
        if ref:
            out["disagreement_ratio"] = d / ref
        for i, c in enumerate(pred.channels):
            out[f"disagreement:{c}"] = float(pred.disagreement[i].mean())
    zs = []
    for k in INPUT_STATS:
        mu, sd = calibration.get(f"input_{k}_mean"), calibration.get(f"input_{k}_sd")
        if mu is None or not sd:
            continue
        z = (float(stats[k]) - mu) / sd
        out[f"input_z_{k}"] = z
        zs.append(abs(z))
    if zs:
        out["input_shift"] = max(zs)
    return out


RATIO_MARGIN = 1.1


def ratio_limit(calibration: Mapping[str, float]) -> float:
    """Default disagreement-ratio limit: 1.1 × (held-out 95th percentile / median).

    Chosen from the bundle's own held-out fields, never from the data being judged.
    """
    med, p95 = calibration.get("disagreement_median"), calibration.get("disagreement_p95")
    if not med or not p95:
        return 1.5
    return RATIO_MARGIN * p95 / med


def is_trusted(
    values: Mapping[str, float],
    calibration: Mapping[str, float],
    ratio_max: float | None = None,
    shift_max: float = DEFAULT_INPUT_SHIFT_MAX,
) -> bool:
    """A frame's prediction is trusted when its disagreement ratio and input shift are in
    bounds (``ratio_max`` None: :func:`ratio_limit` of the bundle)."""
    limit = ratio_limit(calibration) if ratio_max is None else ratio_max
    return values.get("disagreement_ratio", 0.0) <= limit and values.get("input_shift", 0.0) <= shift_max


def predict_with_trust(
    engine: Engine,
    label_free: np.ndarray,
    given: Mapping[str, np.ndarray] | None = None,
    tta: int = TTA_MAX,
) -> tuple[StainPrediction, dict[str, float]]:
    """:func:`predict` and the frame's :func:`trust_values` against the bundle's calibration."""
    pred = predict(engine, label_free, given, tta)
    stats = input_stats(label_free_normalized(engine, label_free))
    return pred, trust_values(pred, stats, engine.manifest.calibration)


def normalized_target(
    calibration: Mapping[str, float], channels: list[str], target: np.ndarray
) -> np.ndarray:
    """Fluorescence ``(C, H, W)`` in the bundle's output units, with its stored target map."""
    out = [
        (target[k] - calibration[f"target_offset:{c}"]) / calibration[f"target_scale:{c}"]
        for k, c in enumerate(channels)
    ]
    return np.stack(out).astype(np.float32)
