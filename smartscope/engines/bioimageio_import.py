"""bioimage.io model package -> verified smartscope engine bundle.

``import_bioimageio(MODEL.zip, OUT)`` reads the package with bioimageio.spec (no network:
remote references are not followed), maps what ``engine.json`` can express, refuses the
rest naming the field, writes the bundle, and only keeps it when the bundle, run through
smartscope's own runtime on the package's test input, reproduces the package's test output.

What maps:

* one input with axes ``batch, channel, y, x`` (``b, c, y, x`` in 0.4 packages); outputs
  the same, sized like the input (same scale, offset 0);
* weights: ``onnx`` as they are; ``torchscript`` exported to ONNX by torch (dynamic N/H/W)
  and checked against the TorchScript module; ``pytorch_state_dict`` only when its
  architecture imports here (then exported the same way);
* ``y``/``x`` sizes: ``min + n * step`` -> ``tile.multiple_px = step``; a fixed size
  (CAREamics writes its test image's size) -> tiles of that size;
* preprocessing (``ensure_dtype`` steps aside: the runtime works in float32): one fixed
  affine map (``fixed_zero_mean_unit_variance``, ``scale_linear``) or per-frame
  percentiles over all channels (``scale_range`` over ``y, x``) -> ``normalization``, as
  before; any other sequence of ``zero_mean_unit_variance`` (per sample, or per dataset
  with ``batch`` in its axes), ``fixed_zero_mean_unit_variance``, ``scale_range``,
  ``scale_linear``, ``clip``, ``binarize`` and ``sigmoid``, on their declared axes ->
  ``preprocessing``, the same operations (:mod:`smartscope.engines.processing`);
* postprocessing: nothing (output in network units), the inverse of the input's affine map
  -> ``denormalize``, else the same operations -> the output's ``postprocessing``.

Still refused, each naming its field: ``softmax``, ``scale_mean_variance``, custom
operations, ``clip`` by percentiles, ``scale_range`` against another tensor, values along
an axis other than ``channel``, axes other than ``batch, channel, y, x`` (3-D, time), and
more than one input.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.config.reading import ReadError, load_yaml, read_text
from smartscope.engines.bundle import MAX_FILE_BYTES, BundleError, check_zip, load_bundle, write_bundle
from smartscope.exceptions import UserError

__all__ = ["BioimageioImportError", "ImportReport", "import_bioimageio"]

_EPS = 1e-6  # bioimageio.core adds this to std in fixed_zero_mean_unit_variance
_TASKS = {
    "denoising": "denoise",
    "denoise": "denoise",
    "restoration": "denoise",
    "n2v": "denoise",
    "segmentation": "segment",
    "virtual-staining": "stain",
}


class BioimageioImportError(UserError, ValueError):
    """The package cannot become an engine bundle; the message names the field and why."""


MAX_DESCRIPTION_BYTES = 1 << 20  # rdf.yaml


def _check_package(src: Path) -> None:
    """Before bioimageio.spec reads anything: every file within its size (a zip's as its
    directory declares them), and the description's YAML within the bounds of
    :mod:`smartscope.config.reading` (aliases, nesting)."""
    try:
        if src.is_file() and zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as zf:
                check_zip(zf, str(src))
                for info in zf.infolist():
                    where = f"{src}!{info.filename}"
                    limit = MAX_DESCRIPTION_BYTES if info.filename.endswith(".yaml") else MAX_FILE_BYTES
                    if info.file_size > limit:
                        raise BundleError(f"{where}: {info.file_size} bytes; at most {limit} are read")
                    if info.filename.endswith(".yaml"):
                        load_yaml(zf.read(info).decode("utf-8", errors="replace"), where)
            return
        files = [f for f in src.rglob("*") if f.is_file()] if src.is_dir() else [src]
        for f in files:
            if f.suffix == ".yaml":
                load_yaml(read_text(f, MAX_DESCRIPTION_BYTES), str(f))
            elif f.stat().st_size > MAX_FILE_BYTES:
                raise BundleError(f"{f}: {f.stat().st_size} bytes; at most {MAX_FILE_BYTES} are read")
    except (ReadError, BundleError, zipfile.BadZipFile) as exc:
        raise BioimageioImportError(f"not a bioimage.io model package: {exc}") from None


@dataclass(frozen=True)
class ImportReport:
    """What became of the package: the bundle, the weights used and the verification."""

    bundle: Path
    weights: str
    max_abs_diff: float
    rtol: float
    atol: float
    notes: tuple[str, ...]


def _axis_kind(ax: Any) -> str:
    t = getattr(ax, "type", None) or getattr(ax, "implemented_type", "")
    return str(t)


def _check_axes(axes: Sequence[Any], where: str) -> None:
    kinds = [_axis_kind(a) for a in axes]
    ids = [str(a.id) for a in axes]
    if kinds != ["batch", "channel", "space", "space"] or ids[2:] != ["y", "x"]:
        raise BioimageioImportError(
            f"{where}.axes: {list(zip(ids, kinds, strict=True))} — smartscope engines take "
            "(batch, channel, y, x) images"
        )


def _affine(op: Any, n_channels: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A fixed op as ``x' = (x - offset) / scale`` per channel: (offset, scale)."""
    kw = op.kwargs
    op_id = str(op.id)

    def per_channel(v: Any) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(v, np.float64))
        if arr.size == 1:
            return np.repeat(arr, n_channels)
        if arr.size != n_channels or str(getattr(kw, "axis", "channel")) != "channel":
            raise BioimageioImportError(
                f"{where} ({op_id!r}): varies along {getattr(kw, 'axis', '?')!r} with {arr.size} "
                f"values; only per-channel values map ({n_channels} channels)"
            )
        return arr

    if op_id == "fixed_zero_mean_unit_variance":
        return per_channel(kw.mean), per_channel(kw.std) + _EPS
    if op_id == "scale_linear":
        gain, offset = per_channel(kw.gain), per_channel(kw.offset)
        if np.any(gain <= 0):
            raise BioimageioImportError(f"{where} ('scale_linear'): gain must be positive, got {gain}")
        return -offset / gain, 1.0 / gain
    raise BioimageioImportError(f"{where}: {op_id!r} is not a fixed affine map")


def _strip_dtype(ops: Sequence[Any]) -> list[tuple[int, Any]]:
    return [(i, op) for i, op in enumerate(ops) if str(op.id) != "ensure_dtype"]


def _normalization(inp: Any, n_channels: int) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """(engine.json normalization, affine offset, affine scale) from the input's preprocessing."""
    ops = _strip_dtype(inp.preprocessing)
    if not ops:
        return (
            {"kind": "affine", "offset_adu": 0.0, "scale_adu": 1.0},
            np.zeros(n_channels),
            np.ones(n_channels),
        )
    if len(ops) > 1:
        names = [str(op.id) for _, op in ops]
        raise BioimageioImportError(
            f"inputs[0].preprocessing: {names} — engine.json holds one normalization step"
        )
    i, op = ops[0]
    where = f"inputs[0].preprocessing[{i}]"
    op_id = str(op.id)
    if op_id in ("fixed_zero_mean_unit_variance", "scale_linear"):
        off, sc = _affine(op, n_channels, where)
        if np.allclose(off, off[0]) and np.allclose(sc, sc[0]):
            return {"kind": "affine", "offset_adu": float(off[0]), "scale_adu": float(sc[0])}, off, sc
        return (
            {"kind": "affine", "channel_offset_adu": off.tolist(), "channel_scale_adu": sc.tolist()},
            off,
            sc,
        )
    if op_id == "scale_range":
        kw = op.kwargs
        axes = {str(a) for a in (kw.axes or [])}
        ref = getattr(kw, "reference_tensor", None)
        if ref is not None and str(ref) != str(inp.id):
            raise BioimageioImportError(
                f"{where} ('scale_range'): reference_tensor {ref!r} is another tensor"
            )
        if not {"y", "x"} <= axes or "batch" in axes:
            raise BioimageioImportError(
                f"{where} ('scale_range'): percentiles over axes {sorted(axes)}; smartscope takes "
                "them over y and x of each frame"
            )
        if "channel" not in axes and n_channels > 1:
            raise BioimageioImportError(
                f"{where} ('scale_range'): per-channel percentiles of {n_channels} channels; "
                "smartscope takes one pair over all channels"
            )
        return (
            {
                "kind": "percentile",
                "low_percentile": float(kw.min_percentile),
                "high_percentile": float(kw.max_percentile),
            },
            None,
            None,
        )
    raise BioimageioImportError(
        f"{where}: {op_id!r} has no engine.json equivalent (a fixed affine map or per-frame "
        "percentiles over y, x)"
    )


PROCESSING_IDS = (
    "zero_mean_unit_variance",
    "fixed_zero_mean_unit_variance",
    "scale_range",
    "scale_linear",
    "clip",
    "binarize",
    "sigmoid",
)


_PER_CHANNEL = {
    "fixed_zero_mean_unit_variance": ("mean", "std"),
    "scale_linear": ("gain", "offset"),
    "binarize": ("threshold",),
}


def _values(v: Any, axis: Any, where: str, name: str) -> float | list[float]:
    """A scalar, or a list of values along ``channel``."""
    arr = np.asarray(v, np.float64)
    if arr.ndim == 0:
        return float(arr)
    if axis is not None and str(axis) != "channel":
        raise BioimageioImportError(
            f"{where}.kwargs.{name}: values along {str(axis)!r}; engine.json takes them along 'channel'"
        )
    return [float(a) for a in arr.ravel()]


def _op_axes(kw: Any, where: str) -> list[str]:
    axes = getattr(kw, "axes", None)
    if axes is None:  # bioimage.io: all axes, the batch included (per dataset)
        return ["batch", "channel", "y", "x"]
    names = [str(a) for a in axes]
    unknown = [a for a in names if a not in ("batch", "channel", "y", "x")]
    if unknown:
        raise BioimageioImportError(
            f"{where}.kwargs.axes: {unknown} are not axes of a (batch, channel, y, x) tensor"
        )
    return names


def _op(op: Any, tensor_id: str, where: str) -> dict[str, Any] | None:
    """One bioimage.io operation as an engine.json operation (None: ``ensure_dtype``)."""
    op_id, kw = str(op.id), op.kwargs
    if op_id == "ensure_dtype":
        return None
    if op_id == "zero_mean_unit_variance":
        return {"id": op_id, "axes": _op_axes(kw, where), "eps": float(kw.eps)}
    if op_id in _PER_CHANNEL:  # values, one or one per channel
        axis = getattr(kw, "axis", None)
        return {"id": op_id, **{k: _values(getattr(kw, k), axis, where, k) for k in _PER_CHANNEL[op_id]}}
    if op_id == "scale_range":
        ref = getattr(kw, "reference_tensor", None)
        if ref is not None and str(ref) != tensor_id:
            raise BioimageioImportError(f"{where}.kwargs.reference_tensor: {str(ref)!r} is another tensor")
        return {
            "id": op_id,
            "axes": _op_axes(kw, where),
            "min_percentile": float(kw.min_percentile),
            "max_percentile": float(kw.max_percentile),
            "eps": float(kw.eps),
        }
    if op_id == "clip":
        if getattr(kw, "min_percentile", None) is not None or getattr(kw, "max_percentile", None) is not None:
            raise BioimageioImportError(f"{where}: 'clip' by percentiles has no engine.json equivalent")
        return {"id": op_id, "min": kw.min, "max": kw.max}
    if op_id == "sigmoid":
        return {"id": op_id}
    raise BioimageioImportError(
        f"{where}: {op_id!r} has no engine.json equivalent (engine.json takes {', '.join(PROCESSING_IDS)})"
    )


def _ops(ops: Sequence[Any], tensor_id: str, where: str) -> list[dict[str, Any]]:
    mapped = (_op(op, tensor_id, f"{where}[{i}]") for i, op in enumerate(ops))
    return [m for m in mapped if m is not None]


def _input_processing(
    inp: Any, n_channels: int
) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """({"normalization": ...} or {"preprocessing": [...]}, affine offset, affine scale)."""
    try:
        norm, off, sc = _normalization(inp, n_channels)
        return {"normalization": norm}, off, sc
    except BioimageioImportError:
        return {"preprocessing": _ops(inp.preprocessing, str(inp.id), "inputs[0].preprocessing")}, None, None


def _output_processing(
    out: Any, k: int, n_channels: int, off: np.ndarray | None, sc: np.ndarray | None
) -> dict[str, Any]:
    """{"denormalize": True} for the inverse of the input's affine map, else the operations."""
    if off is not None and sc is not None:
        try:
            if _denormalize(out, k, n_channels, off, sc):
                return {"denormalize": True}
        except BioimageioImportError:
            pass
    return {"postprocessing": _ops(out.postprocessing, str(out.id), f"outputs[{k}].postprocessing")}


def _denormalize(out: Any, k: int, n_channels: int, off: np.ndarray | None, sc: np.ndarray | None) -> bool:
    """Whether output ``k``'s postprocessing is the inverse of the input's affine map."""
    ops = _strip_dtype(out.postprocessing)
    if not ops:
        return False
    where = f"outputs[{k}].postprocessing"
    if len(ops) > 1 or off is None or sc is None:
        raise BioimageioImportError(
            f"{where}: {[str(op.id) for _, op in ops]} — only the inverse of an affine input "
            "normalization (or nothing) maps"
        )
    i, op = ops[0]
    if str(op.id) not in ("fixed_zero_mean_unit_variance", "scale_linear"):
        raise BioimageioImportError(f"{where}[{i}]: {str(op.id)!r} has no engine.json equivalent")
    o_off, o_sc = _affine(op, n_channels, f"{where}[{i}]")
    # the op maps y -> (y - o_off) / o_sc; the inverse of the input map is y * sc + off
    gain, bias = 1.0 / o_sc, -o_off / o_sc
    if not (np.allclose(gain, sc, rtol=1e-4) and np.allclose(bias, off, rtol=1e-4, atol=1e-6 * np.abs(sc))):
        raise BioimageioImportError(
            f"{where}[{i}]: y * {gain.tolist()} + {bias.tolist()} is not the inverse of the "
            f"input normalization (x - {off.tolist()}) / {sc.tolist()}"
        )
    if n_channels > 1 and not (np.allclose(off, off[0]) and np.allclose(sc, sc[0])):
        raise BioimageioImportError(
            f"{where}[{i}]: denormalizing with per-channel values is not expressible in engine.json"
        )
    return True


def _tile(axes: Sequence[Any], notes: list[str]) -> dict[str, int]:
    sizes = [a.size for a in axes[2:]]
    if all(isinstance(s, int) for s in sizes):
        edge = int(min(sizes))
        mult = math.gcd(edge, 16)
        notes.append(
            f"fixed y/x sizes {sizes} -> {edge} px tiles; smaller frames are padded to a multiple of {mult}"
        )
        return {"size_px": edge, "overlap_px": min(32, edge // 4), "multiple_px": mult}
    steps = []
    for a, s in zip(axes[2:], sizes, strict=True):
        step = getattr(s, "step", None)
        if step is None:
            raise BioimageioImportError(
                f"inputs[0].axes.{a.id}.size: {s!r} is neither fixed nor min + n * step"
            )
        steps.append(int(step))
    mult = math.lcm(*steps)
    size = max(256 // mult * mult, mult * 2)
    return {"size_px": size, "overlap_px": min(64, size // 4), "multiple_px": mult}


def _onnx_weights(
    descr: Any, channels: int, in_name: str, out_names: list[str], hw: int
) -> tuple[bytes, str]:
    """ONNX bytes of the package's weights (converted from TorchScript when needed)."""
    from bioimageio.spec.utils import get_reader

    w = descr.weights
    if w.onnx is not None:
        return get_reader(w.onnx.source, sha256=w.onnx.sha256).read(), "onnx"
    module: Any
    if w.torchscript is not None:
        import io

        import torch

        data = get_reader(w.torchscript.source, sha256=w.torchscript.sha256).read()
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        kind = "torchscript"
    elif w.pytorch_state_dict is not None:
        arch = w.pytorch_state_dict.architecture
        try:
            from bioimageio.core.backends.pytorch_backend import load_torch_model

            module = load_torch_model(w.pytorch_state_dict, load_state=True)
        except (ImportError, ModuleNotFoundError) as exc:
            where = getattr(arch, "import_from", None) or getattr(arch, "source", "?")
            raise BioimageioImportError(
                f"weights.pytorch_state_dict: architecture {where}.{arch.callable} does not import "
                f"here ({exc}); install it, or give the package onnx or torchscript weights"
            ) from exc
        kind = "pytorch_state_dict"
    else:
        formats = [k for k, v in w.model_dump().items() if v is not None]
        raise BioimageioImportError(
            f"weights: {formats} — smartscope runs onnx, torchscript or pytorch_state_dict"
        )
    from smartscope.engines.export import export_onnx

    module.eval()
    return export_onnx(module, channels, input_name=in_name, output_names=out_names, example_hw=hw), kind


def _graph_names(onnx_bytes: bytes) -> tuple[str, list[str]]:
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    init = {i.name for i in model.graph.initializer}
    ins = [i.name for i in model.graph.input if i.name not in init]
    if len(ins) != 1:
        raise BioimageioImportError(f"weights.onnx: graph has inputs {ins}; smartscope engines take one")
    return ins[0], [o.name for o in model.graph.output]


def import_bioimageio(
    source: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> ImportReport:
    """Turn the bioimage.io package ``source`` (zip, folder or rdf.yaml) into a bundle at ``out``."""
    try:
        from bioimageio.spec import load_model_description
        from bioimageio.spec.model import v0_5
        from bioimageio.spec.utils import load_array
    except ImportError as exc:
        raise BioimageioImportError(
            "bioimage.io import needs the 'bioimageio' extra: pip install 'smartscope[bioimageio]'"
        ) from exc
    src = Path(source)
    if not src.exists():
        raise BioimageioImportError(f"{src}: no such file or folder")
    _check_package(src)
    try:
        descr: Any = load_model_description(src, perform_io_checks=False, format_version="latest")
    except (ValueError, OSError) as exc:
        raise BioimageioImportError(f"{src}: not a bioimage.io model package ({exc})") from exc
    if not isinstance(descr, v0_5.ModelDescr):
        detail = getattr(descr, "validation_summary", None)
        errs = [] if detail is None else [f"{e.loc}: {e.msg}" for d in detail.details for e in d.errors][:3]
        raise BioimageioImportError(
            f"{src}: not a valid bioimage.io model ({'; '.join(errs) or type(descr).__name__})"
        )
    if len(descr.inputs) != 1:
        raise BioimageioImportError(f"inputs: {len(descr.inputs)} tensors; smartscope engines take one")
    inp = descr.inputs[0]
    _check_axes(inp.axes, "inputs[0]")
    for k, o in enumerate(descr.outputs):
        _check_axes(o.axes, f"outputs[{k}]")
        for a, ia in zip(o.axes[2:], inp.axes[2:], strict=True):
            size = a.size
            ok = isinstance(size, v0_5.SizeReference) and size.offset == 0 and str(size.axis_id) == str(a.id)
            ok = ok or (isinstance(size, int) and isinstance(ia.size, int) and size == ia.size)
            if not ok or not math.isclose(a.scale, ia.scale):
                raise BioimageioImportError(
                    f"outputs[{k}].axes.{a.id}: size {size!r}, scale {a.scale}; smartscope outputs match "
                    "the input's size and scale"
                )
    chan_axis: Any = inp.axes[1]
    in_channels = [str(c) for c in chan_axis.channel_names]
    notes: list[str] = []
    processing, off, sc = _input_processing(inp, len(in_channels))
    tile = _tile(inp.axes, notes)
    x_test = np.asarray(load_array(inp.test_tensor), np.float32)
    hw = max(tile["multiple_px"] * 4, 64 // tile["multiple_px"] * tile["multiple_px"])
    onnx_bytes, kind = _onnx_weights(
        descr, len(in_channels), str(inp.id), [str(o.id) for o in descr.outputs], hw
    )
    in_name, out_names = _graph_names(onnx_bytes)
    if len(out_names) != len(descr.outputs):
        raise BioimageioImportError(
            f"weights: graph has {len(out_names)} outputs, rdf declares {len(descr.outputs)}"
        )
    outputs = []
    for k, (o, gname) in enumerate(zip(descr.outputs, out_names, strict=True)):
        out_axis: Any = o.axes[1]
        ch = [str(c) for c in out_axis.channel_names]
        outputs.append({"name": gname, "channels": ch, **_output_processing(o, k, len(ch), off, sc)})
    space = inp.axes[2]
    unit = str(getattr(space, "unit", "") or "")
    pixel_um = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3}.get(unit)
    tags = [str(t).lower() for t in (descr.tags or [])]
    task = next((_TASKS[t] for t in tags if t in _TASKS), "bioimageio")
    authors = ", ".join(a.name for a in descr.authors) or "unknown"
    cites = "; ".join(f"{c.text} ({c.doi or c.url})" for c in descr.cite)
    fields: dict[str, Any] = {
        "name": name or str(descr.name),
        "task": task,
        "version": str(descr.version or "0.1.0"),
        "inputs": [{"name": in_name, "channels": in_channels}],
        "outputs": outputs,
        **processing,
        "pixel_size_um": space.scale * pixel_um if pixel_um else None,
        "tile": tile,
        "provenance": {
            "command": f"smartscope engines import {src} --out {out}",
            "data": f"bioimage.io model {descr.name!r} ({descr.id or src.name}), license {descr.license}",
            "method": f"bioimage.io ({kind} weights)",
            "notes": f"authors: {authors}; cite: {cites}; " + "; ".join(notes),
        },
    }
    out_p = Path(out)
    write_bundle(out_p, fields, onnx_bytes)
    try:
        diff, rt, at = _verify(out_p, descr, x_test, rtol, atol)
    except BioimageioImportError:
        import shutil

        if out_p.is_dir():
            shutil.rmtree(out_p)
        else:
            out_p.unlink(missing_ok=True)
        raise
    return ImportReport(out_p, kind, diff, rt, at, tuple(notes))


def _verify(
    bundle: Path, descr: Any, x_test: np.ndarray, rtol: float | None, atol: float | None
) -> tuple[float, float, float]:
    """Run the bundle on the package's test input; compare with every test output."""
    from bioimageio.spec.utils import load_array

    from smartscope.engines.runtime import Engine

    # the package's own tolerance: reproducibility_tolerance (spec 0.5), else the older
    # config.bioimageio.test_kwargs (CAREamics writes those), else the spec's defaults
    bio = descr.config.bioimageio.model_dump()
    kw: dict[str, Any] = next(iter(bio.get("reproducibility_tolerance") or []), {})
    for v in (bio.get("test_kwargs") or {}).values():
        kw = v if isinstance(v, dict) and not kw else kw
    rt = rtol if rtol is not None else float(kw.get("relative_tolerance", 1e-3))
    at = atol if atol is not None else float(kw.get("absolute_tolerance", 1e-3))
    engine = Engine.open(bundle, "onnxruntime")
    try:
        man = load_bundle(bundle).manifest
        if x_test.ndim != 4 or x_test.shape[0] < 1:
            raise BioimageioImportError(f"inputs[0].test_tensor: shape {x_test.shape}, expected (b, c, y, x)")
        got = engine.infer(x_test[0])
    finally:
        engine.close()
    worst = 0.0
    for o, spec in zip(descr.outputs, man.outputs, strict=True):
        expected = np.asarray(load_array(o.test_tensor), np.float32)[0]
        y = got[spec.name]
        if y.shape != expected.shape:
            raise BioimageioImportError(
                f"verification: output {spec.name!r} has shape {y.shape}, "
                f"the package's test output {expected.shape}"
            )
        err = np.abs(y - expected)
        allowed = at + rt * np.abs(expected)
        if np.any(err > allowed):
            i = np.unravel_index(int(np.argmax(err - allowed)), err.shape)
            raise BioimageioImportError(
                f"verification: output {spec.name!r} differs from the package's test output by "
                f"{float(err[i]):.3g} at {tuple(int(v) for v in i)} (allowed {float(allowed[i]):.3g}: "
                f"atol {at:g} + rtol {rt:g})"
            )
        worst = max(worst, float(err.max()))
    return worst, rt, at
