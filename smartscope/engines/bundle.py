"""Engine bundles: ``model.onnx`` + ``engine.json`` (+ ``weights.npz``), as a folder or zip.

``engine.json`` is an :class:`EngineManifest`. :func:`load_bundle` validates the manifest,
checks the sha256 of every file it names, and checks that the ONNX graph's inputs and
outputs match the declared tensor specs. Nothing in loading unpickles: the manifest is
JSON, the graph is protobuf, and the optional weights (used by the torch backend to
rebuild the network from ``models/``) are an ``.npz`` read with ``allow_pickle=False``.
Nothing is read before its size is known to be within bounds: a file's size on disk, a zip
member's declared size (a zip's reader stops there), at most :data:`MAX_FILE_BYTES` each and
:data:`MAX_MANIFEST_BYTES` for ``engine.json``, whose nesting is bounded too.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from smartscope.base_model import FrozenModel
from smartscope.config.reading import ReadError, load_json
from smartscope.exceptions import InvalidValue, UserError

__all__ = [
    "MANIFEST_NAME",
    "MAX_FILE_BYTES",
    "Architecture",
    "Bundle",
    "BundleError",
    "EngineManifest",
    "Normalization",
    "ProcessingOp",
    "Provenance",
    "TensorSpec",
    "TileSpec",
    "check_zip",
    "find_bundles",
    "load_bundle",
    "portable_command",
    "sha256_bytes",
    "write_bundle",
]

MANIFEST_NAME = "engine.json"
SCHEMA_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 2 << 30  # protobuf's own limit for one ONNX model; weights alike
MAX_ARCHIVE_BYTES = 8 << 30  # every member of a zip together, as its directory declares them


class BundleError(UserError, ValueError):
    """A bundle is missing a file, fails validation, or was tampered with."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Frozen(FrozenModel):
    """The manifest's parts: the project's frozen base, but a metric measured as NaN (or a
    bundle written before NaN was refused) still loads."""

    model_config = ConfigDict(allow_inf_nan=True)


AxisName = Literal["batch", "channel", "y", "x"]
PerChannel = float | list[float]  # one value, or one per channel (along ``axis: channel``)


class _Op(_Frozen):
    """One bioimage.io processing step (spec 0.5 names and arithmetic, as bioimageio.core
    computes it), on a ``(batch, channel, y, x)`` tensor. Statistics are taken over
    ``axes``: without ``batch``, of each frame (per sample); with it, of every frame so far
    (per dataset, updated with each frame, as bioimageio.core does without initial
    dataset statistics)."""


class ZeroMeanUnitVariance(_Op):
    """``(x - mean) / (std + eps)``, mean and s.d. over ``axes``."""

    id: Literal["zero_mean_unit_variance"] = "zero_mean_unit_variance"
    axes: tuple[AxisName, ...] = ("channel", "y", "x")
    eps: float = Field(default=1e-6, gt=0)


class FixedZeroMeanUnitVariance(_Op):
    """``(x - mean) / (std + eps)`` with given values (per channel when lists)."""

    id: Literal["fixed_zero_mean_unit_variance"] = "fixed_zero_mean_unit_variance"
    mean: PerChannel
    std: PerChannel
    eps: float = Field(default=1e-6, gt=0)


class ScaleRange(_Op):
    """``(x - p_min) / (p_max - p_min + eps)``, percentiles over ``axes`` (linear interpolation)."""

    id: Literal["scale_range"] = "scale_range"
    axes: tuple[AxisName, ...] = ("channel", "y", "x")
    min_percentile: float = Field(default=0.0, ge=0, lt=100)
    max_percentile: float = Field(default=100.0, gt=0, le=100)
    eps: float = Field(default=1e-6, gt=0)


class ScaleLinear(_Op):
    """``x * gain + offset`` (per channel when lists)."""

    id: Literal["scale_linear"] = "scale_linear"
    gain: PerChannel = 1.0
    offset: PerChannel = 0.0


class Clip(_Op):
    """``x`` clipped to ``[min, max]`` (either may be left out)."""

    id: Literal["clip"] = "clip"
    min: float | None = None
    max: float | None = None


class Binarize(_Op):
    """``1.0`` where ``x > threshold`` else ``0.0`` (per channel when a list)."""

    id: Literal["binarize"] = "binarize"
    threshold: PerChannel


class Sigmoid(_Op):
    """``1 / (1 + exp(-x))``."""

    id: Literal["sigmoid"] = "sigmoid"


ProcessingOp = Annotated[
    ZeroMeanUnitVariance | FixedZeroMeanUnitVariance | ScaleRange | ScaleLinear | Clip | Binarize | Sigmoid,
    Field(discriminator="id"),
]


def _check_ops(ops: list[Any], n_channels: int, where: str) -> None:
    """Per-channel values fit the tensor; percentiles and clip bounds are in order."""
    for k, op in enumerate(ops):
        for name in ("mean", "std", "gain", "offset", "threshold"):
            v = getattr(op, name, None)
            if isinstance(v, list) and len(v) not in (1, n_channels):
                raise InvalidValue(f"{where}[{k}].{name}: {len(v)} values for {n_channels} channels")
        if isinstance(op, ScaleRange) and op.min_percentile >= op.max_percentile:
            raise InvalidValue(f"{where}[{k}]: min_percentile must be below max_percentile")
        if isinstance(op, Clip) and (op.min is None and op.max is None):
            raise InvalidValue(f"{where}[{k}]: clip needs min or max")
        if isinstance(op, Clip) and op.min is not None and op.max is not None and op.min >= op.max:
            raise InvalidValue(f"{where}[{k}]: clip min must be below max")
        if isinstance(op, (ZeroMeanUnitVariance, ScaleRange)) and not {"y", "x"} & set(op.axes):
            raise InvalidValue(f"{where}[{k}].axes: {list(op.axes)} reduce neither y nor x")


class TensorSpec(_Frozen):
    """One network input or output, ``(N, C, H, W)`` with named channels."""

    name: str = Field(min_length=1)
    channels: list[str] = Field(min_length=1, description="one name per channel, in order")
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    denormalize: bool = Field(
        default=False,
        description="map this output back to camera units with the input normalization",
    )
    postprocessing: list[ProcessingOp] = Field(
        default_factory=list, description="outputs: bioimage.io operations applied after the network"
    )
    frames: int = Field(
        default=1,
        ge=1,
        description="consecutive camera frames this input spans (channels frame-major, oldest "
        "first; a live stage stacks the current frame with the ones before it)",
    )

    @model_validator(mode="after")
    def _frames_divide(self) -> TensorSpec:
        if len(self.channels) % self.frames:
            raise InvalidValue(f"{len(self.channels)} channels do not split into {self.frames} frames")
        return self

    @property
    def n_channels(self) -> int:
        return len(self.channels)


class Normalization(_Frozen):
    """How a uint16 frame becomes the network's float input.

    ``affine``: ``x = (adu - offset_adu) / scale_adu`` (fixed, from the training data);
    with ``channel_offset_adu``/``channel_scale_adu`` each input channel has its own fixed
    map (multi-channel inputs such as label-free + fluorescence + masks).
    ``percentile``: per frame, ``x = (adu - p_low) / (p_high - p_low)``.
    Outputs flagged ``denormalize`` are mapped back with the inverse of the same map.
    """

    kind: Literal["affine", "percentile"] = "affine"
    offset_adu: float = 0.0
    scale_adu: float = Field(default=1.0, gt=0)
    low_percentile: float = Field(default=1.0, ge=0, lt=100)
    high_percentile: float = Field(default=99.8, gt=0, le=100)
    channel_offset_adu: list[float] | None = Field(default=None, description="per input channel")
    channel_scale_adu: list[float] | None = Field(default=None, description="per input channel, > 0")

    @model_validator(mode="after")
    def _order(self) -> Normalization:
        if self.low_percentile >= self.high_percentile:
            raise InvalidValue("low_percentile must be below high_percentile")
        per = (self.channel_offset_adu, self.channel_scale_adu)
        if (per[0] is None) != (per[1] is None):
            raise InvalidValue("channel_offset_adu and channel_scale_adu go together")
        if per[0] is not None and per[1] is not None:
            if self.kind != "affine":
                raise InvalidValue("per-channel normalization needs kind 'affine'")
            if len(per[0]) != len(per[1]):
                raise InvalidValue("channel_offset_adu and channel_scale_adu differ in length")
            if any(not v > 0 for v in per[1]):
                raise InvalidValue("channel_scale_adu must all be > 0")
        return self

    @property
    def per_channel(self) -> bool:
        return self.channel_offset_adu is not None


class TileSpec(_Frozen):
    size_px: int = Field(default=256, ge=8, description="square tile edge fed to the engine")
    overlap_px: int = Field(default=32, ge=0, description="overlap between neighbouring tiles")
    multiple_px: int = Field(default=1, ge=1, description="H and W must be multiples of this")

    @model_validator(mode="after")
    def _fits(self) -> TileSpec:
        if self.overlap_px * 2 >= self.size_px:
            raise InvalidValue("overlap_px must be less than half of size_px")
        if self.size_px % self.multiple_px:
            raise InvalidValue("size_px must be a multiple of multiple_px")
        return self


class Architecture(_Frozen):
    """The network in :mod:`smartscope.engines.networks` that the torch backend rebuilds."""

    name: str = Field(description="key in smartscope.engines.networks.NETWORKS, e.g. 'unet2d'")
    params: dict[str, Any] = Field(default_factory=dict)
    weights_file: str = "weights.npz"
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Provenance(_Frozen):
    command: str = Field(description="the exact command that produced the bundle")
    data: str = Field(description="training data: a folder, or the simulator scenario")
    seed: int | None = None
    method: str = ""
    train_fovs: list[str] = Field(default_factory=list)
    heldout_fovs: list[str] = Field(default_factory=list)
    created_utc: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    software: dict[str, str] = Field(default_factory=dict)
    notes: str = ""


class EngineManifest(_Frozen):
    schema_version: Literal[1] = 1
    name: str = Field(min_length=1)
    task: str = Field(min_length=1, description="denoise, stain, smlm, events, aberration ...")
    version: str = "0.1.0"
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    normalization: Normalization = Field(default_factory=lambda: Normalization())
    preprocessing: list[ProcessingOp] | None = Field(
        default=None,
        description="bioimage.io operations from camera units to the network's input, in order; "
        "replaces 'normalization' (which must then be left out)",
    )
    pixel_size_um: float | None = Field(default=None, gt=0)
    tile: TileSpec = Field(default_factory=lambda: TileSpec())
    onnx_file: str = "model.onnx"
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int | None = None
    architecture: Architecture | None = None
    provenance: Provenance
    metrics: dict[str, float] = Field(
        default_factory=dict, description="held-out metrics, e.g. psnr_db, ssim"
    )
    calibration: dict[str, float] = Field(
        default_factory=dict,
        description="reference statistics measured at training time that stages use to judge "
        "live inputs and outputs (e.g. target scales, held-out disagreement for a trust signal)",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> EngineManifest:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise InvalidValue(f"tensor names must be unique, got {names}")
        norm = self.normalization
        if self.preprocessing is not None:
            if norm != Normalization():
                raise InvalidValue("give 'preprocessing' or 'normalization', not both")
            if any(t.denormalize for t in self.outputs):
                raise InvalidValue(
                    "'denormalize' needs 'normalization'; with 'preprocessing' use postprocessing"
                )
            _check_ops(self.preprocessing, self.inputs[0].n_channels, "preprocessing")
        for k, t in enumerate(self.outputs):
            _check_ops(t.postprocessing, t.n_channels, f"outputs[{k}].postprocessing")
        if self.inputs[0].postprocessing:
            raise InvalidValue("inputs[0].postprocessing: inputs take 'preprocessing'")
        if norm.channel_offset_adu is not None:
            if len(norm.channel_offset_adu) != self.inputs[0].n_channels:
                raise InvalidValue(
                    f"normalization has {len(norm.channel_offset_adu)} channel maps for "
                    f"{self.inputs[0].n_channels} input channels"
                )
            if any(t.denormalize for t in self.outputs):
                raise InvalidValue("outputs cannot 'denormalize' with per-channel input normalization")
        for fname in (
            self.onnx_file,
            *([self.architecture.weights_file] if self.architecture else []),
        ):
            p = PurePosixPath(fname)
            if p.is_absolute() or ".." in p.parts or len(p.parts) != 1:
                raise InvalidValue(f"bundle file names must be plain names, got {fname!r}")
        return self

    def output(self, name: str) -> TensorSpec:
        for t in self.outputs:
            if t.name == name:
                return t
        raise KeyError(f"engine {self.name!r} has no output {name!r}; has {[t.name for t in self.outputs]}")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle held in memory (the files are small)."""

    source: str
    manifest: EngineManifest
    onnx_bytes: bytes
    weights_bytes: bytes | None

    @property
    def onnx_sha256(self) -> str:
        return self.manifest.onnx_sha256


def portable_command(command: str, cwd: Path | None = None) -> str:
    """A recorded command with no absolute path of the machine that ran it.

    A path inside the working folder becomes relative to it; any other absolute path
    becomes its file name, and an existing file's sha256 is recorded after the command
    (``# sha256: name=...``), so the record still says exactly which file it was.
    """
    import os
    import shlex

    try:
        args = shlex.split(command, comments=False)
    except ValueError:  # not a shell command line: kept as it is
        return command
    here = (cwd or Path.cwd()).resolve()
    hashes: dict[str, str] = {}

    def portable(arg: str) -> str:
        if not os.path.isabs(arg):
            return arg
        path = Path(arg)
        try:
            rel = path.resolve().relative_to(here)
            return str(PurePosixPath(*rel.parts)) if rel.parts else "."
        except (ValueError, OSError):
            pass
        if path.is_file():
            hashes[path.name] = sha256_bytes(path.read_bytes())
        return path.name or arg

    out = []
    for arg in args:
        opt, eq, value = arg.partition("=")
        out.append(f"{opt}={portable(value)}" if eq and opt.startswith("-") else portable(arg))
    text = shlex.join(out)
    if hashes:
        text += "  # sha256: " + ", ".join(f"{k}={v}" for k, v in hashes.items())
    return text


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"field {loc!r}: {err['msg']}")
    return "; ".join(parts)


class _Reader:
    """Reads named files from a bundle folder or zip (members at the root or in one folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_dir():
            return
        if not path.exists():
            raise BundleError(f"{path}: bundle not found")
        if not zipfile.is_zipfile(path):
            raise BundleError(f"{path}: not a bundle folder or zip archive")
        self._zip = zipfile.ZipFile(path)
        check_zip(self._zip, str(path))
        names = self._zip.namelist()
        if MANIFEST_NAME not in names:
            nested = [n for n in names if PurePosixPath(n).name == MANIFEST_NAME]
            if len(nested) == 1 and len(PurePosixPath(nested[0]).parts) == 2:
                self._prefix = str(PurePosixPath(nested[0]).parent) + "/"

    def describe(self, name: str) -> str:
        return f"{self.path}/{name}" if self._zip is None else f"{self.path}!{self._prefix}{name}"

    def read(self, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        """A file of the bundle, refused before reading when larger than ``max_bytes``."""
        if self._zip is None:
            f = self.path / name
            if not f.is_file():
                raise BundleError(f"{self.describe(name)}: missing file in bundle")
            _within(f.stat().st_size, max_bytes, self.describe(name))
            return f.read_bytes()
        try:
            info = self._zip.getinfo(self._prefix + name)
        except KeyError:
            raise BundleError(f"{self.describe(name)}: missing file in bundle") from None
        _within(info.file_size, max_bytes, self.describe(name))  # the reader stops at this size
        return self._zip.read(info)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _within(size: int, max_bytes: int, where: str) -> None:
    if size > max_bytes:
        raise BundleError(f"{where}: {size} bytes; at most {max_bytes} are read")


def check_zip(zf: zipfile.ZipFile, where: str, max_total: int = MAX_ARCHIVE_BYTES) -> None:
    """A zip whose members, as its directory declares them, are more than ``max_total``
    bytes together is refused before any is read (a zip bomb)."""
    total = sum(info.file_size for info in zf.infolist())
    if total > max_total:
        raise BundleError(f"{where}: its members unpack to {total} bytes; at most {max_total} are read")


def _check_onnx(data: bytes, manifest: EngineManifest, where: str) -> None:
    import onnx

    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise BundleError(f"{where}: not a valid ONNX model ({exc})") from exc
    init_names = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name: i for i in model.graph.input if i.name not in init_names}
    graph_outputs = {o.name: o for o in model.graph.output}
    for kind, specs, graph in (
        ("input", manifest.inputs, graph_inputs),
        ("output", manifest.outputs, graph_outputs),
    ):
        declared = [s.name for s in specs]
        if sorted(declared) != sorted(graph):
            raise BundleError(
                f"{where}: ONNX graph {kind}s {sorted(graph)} do not match engine.json {kind}s {declared}"
            )
        for spec in specs:
            ttype = graph[spec.name].type.tensor_type
            if ttype.elem_type != onnx.TensorProto.FLOAT:
                raise BundleError(
                    f"{where}: {kind} {spec.name!r} has ONNX elem_type {ttype.elem_type}, "
                    "engine.json declares float32"
                )
            dims = ttype.shape.dim
            if len(dims) != 4:
                raise BundleError(f"{where}: {kind} {spec.name!r} is not 4-D NCHW")
            c = dims[1]
            if c.HasField("dim_value") and c.dim_value != spec.n_channels:
                raise BundleError(
                    f"{where}: {kind} {spec.name!r} has {c.dim_value} channels in the graph, "
                    f"engine.json declares {spec.n_channels} ({spec.channels})"
                )


def _check_weights(data: bytes, where: str) -> None:
    """The weights must be a plain numeric .npz: opened with ``allow_pickle=False``."""
    import io

    import numpy as np

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            for key in npz.files:
                arr = npz[key]
                if arr.dtype.kind not in "fiub":
                    raise BundleError(f"{where}: array {key!r} has non-numeric dtype {arr.dtype}")
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"{where}: not a plain numeric .npz archive ({exc})") from exc


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle folder or zip; raises :class:`BundleError` naming the problem."""
    p = Path(path)
    reader = _Reader(p)
    try:
        raw = reader.read(MANIFEST_NAME, MAX_MANIFEST_BYTES)
        where = reader.describe(MANIFEST_NAME)
        try:
            doc = load_json(raw, where, MAX_MANIFEST_BYTES)  # its nesting bounded too
        except ReadError as exc:
            raise BundleError(str(exc)) from None
        try:
            manifest = EngineManifest.model_validate(doc)
        except ValidationError as exc:
            raise BundleError(f"{where}: {_format_validation(exc)}") from exc
        onnx_bytes = reader.read(manifest.onnx_file)
        got = sha256_bytes(onnx_bytes)
        if got != manifest.onnx_sha256:
            raise BundleError(
                f"{reader.describe(manifest.onnx_file)}: sha256 {got} does not match "
                f"engine.json onnx_sha256 {manifest.onnx_sha256} (file modified or swapped)"
            )
        _check_onnx(onnx_bytes, manifest, reader.describe(manifest.onnx_file))
        weights: bytes | None = None
        if manifest.architecture is not None:
            arch = manifest.architecture
            weights = reader.read(arch.weights_file)
            got = sha256_bytes(weights)
            if got != arch.weights_sha256:
                raise BundleError(
                    f"{reader.describe(arch.weights_file)}: sha256 {got} does not match "
                    f"engine.json architecture.weights_sha256 {arch.weights_sha256}"
                )
            _check_weights(weights, reader.describe(arch.weights_file))
        return Bundle(source=str(p), manifest=manifest, onnx_bytes=onnx_bytes, weights_bytes=weights)
    finally:
        reader.close()


def write_bundle(
    out: str | Path,
    manifest_fields: dict[str, Any],
    onnx_bytes: bytes,
    weights_bytes: bytes | None = None,
    *,
    as_zip: bool = False,
) -> Path:
    """Write a bundle (folder, or zip when ``as_zip`` / ``out`` ends in .zip); sha256s filled
    in, the provenance command made portable (:func:`portable_command`).

    ``manifest_fields`` are the :class:`EngineManifest` fields except ``onnx_sha256`` (and
    ``architecture.weights_sha256``), which are computed here.
    """
    fields = dict(manifest_fields)
    fields["onnx_sha256"] = sha256_bytes(onnx_bytes)
    prov = fields.get("provenance")
    if prov is not None:  # no absolute path of this machine goes into the bundle
        prov = dict(prov.model_dump() if isinstance(prov, BaseModel) else prov)
        prov["command"] = portable_command(str(prov.get("command", "")))
        fields["provenance"] = prov
    arch = fields.get("architecture")
    if arch is not None:
        if weights_bytes is None:
            raise BundleError("architecture given without weights_bytes")
        arch = dict(arch.model_dump() if isinstance(arch, BaseModel) else arch)
        arch["weights_sha256"] = sha256_bytes(weights_bytes)
        fields["architecture"] = arch
    manifest = EngineManifest.model_validate(fields)
    files: dict[str, bytes] = {
        MANIFEST_NAME: (manifest.model_dump_json(indent=2) + "\n").encode(),
        manifest.onnx_file: onnx_bytes,
    }
    if manifest.architecture is not None and weights_bytes is not None:
        files[manifest.architecture.weights_file] = weights_bytes
    out_p = Path(out)
    if as_zip or out_p.suffix == ".zip":
        out_p.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out_p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        out_p.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (out_p / name).write_bytes(data)
    load_bundle(out_p)  # never hand back a bundle that does not verify
    return out_p


def find_bundles(root: str | Path) -> list[Path]:
    """Bundle folders and zips under ``root`` (a bundle itself counts)."""
    r = Path(root)
    if (r / MANIFEST_NAME).is_file() or (r.is_file() and r.suffix == ".zip"):
        return [r]
    found = {p.parent for p in r.rglob(MANIFEST_NAME)}
    for z in r.rglob("*.zip"):
        try:
            with zipfile.ZipFile(z) as zf:
                if any(PurePosixPath(n).name == MANIFEST_NAME for n in zf.namelist()):
                    found.add(z)
        except zipfile.BadZipFile:
            continue
    return sorted(found)
