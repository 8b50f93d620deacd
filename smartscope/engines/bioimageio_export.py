"""Engine bundle -> bioimage.io model package (spec 0.5), for Fiji, ilastik, QuPath, CAREamics.

What maps, and how (``engine.json`` -> ``rdf.yaml``):

* weights: the bundle's verified ``model.onnx`` as ``onnx`` weights (opset from the bundle);
* axes: ``batch, channel, y, x``; channel names from the tensor spec; ``y``/``x`` sizes are
  ``min + n * step`` with ``step = tile.multiple_px``; outputs take the input's size; both
  carry ``pixel_size_um`` as their scale in micrometers when the bundle knows it;
* input normalization: ``affine`` -> ``fixed_zero_mean_unit_variance`` (mean = offset,
  std = scale; per channel along ``channel``); ``percentile`` -> ``scale_range`` over
  ``channel, y, x`` of each sample (the same statistics the runtime takes per frame);
* ``preprocessing`` and outputs' ``postprocessing`` (bioimage.io operations in
  ``engine.json``) as the same operations;
* outputs flagged ``denormalize``: with an ``affine`` input map, ``scale_linear`` (gain =
  scale, offset = offset) brings them back to camera units; with ``percentile`` the inverse
  needs the input's percentiles, which no standard bioimage.io operation provides, so the
  output stays in normalized units and its description says so;
* provenance: the training command, data, seed and held-out metrics go into the
  documentation (README.md), ``config.smartscope`` and the ``engine.json`` attachment;
  citations follow the training method.

The test input is a held-out field the caller gives (``--test-input``, or one the training
family re-creates from the bundle's provenance: :func:`smartscope.models.heldout_input`).
The test output is the ONNX
graph run with ONNX Runtime on that whole input with exactly the package's processing, so
``bioimageio test`` compares like with like. Nothing here touches the network: the package
is validated and tested with ``perform_io_checks`` off for remote references (there are
none: citations are DOIs, every file is local).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.engines.bundle import (
    Binarize,
    Bundle,
    Clip,
    EngineManifest,
    FixedZeroMeanUnitVariance,
    ScaleLinear,
    ScaleRange,
    Sigmoid,
    TensorSpec,
    ZeroMeanUnitVariance,
    load_bundle,
    portable_command,
)
from smartscope.engines.processing import Processor
from smartscope.exceptions import UserError

__all__ = [
    "CITATIONS",
    "BioimageioExportError",
    "PackageAuthor",
    "export_bioimageio",
]

CITATIONS: dict[str, tuple[str, str]] = {
    "n2v": (
        "Krull, Buchholz & Jug: Noise2Void - learning denoising from single noisy images. CVPR 2019",
        "10.1109/CVPR.2019.00223",
    ),
    "care": (
        "Weigert et al.: Content-aware image restoration. Nature Methods 2018",
        "10.1038/s41592-018-0216-7",
    ),
    "pix2pix": (
        "Isola et al.: Image-to-image translation with conditional adversarial networks. CVPR 2017",
        "10.1109/CVPR.2017.632",
    ),
    "decode": (
        "Speiser et al.: Deep learning enables fast and dense single-molecule localization "
        "with high accuracy. Nature Methods 2021",
        "10.1038/s41592-021-01236-x",
    ),
    "unet": (
        "Ronneberger, Fischer & Brox: U-Net: convolutional networks for biomedical image "
        "segmentation. MICCAI 2015",
        "10.1007/978-3-319-24574-4_28",
    ),
}
"""Method -> (citation text, DOI); every package also cites the U-Net."""

_METHOD_CITES = {"n2v": "n2v", "care": "care", "pix2pix": "pix2pix", "l1": "pix2pix", "decode": "decode"}
_EPS = 1e-6  # bioimageio.core's eps in scale_range / fixed_zero_mean_unit_variance


class BioimageioExportError(UserError, ValueError):
    """The bundle cannot be written as a bioimage.io package; the message says why."""


@dataclass(frozen=True)
class PackageAuthor:
    """An author of the package; the Model Zoo asks for a GitHub user name."""

    name: str
    github_user: str | None = None


@dataclass(frozen=True)
class _Processing:
    """Pre/post-processing in numpy, the same arithmetic bioimageio.core performs."""

    manifest: EngineManifest

    def normalize(self, x: np.ndarray) -> tuple[np.ndarray, Any, Any]:
        """``x`` (C, H, W) float32 -> (network input, offset, scale)."""
        if self.manifest.preprocessing is not None:
            return Processor(self.manifest.preprocessing)(x), 0.0, 1.0
        norm = self.manifest.normalization
        if norm.channel_offset_adu is not None and norm.channel_scale_adu is not None:
            off = np.asarray(norm.channel_offset_adu, np.float32)[:, None, None]
            sc = np.asarray(norm.channel_scale_adu, np.float32)[:, None, None]
            return (x - off) / (sc + _EPS), off, sc
        if norm.kind == "affine":
            return (x - norm.offset_adu) / (norm.scale_adu + _EPS), norm.offset_adu, norm.scale_adu
        lo, hi = np.percentile(x, [norm.low_percentile, norm.high_percentile])
        return (x - lo) / (hi - lo + _EPS), float(lo), float(hi - lo)

    def denormalizes(self, name: str) -> bool:
        """Whether the package maps output ``name`` back to camera units."""
        return self.manifest.output(name).denormalize and self.manifest.normalization.kind == "affine"


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BioimageioExportError(f"--test-input: {path} does not exist")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    import tifffile

    return np.asarray(tifffile.imread(path))


def _fit_input(x: np.ndarray, manifest: EngineManifest, max_px: int) -> np.ndarray:
    """(C, H, W) float32, H and W cropped to multiples of the bundle's ``multiple_px``."""
    want = manifest.inputs[0].n_channels
    a = np.asarray(x, np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] != want:
        takes = "(H, W) or (1, H, W)" if want == 1 else f"({want}, H, W)"
        raise BioimageioExportError(
            f"test input has shape {np.shape(x)}; engine {manifest.name!r} takes {takes}: "
            f"channels {manifest.inputs[0].channels}"
        )
    m = manifest.tile.multiple_px
    h, w = (min(s, max_px) // m * m for s in a.shape[1:])
    if min(h, w) < max(m, 16):
        raise BioimageioExportError(f"test input {a.shape[1:]} is too small (need >= {max(m, 16)} px)")
    return np.ascontiguousarray(a[:, :h, :w])


def _predict(bundle: Bundle, x: np.ndarray) -> dict[str, np.ndarray]:
    """The package's own prediction: processing + ONNX Runtime on the whole input."""
    import onnxruntime as ort

    proc = _Processing(bundle.manifest)
    xn, off, sc = proc.normalize(x)
    sess = ort.InferenceSession(bundle.onnx_bytes, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {bundle.manifest.inputs[0].name: xn[None].astype(np.float32)})
    names = [o.name for o in sess.get_outputs()]
    result = {}
    for name, y in zip(names, outs, strict=True):
        y = np.asarray(y, np.float32)
        if proc.denormalizes(name):
            y = y * np.float32(sc) + np.float32(off)
        post = bundle.manifest.output(name).postprocessing
        if post:
            y = Processor(post)(y[0])[None]
        result[name] = y
    return result


def _ident(name: str) -> str:
    """Channel names as bioimage.io identifiers (letters, digits, underscores)."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"c_{out}"


def _documentation(manifest: EngineManifest, notes: Sequence[str]) -> str:
    p = manifest.provenance
    metrics = "\n".join(f"| {k} | {v:.4g} |" for k, v in manifest.metrics.items())
    lines = [
        f"# {manifest.name}",
        "",
        f"A smartscope engine ({manifest.task}, method {p.method or 'n/a'}), exported from its "
        "verified engine bundle with `smartscope export --bioimageio`.",
        "",
        "## Training",
        "",
        "Trained with:",
        "",
        "```bash",
        p.command,
        "```",
        "",
        f"Data: {p.data}",
        "",
        f"Seed: {p.seed}; held-out fields of view: {', '.join(p.heldout_fovs) or 'n/a'}; "
        f"created {p.created_utc}.",
        "",
    ]
    if p.notes:
        lines += [f"Notes: {p.notes}", ""]
    lines += [
        "## Validation",
        "",
        "Held-out metrics measured at training time on fields of view the network never saw, "
        "with the exported ONNX graph (smartscope runs the same graph):",
        "",
    ]
    lines += ["| metric | value |", "|---|---|", metrics, ""] if metrics else ["(none recorded)", ""]
    if notes:
        lines += ["## Processing", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def _cover(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=100)
    for ax, img, title in ((axes[0], x[0], "input"), (axes[1], y[0], "output")):
        lo, hi = np.percentile(img, [1, 99.8])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _ops(bmz: Any, ops: Sequence[Any]) -> list[Any]:
    """engine.json operations as bioimage.io operation descriptions."""
    axis = bmz.AxisId("channel")

    def along(kind: str, **values: Any) -> Any:
        """The kwargs class of ``kind``, or its ``AlongAxis`` form when a value is a list."""
        if any(isinstance(v, list) for v in values.values()):
            values = {k: v if isinstance(v, list) else [v] for k, v in values.items()}
            return getattr(bmz, f"{kind}AlongAxisKwargs")(axis=axis, **values)
        return getattr(bmz, f"{kind}Kwargs")(**values)

    out: list[Any] = []
    for op in ops:
        if isinstance(op, ZeroMeanUnitVariance):
            kw = bmz.ZeroMeanUnitVarianceKwargs(axes=[bmz.AxisId(a) for a in op.axes], eps=op.eps)
            out.append(bmz.ZeroMeanUnitVarianceDescr(kwargs=kw))
        elif isinstance(op, FixedZeroMeanUnitVariance):
            kw = along("FixedZeroMeanUnitVariance", mean=op.mean, std=op.std)
            out.append(bmz.FixedZeroMeanUnitVarianceDescr(kwargs=kw))
        elif isinstance(op, ScaleRange):
            kw = bmz.ScaleRangeKwargs(
                axes=[bmz.AxisId(a) for a in op.axes],
                min_percentile=op.min_percentile,
                max_percentile=op.max_percentile,
                eps=op.eps,
            )
            out.append(bmz.ScaleRangeDescr(kwargs=kw))
        elif isinstance(op, ScaleLinear):
            out.append(bmz.ScaleLinearDescr(kwargs=along("ScaleLinear", gain=op.gain, offset=op.offset)))
        elif isinstance(op, Clip):
            out.append(bmz.ClipDescr(kwargs=bmz.ClipKwargs(min=op.min, max=op.max)))
        elif isinstance(op, Binarize):
            out.append(bmz.BinarizeDescr(kwargs=along("Binarize", threshold=op.threshold)))
        elif isinstance(op, Sigmoid):
            out.append(bmz.SigmoidDescr())
    return out


def _preprocessing(bmz: Any, man: EngineManifest, notes: list[str]) -> list[Any]:
    """engine.json's input normalization as bioimage.io operations (after a float32 cast)."""
    pre: list[Any] = [bmz.EnsureDtypeDescr(kwargs=bmz.EnsureDtypeKwargs(dtype="float32"))]
    if man.preprocessing is not None:
        notes.append("input: " + ", ".join(op.id for op in man.preprocessing))
        return [*pre, *_ops(bmz, man.preprocessing)]
    norm = man.normalization
    if norm.channel_offset_adu is not None and norm.channel_scale_adu is not None:
        kw: Any = bmz.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            mean=list(norm.channel_offset_adu), std=list(norm.channel_scale_adu), axis=bmz.AxisId("channel")
        )
        notes.append("input: fixed per-channel affine map (x - offset) / scale, from the training data")
        return [*pre, bmz.FixedZeroMeanUnitVarianceDescr(kwargs=kw)]
    if norm.kind == "affine":
        kw = bmz.FixedZeroMeanUnitVarianceKwargs(mean=norm.offset_adu, std=norm.scale_adu)
        notes.append(f"input: (x - {norm.offset_adu:g}) / {norm.scale_adu:g} (fixed, from the training data)")
        return [*pre, bmz.FixedZeroMeanUnitVarianceDescr(kwargs=kw)]
    kw = bmz.ScaleRangeKwargs(
        axes=[bmz.AxisId("channel"), bmz.AxisId("y"), bmz.AxisId("x")],
        min_percentile=norm.low_percentile,
        max_percentile=norm.high_percentile,
    )
    lo, hi = f"p{norm.low_percentile:g}", f"p{norm.high_percentile:g}"
    notes.append(f"input: per image, (x - {lo}) / ({hi} - {lo}) over all pixels")
    return [*pre, bmz.ScaleRangeDescr(kwargs=kw)]


def _postprocessing(
    bmz: Any, man: EngineManifest, spec: TensorSpec, notes: list[str]
) -> tuple[list[Any], str]:
    """(operations, description) of one output: back to camera units where the package can,
    then the output's own ``postprocessing``."""
    ops, desc = _denormalizing(bmz, man, spec, notes)
    if spec.postprocessing:
        ops = [*ops, *_ops(bmz, spec.postprocessing)]
        desc += " after " + ", ".join(op.id for op in spec.postprocessing)
    return ops, desc


def _denormalizing(
    bmz: Any, man: EngineManifest, spec: TensorSpec, notes: list[str]
) -> tuple[list[Any], str]:
    norm = man.normalization
    if _Processing(man).denormalizes(spec.name):
        kw = bmz.ScaleLinearKwargs(gain=norm.scale_adu, offset=norm.offset_adu)
        return [bmz.ScaleLinearDescr(kwargs=kw)], f"{spec.name} in camera units (ADU)"
    if spec.denormalize:
        notes.append(
            f"output {spec.name!r}: left in normalized units; smartscope maps it back with the "
            "input's percentiles, which no standard bioimage.io operation expresses"
        )
        return [], f"{spec.name} in normalized units (percentile-normalized input scale)"
    return [], f"{spec.name}: {', '.join(spec.channels)}"


def _axes(bmz: Any, channels: Sequence[str], man: EngineManifest, size_of: Any | None) -> list[Any]:
    """batch, channel, y, x; inputs (``size_of`` None) take ``min + n * multiple_px``,
    outputs the size of the input tensor ``size_of``; both carry the pixel size."""
    unit: dict[str, Any] = {}
    if man.pixel_size_um is not None:
        unit = {"unit": "micrometer", "scale": man.pixel_size_um}
    step = man.tile.multiple_px
    space: list[Any] = []
    for ax in ("y", "x"):
        if size_of is None:
            size: Any = bmz.ParameterizedSize(min=max(step, 16) // step * step, step=step)
            space.append(bmz.SpaceInputAxis(id=bmz.AxisId(ax), size=size, **unit))
        else:
            size = bmz.SizeReference(tensor_id=size_of, axis_id=bmz.AxisId(ax))
            space.append(bmz.SpaceOutputAxis(id=bmz.AxisId(ax), size=size, **unit))
    return [
        bmz.BatchAxis(),
        bmz.ChannelAxis(channel_names=[bmz.Identifier(_ident(c)) for c in channels]),
        *space,
    ]


def export_bioimageio(
    bundle_path: str | Path,
    out: str | Path,
    *,
    test_input: np.ndarray | str | Path,
    authors: Sequence[PackageAuthor | str] = (PackageAuthor("smartscope developers"),),
    license: str = "BSD-3-Clause",
    max_test_px: int = 128,
    test: bool = True,
) -> Path:
    """Write the bioimage.io package of a bundle to ``out`` (a ``.zip``, or a folder).

    ``test_input``: a held-out input field in camera units, (H, W) or (C, H, W), as an array
    or a ``.tif``/``.npy`` file; the package's test tensors are made from it.

    With ``test`` (default) the package is checked by ``bioimageio.core.test_model`` before
    it is kept; a failure raises :class:`BioimageioExportError` with the failed checks.
    """
    try:
        from bioimageio.spec import (
            ValidationContext,
            save_bioimageio_package,
            save_bioimageio_package_as_folder,
        )
        from bioimageio.spec.model import v0_5 as bmz
    except ImportError as exc:
        raise BioimageioExportError(
            "bioimage.io export needs the 'bioimageio' extra: pip install 'smartscope[bioimageio]'"
        ) from exc
    import tifffile

    bundle = load_bundle(bundle_path)
    man = bundle.manifest
    # no absolute path of the machine that trained it goes into the package
    prov_fields = man.provenance.model_dump()
    prov_fields["command"] = portable_command(man.provenance.command)
    man = man.model_copy(update={"provenance": man.provenance.model_validate(prov_fields)})
    if len(man.inputs) != 1:
        raise BioimageioExportError(f"{bundle_path}: only single-input engines can be exported")
    raw = _read_array(Path(test_input)) if isinstance(test_input, (str, Path)) else np.asarray(test_input)
    x = _fit_input(raw, man, max_test_px)
    outputs = _predict(bundle, x)
    in_spec, prov = man.inputs[0], man.provenance
    in_id = bmz.TensorId(in_spec.name.lower())
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="smartscope-bmz-") as tmp_dir:
        tmp = Path(tmp_dir)
        np.save(tmp / "test_input.npy", x[None])
        tifffile.imwrite(tmp / "sample_input.tif", x)
        inputs = [
            bmz.InputTensorDescr(
                id=in_id,
                description=f"camera frame(s) in ADU: {', '.join(in_spec.channels)}"[:128],
                axes=_axes(bmz, in_spec.channels, man, None),
                test_tensor=bmz.FileDescr(source=tmp / "test_input.npy"),
                sample_tensor=bmz.FileDescr(source=tmp / "sample_input.tif"),
                data=bmz.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=_preprocessing(bmz, man, notes),
            )
        ]
        out_descrs = []
        for spec in man.outputs:
            np.save(tmp / f"test_output_{spec.name}.npy", outputs[spec.name])
            tifffile.imwrite(tmp / f"sample_output_{spec.name}.tif", outputs[spec.name][0])
            post, desc = _postprocessing(bmz, man, spec, notes)
            out_descrs.append(
                bmz.OutputTensorDescr(
                    id=bmz.TensorId(spec.name.lower()),
                    description=desc[:128],
                    axes=_axes(bmz, spec.channels, man, in_id),
                    test_tensor=bmz.FileDescr(source=tmp / f"test_output_{spec.name}.npy"),
                    sample_tensor=bmz.FileDescr(source=tmp / f"sample_output_{spec.name}.tif"),
                    postprocessing=post,
                )
            )
        (tmp / "model.onnx").write_bytes(bundle.onnx_bytes)
        (tmp / "engine.json").write_text(man.model_dump_json(indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_documentation(man, notes), encoding="utf-8")
        cover = _cover(tmp / "cover.png", x, next(iter(outputs.values()))[0])
        method = _METHOD_CITES.get(prov.method.lower(), "")
        cites = [CITATIONS[k] for k in dict.fromkeys((method, "unet")) if k in CITATIONS]
        summary = f"smartscope {man.task} engine ({prov.method or 'U-Net'}); trained with: {prov.command}"
        tolerance = bmz.ReproducibilityTolerance(
            relative_tolerance=1e-4, absolute_tolerance=1e-4, mismatched_elements_per_million=0
        )
        # offline: GitHub user names are not looked up, every file is local
        with ValidationContext(perform_io_checks=False):
            descr = bmz.ModelDescr(
                name=man.name,
                description=summary[:1024],
                authors=_authors(bmz, authors),
                cite=[bmz.CiteEntry(text=t, doi=bmz.Doi(d)) for t, d in cites],
                license=license,  # type: ignore[arg-type]
                documentation=bmz.FileDescr(source=tmp / "README.md"),
                covers=[bmz.FileDescr(source=cover)],
                attachments=[bmz.FileDescr(source=tmp / "engine.json")],
                tags=["smartscope", man.task, *([prov.method] if prov.method else []), "2d", "onnx"],
                version=bmz.Version(man.version),
                inputs=inputs,
                outputs=out_descrs,
                weights=bmz.WeightsDescr(
                    onnx=bmz.OnnxWeightsDescr(source=tmp / "model.onnx", opset_version=man.opset or 17)
                ),
                config=bmz.Config(  # type: ignore[call-arg]  # extra sections are allowed
                    bioimageio=bmz.BioimageioConfig(reproducibility_tolerance=[tolerance]),
                    smartscope={
                        "engine": man.name,
                        "onnx_sha256": man.onnx_sha256,
                        "training_command": prov.command,
                        "training_data": prov.data,
                        "seed": prov.seed,
                        "heldout_fovs": list(prov.heldout_fovs),
                        "heldout_metrics": dict(man.metrics),
                    },
                ),
            )
            if test:  # bioimageio.core would look the GitHub users up online: tested without them
                anonymous = [bmz.Author(name=a.name) for a in descr.authors]
                _test(descr.model_copy(update={"authors": anonymous}))
            out_p = Path(out)
            if out_p.suffix == ".zip":
                out_p.parent.mkdir(parents=True, exist_ok=True)
                save_bioimageio_package(descr, output_path=out_p)
            else:
                save_bioimageio_package_as_folder(descr, output_path=out_p)
        return out_p


def _authors(bmz: Any, authors: Sequence[PackageAuthor | str]) -> list[Any]:
    """The package's authors (with their GitHub user where given)."""
    return [
        bmz.Author(name=a.name, github_user=a.github_user)
        if isinstance(a, PackageAuthor)
        else bmz.Author(name=a)
        for a in authors
    ]


def _test(descr: Any) -> None:
    """Run bioimageio.core's own test on the description; raise with what failed."""
    from bioimageio.core import test_model

    summary = test_model(descr)
    if summary.status != "passed":
        failed = [
            f"{d.name}: {'; '.join(e.msg for e in d.errors)}" for d in summary.details if d.status == "failed"
        ]
        raise BioimageioExportError("bioimageio test failed: " + " | ".join(failed or [summary.status]))
